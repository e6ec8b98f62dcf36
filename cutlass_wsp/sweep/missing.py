"""What a results file lacks for a question, said in one line with the `cutlass-wsp sweep` that measures it.

`abwsp` and `network` list the points they need (`Need`: a layer shape under a pattern, ratio and
balance); those the file has no row for become one InputError: the problem names what is missing, the
fix is a sweep command over exactly those layers, patterns, ratios and balances, onto the same file (a
sweep skips the points a file already has, so it measures only what is missing).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cutlass_wsp.errors import InputError
from cutlass_wsp.layers import Layer



class MissingResults(InputError):
    """The results lack points a question needs (the fix is the sweep that measures them)."""


@dataclass(frozen=True)
class Need:
    """A point a question needs: `layer`'s shape under one of `patterns` (alternatives: one pruning,
    several implementations, e.g. wsp-c and wsp-c-fused), at `ratio` and `balance`, implemented by
    `impl` when one is required (e.g. 'fused')."""

    layer: Layer
    patterns: tuple[str, ...]
    ratio: float | None = None
    balance: str | None = None
    impl: str | None = None

    @property
    def what(self) -> str:
        """'wsp-c/wsp-c-fused unbalanced r0.7', 'dense', 'wsp-rb (fused) r0.7'."""
        parts = ["/".join(self.patterns) + (f" ({self.impl})" if self.impl else "")]
        if self.balance:
            parts.append(self.balance)
        if self.ratio is not None:
            parts.append(f"r{self.ratio:g}")
        return " ".join(parts)


def shape_text(layer: Layer) -> str:
    return f"{layer.c}→{layer.n}@{layer.H}" + ("" if layer.H == layer.W else f"x{layer.W}")


def _short(layer: Layer) -> str:
    return layer.name.removeprefix(f"{layer.net}.")


def _net_option(net_spec: str, layers: Sequence[Layer], table: Sequence[Layer]) -> str:
    """`--net` for the sweep: the whole spec when every prunable shape of `table` is wanted, else a
    selection of one layer per wanted shape ('vgg16:conv1_2,conv4_1')."""
    wanted = list(dict.fromkeys(x.shape for x in layers))
    if set(wanted) >= {x.shape for x in table if x.prunable}:
        return net_spec
    base = net_spec
    if ":" in net_spec and not Path(net_spec).is_file():
        base = net_spec.rpartition(":")[0]
    firsts = [next(x for x in layers if x.shape == s) for s in wanted]
    return f"{base}:{','.join(_short(x) for x in firsts)}"


def sweep_command(net_spec: str, needs: Sequence[Need], table: Sequence[Layer], *, batch: int, p: int | None,
                  dtype: str, out: str | Path) -> str:
    """The `cutlass-wsp sweep` that measures every point of `needs` (and skips those `out` has)."""
    patterns = list(dict.fromkeys(pat for nd in needs for pat in nd.patterns))
    ratios = sorted({nd.ratio for nd in needs if nd.ratio is not None})
    balances = [b for b in ("balanced", "unbalanced") if any(nd.balance == b for nd in needs)]
    argv = ["cutlass-wsp", "sweep", "--net", _net_option(net_spec, [nd.layer for nd in needs], table),
            "--batch", str(batch)]
    if p is not None:
        argv += ["--tile", str(p)]
    argv += ["--dtype", dtype, "--pattern", ",".join(patterns)]
    if ratios:
        argv += ["--ratio", ",".join(f"{r:g}" for r in ratios)]
    if balances and any(_has_balance_axis(pat) for pat in patterns):
        argv += ["--balance", ",".join(balances)]
    for pat in patterns:
        impls = sorted({nd.impl for nd in needs if nd.impl and pat in nd.patterns})
        if impls:
            argv += ["--impl", f"{pat}={','.join(impls)}"]
    argv += ["--out", str(out)]
    return " ".join(shlex.quote(a) for a in argv)


def _has_balance_axis(pattern: str) -> bool:
    from cutlass_wsp.sweep.plan import PATTERNS

    info = PATTERNS.get(pattern)
    return bool(info and info.uses_balance)


def _summary(needs: Sequence[Need], limit: int = 3) -> str:
    """'wsp-r balanced r0.6, wsp-c/wsp-c-fused unbalanced r0.6 for 8 layer shapes (a, b, c, +5 more); dense
    for 1 layer shape (d)': what is missing, grouped by the layer shapes that miss it."""
    groups: dict[str, list[Layer]] = {}
    for nd in needs:
        shapes = groups.setdefault(nd.what, [])
        if all(x.shape != nd.layer.shape for x in shapes):
            shapes.append(nd.layer)
    by_layers: dict[tuple, list[str]] = {}
    for what, layers in groups.items():
        by_layers.setdefault(tuple(x.shape for x in layers), []).append(what)
    parts = []
    for shapes, whats in by_layers.items():
        layers = groups[whats[0]]
        named = ", ".join(f"{x.name} {shape_text(x)}" for x in layers[:limit])
        more = f", +{len(layers) - limit} more" if len(layers) > limit else ""
        parts.append(f"{', '.join(whats)} for {len(layers)} layer shape{'s' * (len(layers) != 1)} ({named}{more})")
    return "; ".join(parts)


def missing_error(source: str, net_spec: str, needs: Sequence[Need], table: Sequence[Layer], *, batch: int,
                  p: int | None, dtype: str, out: str | Path, what: str = "") -> InputError:
    """One line: what `source` lacks (by pattern, ratio and balance, with the layers) and the sweep that
    measures it onto `out`."""
    where = f"batch {batch}" + (f", p{p}" if p is not None else "") + f", {dtype}"
    purpose = f" {what}" if what else ""
    cmd = sweep_command(net_spec, needs, table, batch=batch, p=p, dtype=dtype, out=out)
    return MissingResults(f"{source} lacks what{purpose} needs ({where}): {_summary(needs)}",
                          f"measure it: {cmd}")


def layer_time_error(source: str, net_spec: str, needs: Sequence[Need], table: Sequence[Layer], *, batch: int,
                     p: int | None, dtype: str, out: str | Path, what: str = "") -> InputError:
    """One line: `source` has these points but without whole-layer times (swept with --no-layer-time);
    a resumed sweep would skip them, so the fix writes a new file to pass beside the old one."""
    where = f"batch {batch}" + (f", p{p}" if p is not None else "") + f", {dtype}"
    out = Path(out)
    new = out.with_name(f"{out.stem}-layer-time{out.suffix or '.jsonl'}")
    cmd = sweep_command(net_spec, needs, table, batch=batch, p=p, dtype=dtype, out=new)
    purpose = f" {what}" if what else ""
    return MissingResults(f"{source} has no whole-layer time{purpose} needs ({where}; swept with --no-layer-time?): "
                          f"{_summary(needs)}", f"measure them into a new file and pass both files: {cmd}")
