"""Options that declare a sweep (`cutlass-wsp sweep`): argparse in, a validated `SweepSpec` out.

The sweep's data model (SweepSpec, Point, PATTERNS, validate, expand) is cutlass_wsp/sweep/plan.py;
this module only turns command-line text into it. `from_args(argv)` does both steps for scripts and
tests.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from cutlass_wsp.commands.values import parse_ratios
from cutlass_wsp.dtypes import DTYPES
from cutlass_wsp.errors import InputError
from cutlass_wsp.sweep.plan import IMPLEMENTATIONS, PATTERNS, SweepSpec, default_spec, validate


def _fmt(x: float) -> str:
    return format(x, "g")


def _unknown(axis: str, value, accepted) -> InputError:
    return InputError(f"axis {axis!r}: unknown value {value!r}",
                      f"accepted values: {', '.join(str(a) for a in accepted)}")



def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that declare a sweep; each left out takes its value from default_spec()."""
    d = default_spec()
    g = parser.add_argument_group("sweep axes (comma lists; defaults: the README's main sweep)")
    g.add_argument("--net", action="append", metavar="SPEC",
                   help=f"networks, layer selections or layer files (default {','.join(d.layers)}); "
                        "e.g. vgg16,resnet18:layer4.0.conv2 or my_layers.csv; repeatable")
    g.add_argument("--batch", metavar="B,...", help=f"batch sizes (default {_join(d.batches)})")
    g.add_argument("--tile", metavar="P,...", help=f"Winograd input tile sizes p (default {_join(d.tiles)})")
    g.add_argument("--dtype", metavar="D,...", help=f"{', '.join(DTYPES)} (default {_join(d.dtypes)})")
    g.add_argument("--pattern", metavar="P,...",
                   help=f"{', '.join(PATTERNS)} (default {_join(d.patterns)})")
    g.add_argument("--ratio", metavar="R,...",
                   help=f"fractions pruned, 0.7 or 70%% (default {_join(d.ratios)})")
    g.add_argument("--balance", metavar="B,...",
                   help=f"balanced, unbalanced, spread:S (default {_join(d.balances)})")
    g.add_argument("--impl", action="append", metavar="[PATTERN=]IMPL,...",
                   help="implementations for one pattern (wsp-r=cutlass,cutlass-grouped) or, without "
                        f"PATTERN=, a filter for every pattern; repeatable. Known: {', '.join(IMPLEMENTATIONS)}")
    g.add_argument("--no-dedupe", action="store_true",
                   help="measure every layer, also those with the shape of an earlier layer of the network")
    g.add_argument("--layer-time", action=argparse.BooleanOptionalAction, default=None,
                   help="Winograd points also time the whole layer: input transform + GEMM batch + output "
                        "transform as one CUDA graph (default on; --no-layer-time times the GEMM batch only)")
    parser.add_argument("--retry-failed", action="store_true",
                        help="when resuming, measure again the points whose last row is error or oom")


def _join(values: Sequence) -> str:
    return ",".join(_fmt(v) if isinstance(v, float) else str(v) for v in values)


def _split(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _ints(text: str, axis: str) -> tuple[int, ...]:
    out = []
    for s in _split(text):
        try:
            out.append(int(s))
        except ValueError:
            raise InputError(f"axis {axis!r}: {s!r} is not an integer", f"give a comma list of integers for {axis}") \
                from None
    return tuple(out)


def _layer_specs(values: list[str]) -> tuple[str, ...]:
    """Split --net values on commas, keeping a selection's own commas: in 'vgg16:conv4_2,conv5_1,resnet18'
    conv5_1 continues the vgg16 selection and resnet18 (a network) starts a new spec."""
    from pathlib import Path

    from cutlass_wsp.layers import NETWORKS

    def starts_spec(tok: str) -> bool:
        norm = tok.lower().replace("-", "").replace("_", "")
        return ":" in tok or norm in NETWORKS or Path(tok).suffix.lower() in (".csv", ".json", ".yaml", ".yml")

    specs: list[str] = []
    for value in values:
        current: str | None = None
        for tok in _split(value):
            if current is not None and ":" in current and not starts_spec(tok):
                current += "," + tok
                specs[-1] = current
            else:
                current = tok
                specs.append(tok)
    return tuple(specs)


def _impls(values: list[str], patterns: Sequence[str]) -> dict[str, tuple[str, ...]]:
    chosen: dict[str, tuple[str, ...]] = {}
    filters: list[str] = []
    for value in values:
        pat, sep, rest = value.partition("=")
        if sep:
            pat = pat.strip()
            if pat not in PATTERNS:
                raise _unknown("implementations", pat, PATTERNS)
            chosen[pat] = tuple(_split(rest))
        else:
            filters.extend(_split(value))
    for impl in filters:
        if impl not in IMPLEMENTATIONS:
            raise _unknown("implementations", impl, IMPLEMENTATIONS)
    if filters:
        for pat in patterns:
            if pat in chosen or pat not in PATTERNS:
                continue
            chosen[pat] = tuple(i for i in filters if i in PATTERNS[pat].implementations)
            if not chosen[pat]:
                raise InputError(f"--impl {','.join(filters)} leaves pattern {pat!r} with no implementation",
                                 f"add one of {', '.join(PATTERNS[pat].implementations)} or "
                                 f"name it per pattern: --impl {pat}=IMPL")
    return chosen


def spec_from_args(args: argparse.Namespace) -> SweepSpec:
    """A SweepSpec from the options of add_sweep_arguments(); validated."""
    d = default_spec()
    patterns = tuple(_split(args.pattern)) if args.pattern is not None else d.patterns
    spec = SweepSpec(
        layers=_layer_specs(args.net) if args.net else d.layers,
        batches=_ints(args.batch, "batches") if args.batch is not None else d.batches,
        tiles=_ints(args.tile, "tiles") if args.tile is not None else d.tiles,
        dtypes=tuple(_split(args.dtype)) if args.dtype is not None else d.dtypes,
        patterns=patterns,
        ratios=parse_ratios(args.ratio, "--ratio") if args.ratio is not None else d.ratios,
        balances=tuple(_split(args.balance)) if args.balance is not None else d.balances,
        implementations=_impls(args.impl or [], patterns),
        dedupe_shapes=not getattr(args, "no_dedupe", False),
        layer_time=d.layer_time if getattr(args, "layer_time", None) is None else bool(args.layer_time),
    )
    return validate(spec)


def from_args(argv: Sequence[str]) -> SweepSpec:
    """A SweepSpec from a list of sweep options, e.g. ['--net', 'vgg16', '--ratio', '0.7']."""
    parser = argparse.ArgumentParser(add_help=False)
    add_sweep_arguments(parser)
    return spec_from_args(parser.parse_args(list(argv)))
