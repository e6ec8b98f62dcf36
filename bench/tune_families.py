#!/usr/bin/env python
"""Tune the pruned families' kernels on the batch-32 VGG-16 / ResNet-18 layers: every tunable kernel family
of the registry that names a sweep point to tune on (`KernelFamily.bench_point`): today fused WSP-C
(gather_b) and unbalanced WSP-R (wsp_r_grouped).

    python bench/tune_families.py [--out results/tune-families-h100.jsonl] [--budget 1] [--jobs N]
    python bench/tune_families.py --layers vgg16.conv4_2,resnet18.layer4 --ratios 0.7 --limit 4
    python bench/tune_families.py --list                                # problems and candidates, no GPU
    python bench/tune_families.py --compile-only --arch sm90 --jobs 16  # warm the compile cache, no GPU

Problems: every unique prunable 3x3 layer shape of the networks (conv1_1, c = 3, is never pruned) at
p = 4, batch 32, each ratio, each family's bench point: WSP-C balanced (fused: one gather_b launch, K =
kept columns padded to 16 bytes, B = K of the c rows of X_i) and WSP-R unbalanced (grouped: one
ptr-array launch, group i has M_i kept rows). The points are the sweep's and their problems come from the
serving family's plan (He-initialised Winograd weights, seed 0: the sweep's Workload), so the
tuning-cache keys are the ones `cutlass-wsp sweep` looks up. By default 12 shapes x 3 ratios x 2
families = 72 problems.

All candidates of all problems are compiled once, in parallel, before anything is timed. Per problem
(kernels/search.py, each kernel family's measurement): every candidate verified against fp32 cuBLAS on
fresh data before it is timed with an L2 flush between repetitions, `--budget` seconds of timing per
problem; the winner goes into the tuning cache beside the compile cache (unless --no-record). Floors
(the serving family's cost model with the true tile count T) use this GPU's measured copy bandwidth and
GEMM rate.

Prints a table (default us, best us, speedup over the default, % of the roofline floor before and
after) and writes JSON lines to --out: a header (provenance, ceilings), one row per problem, a summary.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cutlass_wsp.commands._tuning import positive as _positive
from cutlass_wsp.errors import InputError, WspError
from cutlass_wsp.problem import BatchProblem

DEFAULT_OUT = "results/tune-families-h100.jsonl"
SEED = 0                      # the sweep's Measurer seed: same weights, same pruning, same keys


def bench_families() -> dict[str, tuple[str, str, str]]:
    """{kernel family: (pattern, impl, balance) of the sweep point it is tuned on}, from the registry."""
    from cutlass_wsp.families.registry import tunable

    return {name: k.bench_point for name, k in tunable().items() if k.bench_point is not None}


FAMILIES = tuple(bench_families())
_WORKLOAD: list = []          # one sweep Workload (seeded weights and pruning) for the whole run


def workload():
    from cutlass_wsp.sweep.measure import Workload

    if not _WORKLOAD:
        _WORKLOAD.append(Workload(SEED))
    return _WORKLOAD[0]


@dataclass(frozen=True)
class Case:
    """One problem to tune: a layer shape under one family at one ratio."""

    family: str
    label: str                 # first layer of the shape, e.g. 'vgg16.conv3_2 (+1)'
    net: str
    c: int
    n: int
    H: int
    p: int
    batch: int
    ratio: float
    balance: str
    T: int                     # true tile count: the N of the floor
    problem: Any               # GatherTuneProblem | GroupedTuneProblem: what the kernel runs
    kept: tuple[int, ...]      # kept columns (WSP-C) or rows (WSP-R) per position
    point: Any = None          # the sweep point (sweep.plan.Point) whose launch this is


# ---------------------------------------------------------------------------------------- problems
def layer_shapes(nets: list[str], layers: list[str] | None = None) -> list[tuple[str, list]]:
    """(label, layers) per unique prunable Winograd shape; `layers` keeps shapes one of whose layer
    names contains one of the given strings."""
    from cutlass_wsp.layers import network, unique_shapes

    out = []
    for (_, same) in unique_shapes([l for net in nets for l in network(net) if l.prunable]).items():
        if layers and not any(s in l.name for s in layers for l in same):
            continue
        out.append((same[0].name + (f" (+{len(same) - 1})" if len(same) > 1 else ""), same))
    if layers and not out:
        raise InputError(f"no prunable layer of {', '.join(nets)} matches {', '.join(layers)}",
                         "give layer names (or parts of them) such as vgg16.conv4_2 or resnet18.layer4")
    return out


def cases(nets: list[str], ratios: list[float], families: list[str], *, batch: int = 32, p: int = 4,
          dtype: str = "fp16", arch: str = "sm90", layers: list[str] | None = None,
          limit: int | None = None) -> list[Case]:
    """Problems in order shape, ratio, family (so a --limit keeps both families), at most `limit`: each
    family's bench point on the shape, its problem from the serving family's plan."""
    from cutlass_wsp.layers import layer_problem
    from cutlass_wsp.sweep.measure import plan
    from cutlass_wsp.sweep.plan import Point

    points = bench_families()
    out: list[Case] = []
    for label, same in layer_shapes(nets, layers):
        lay = same[0]
        T = layer_problem(lay, batch, p).N
        for ratio in ratios:
            for family in families:
                if limit is not None and len(out) >= limit:
                    return out
                pattern, impl, balance = points[family]
                pt = Point(lay.net, tuple(x.name for x in same), lay.c, lay.n, lay.H, lay.W, batch, p, dtype,
                           pattern, impl, ratio, balance)
                found = plan(pt, workload(), arch)
                assert found is not None and found.kernel == family, (found, family)
                kept = tuple(int(k) for k in workload().pruned(pt).kept_per_position)
                out.append(Case(family, label, lay.net, lay.c, lay.n, lay.H, p, batch, ratio, balance, T,
                                found.problem, kept, pt))
    return out


def requests(all_cases: list[Case], dtype: str) -> dict[tuple[str, str], list]:
    """{(family, dtype): unique problems}, for search.tune_by_family."""
    out: dict[tuple[str, str], dict] = {}
    for c in all_cases:
        out.setdefault((c.family, dtype), {})[c.problem] = None
    return {k: list(v) for k, v in out.items()}


# ------------------------------------------------------------------------------------------- rows
def floor_ms(case: Case, dtype: str, ceil) -> float:
    """The pattern's roofline floor on this GPU (what an ideal kernel for it needs), true T: the serving
    family's cost model."""
    from cutlass_wsp.families.base import PointContext
    from cutlass_wsp.families.registry import serving

    pt = case.point
    cost = serving(pt.pattern, pt.impl).cost(PointContext(pt, arch="sm90", workload=workload()))
    return cost.floor_ms(ceil.gemm_flops, ceil.copy_bw_Bps)


def short_config(desc) -> str:
    """'128x128x32 w64x64 s6 sw4' (gather_b, sm80) or '64x128x64 pp c2x1' (grouped, sm90)."""
    parts = ["x".join(map(str, desc.tile))]
    if desc.arch == "sm90":
        ks = desc.resolved().kernel_schedule
        parts.append({"tma_ws_cooperative": "coop", "tma_ws_pingpong": "pp"}.get(ks, ks))
        if desc.cluster != (1, 1, 1):
            parts.append(f"c{desc.cluster[0]}x{desc.cluster[1]}")
    else:
        wm, wn, _ = desc.warp_shape()
        parts.append(f"w{wm}x{wn}")
        if desc.swizzle != 1:
            parts.append(f"sw{desc.swizzle}")
    if desc.stages:
        parts.append(f"s{desc.stages}")
    return " ".join(parts)


def _pct(floor: float, ms: float | None) -> float | None:
    return 100.0 * floor / ms if ms else None


def case_row(case: Case, result, dtype: str, arch: str, ceil) -> dict[str, Any]:
    """One JSON row: the problem, its floor, the default's and the winner's times, every trial."""
    floor = floor_ms(case, dtype, ceil)
    pr = case.problem
    row: dict[str, Any] = {
        "kind": "problem", "family": case.family, "label": case.label, "net": case.net, "c": case.c,
        "n": case.n, "H": case.H, "p": case.p, "batch": case.batch, "ratio": case.ratio,
        "balance": case.balance, "dtype": dtype, "arch": arch, "L": pr.L, "M": pr.M, "N": pr.N, "K": pr.K,
        "T": case.T, "kept": list(case.kept), "floor_ms": floor, "key": result.key,
        "default_kernel": result.default.name, "default_config": short_config(result.default),
        "default_ms": result.default_ms, "best_kernel": result.best.name if result.best else None,
        "best_config": short_config(result.chosen), "best_desc": result.chosen.as_dict(),
        "best_ms": result.best_ms, "speedup_vs_default": result.speedup_vs_default,
        "default_pct_of_floor": _pct(floor, result.default_ms), "best_pct_of_floor": _pct(floor, result.best_ms),
        "tuned": result.best is not None, "recorded": result.recorded,
        "candidates": len({t.desc for t in result.trials}),
        "verified": len({t.desc for t in result.trials if t.ok}),
        "trials": [t.to_dict() for t in result.trials],
        "status": "ok" if result.best is not None else "error",
        "reason": None if result.best is not None else "no candidate verified",
    }
    if hasattr(pr, "c"):
        row["c_rows"] = pr.c
    if hasattr(pr, "Ms"):
        row["Ms"] = list(pr.Ms)
    return row


def _geomean(xs: list[float]) -> float | None:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def summarize(rows: list[dict]) -> dict[str, Any]:
    """Per family: problems, how many tuned, geomean speedup over the default, median % of floor
    before and after, and the problem furthest from its floor."""
    out: dict[str, Any] = {"kind": "summary", "problems": len(rows), "families": {}}
    for family in dict.fromkeys(r["family"] for r in rows):
        rs = [r for r in rows if r["family"] == family]
        ok = [r for r in rs if r["status"] == "ok" and r["speedup_vs_default"]]
        worst = min(ok, key=lambda r: r["best_pct_of_floor"], default=None)
        out["families"][family] = {
            "problems": len(rs), "tuned": len(ok),
            "geomean_speedup_vs_default": _geomean([r["speedup_vs_default"] for r in ok]),
            "max_speedup_vs_default": max((r["speedup_vs_default"] for r in ok), default=None),
            "median_default_pct_of_floor": statistics.median([r["default_pct_of_floor"] for r in ok]) if ok else None,
            "median_best_pct_of_floor": statistics.median([r["best_pct_of_floor"] for r in ok]) if ok else None,
            "lowest_best_pct_of_floor": (f"{worst['label']} r={worst['ratio']} ({worst['best_pct_of_floor']:.0f}%)"
                                         if worst else None),
            "default_kept": sum(1 for r in ok if r["best_kernel"] == r["default_kernel"]),
        }
    return out


TABLE_HEAD = (f"{'family':13s} {'layer':24s} {'ratio':>5s} {'shape':16s} {'floor us':>8s} {'default us':>10s} "
              f"{'best us':>8s} {'speedup':>7s} {'%floor':>11s}  best config")


def table_line(row: dict) -> str:
    def us(ms):
        return f"{ms * 1e3:.1f}" if ms else "-"

    shape = f"M_i={min(row['Ms'])}..{row['M']}" if "Ms" in row else f"M={row['M']} K={row['K']}"
    pct = "-"
    if row["default_pct_of_floor"] and row["best_pct_of_floor"]:
        pct = f"{row['default_pct_of_floor']:.0f}->{row['best_pct_of_floor']:.0f}%"
    sp = f"{row['speedup_vs_default']:.2f}x" if row["speedup_vs_default"] else "-"
    return (f"{row['family']:13s} {row['label'][:24]:24s} {row['ratio']:5.2f} {shape:16s} {us(row['floor_ms']):>8s} "
            f"{us(row['default_ms']):>10s} {us(row['best_ms']):>8s} {sp:>7s} {pct:>11s}  {row['best_config']}")


# ------------------------------------------------------------------------------------------ modes
def candidate_sets(all_cases: list[Case], dtype: str, arch: str, sm_count: int) -> tuple[list, list]:
    """(per-case candidate lists, union of all of them in first-seen order)."""
    from cutlass_wsp.families.registry import candidates

    sets = [candidates(c.problem, dtype, arch, family=c.family, sm_count=sm_count) for c in all_cases]
    return sets, list(dict.fromkeys(d for s in sets for d in s))


def list_mode(all_cases: list[Case], dtype: str, arch: str, sm_count: int, budget: float) -> int:
    sets, union = candidate_sets(all_cases, dtype, arch, sm_count)
    for c, descs in zip(all_cases, sets):
        print(f"{c.family:13s} {c.label:24s} r={c.ratio:g} {c.problem}: {len(descs)} candidates")
        for d in descs:
            print(f"    {d.name}")
    unique = sum(len(v) for v in requests(all_cases, dtype).values())
    print(f"{len(all_cases)} problems ({unique} distinct), {len(union)} distinct kernels; "
          f"about {unique * budget:.0f} s of timing at --budget {budget:g}")
    return 0


def compile_only(all_cases: list[Case], dtype: str, arch: str, sm_count: int, cache, jobs) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))   # the sibling script's build-and-report
    from tune_dense import compile_union

    _, union = candidate_sets(all_cases, dtype, arch, sm_count)
    return compile_union(union, f"{len(all_cases)} problems", cache, jobs)


def progress(verbose: bool):
    """Tuning messages to stderr: every trial with -v, else the build and its failures only."""
    def say(msg: str) -> None:
        if verbose or msg.startswith(("compiling", "  compile failed")):
            print(msg, file=sys.stderr, flush=True)
    return say


def measure_mode(args, cache) -> int:
    from cutlass_wsp.gpu.ceilings import measure_ceilings
    from cutlass_wsp.gpu.device import compute_capability, require_gpu
    from cutlass_wsp.gpu.info import provenance
    from cutlass_wsp.kernels.manifest import arch_for_device
    from cutlass_wsp.families.registry import tunable
    from cutlass_wsp.kernels.search import tune_by_family
    from cutlass_wsp.sweep.results import row_provenance

    require_gpu()
    arch = args.arch or arch_for_device(compute_capability())
    all_cases = build_cases(args, arch)
    prov = provenance()
    ceil = measure_ceilings(args.dtype)
    print(f"{prov.get('gpu_name')}: copy {ceil.copy_bw_Bps / 1e12:.2f} TB/s, {args.dtype} GEMM "
          f"{ceil.gemm_flops / 1e12:.0f} TFLOP/s; {len(all_cases)} problems", flush=True)
    t0 = time.perf_counter()
    found = tune_by_family(requests(all_cases, args.dtype), arch, families=tunable(), cache=cache,
                           budget_s=args.budget, jobs=args.jobs, record=not args.no_record,
                           progress=progress(args.verbose))
    by_problem = {(fam, r.problem): r for (fam, _), results in found.items() for r in results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    with open(out, "w") as f:
        f.write(json.dumps({"kind": "header", "schema": "cutlass-wsp/tune-families", "version": 1,
                            "created": prov.get("timestamp_utc"), "provenance": prov,
                            "ceilings": ceil.to_dict(), "dtype": args.dtype, "arch": arch,
                            "budget_s": args.budget, "nets": args.nets, "ratios": args.ratios,
                            "batch": args.batch, "p": args.p}) + "\n")
        print(TABLE_HEAD)
        for case in all_cases:
            row = case_row(case, by_problem[(case.family, case.problem)], args.dtype, arch, ceil)
            row.update(row_provenance(prov))
            rows.append(row)
            f.write(json.dumps(row) + "\n")
            print(table_line(row), flush=True)
        summary = summarize(rows)
        summary["wall_s"] = time.perf_counter() - t0
        f.write(json.dumps(summary) + "\n")
    for family, s in summary["families"].items():
        if s["tuned"]:
            print(f"{family}: {s['tuned']}/{s['problems']} tuned, geomean {s['geomean_speedup_vs_default']:.3f}x the "
                  f"default (max {s['max_speedup_vs_default']:.2f}x), median % of floor "
                  f"{s['median_default_pct_of_floor']:.0f} -> {s['median_best_pct_of_floor']:.0f}, "
                  f"default kept on {s['default_kept']}")
    print(f"wrote {out}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def build_cases(args, arch: str) -> list[Case]:
    return cases(args.nets, args.ratios, args.families, batch=args.batch, p=args.p, dtype=args.dtype, arch=arch,
                 layers=args.layers, limit=args.limit)


def _csv(kind):
    def parse(text: str) -> list:
        try:
            items = [kind(t.strip()) for t in text.split(",") if t.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {kind.__name__}") from None
        if not items:
            raise argparse.ArgumentTypeError("give at least one item")
        return items
    return parse


def _families(text: str) -> list[str]:
    items = _csv(str)(text)
    bad = [f for f in items if f not in FAMILIES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown family {', '.join(bad)} (use {', '.join(FAMILIES)})")
    return items


def _ratios(text: str) -> list[float]:
    items = _csv(float)(text)
    if any(not 0 < r < 1 for r in items):
        raise argparse.ArgumentTypeError(f"ratios {text!r} must lie in (0, 1)")
    return items


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", default="fp16", choices=("fp16", "bf16", "tf32"))
    ap.add_argument("--arch", default=None, choices=("sm90", "sm80"),
                    help="kernel arch (default: the GPU's; sm90 for --list/--compile-only)")
    ap.add_argument("--nets", type=_csv(str), default=["vgg16", "resnet18"], help="networks (default vgg16,resnet18)")
    ap.add_argument("--layers", type=_csv(str), default=None,
                    help="only shapes with a layer whose name contains one of these, e.g. vgg16.conv4_2,resnet18.layer4")
    ap.add_argument("--families", type=_families, default=list(FAMILIES),
                    help=f"families to tune (default {','.join(FAMILIES)})")
    ap.add_argument("--ratios", type=_ratios, default=[0.5, 0.7, 0.9], help="pruning ratios (default 0.5,0.7,0.9)")
    ap.add_argument("--batch", type=_positive(int), default=32)
    ap.add_argument("--p", type=int, default=4, choices=(4, 6, 8), help="Winograd tile size (default 4)")
    ap.add_argument("--limit", type=_positive(int), default=None,
                    help="tune at most this many problems (in order shape, ratio, family)")
    ap.add_argument("--budget", type=_positive(float), default=1.0,
                    help="seconds of timing per problem, shared by its candidates (default 1)")
    ap.add_argument("--jobs", type=_positive(int), default=None, help="parallel nvcc builds (default: CPU count)")
    ap.add_argument("--sm-count", type=_positive(int), default=None,
                    help="SMs the candidate sets assume for --list/--compile-only (default 132: H100/H200)")
    ap.add_argument("--cache", default=None, help="compile cache root (default $CUTLASS_WSP_CACHE or ~/.cache)")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--no-record", action="store_true", help="do not write winners to the tuning cache")
    ap.add_argument("--compile-only", action="store_true", help="only compile the candidate union (no GPU)")
    ap.add_argument("--list", action="store_true", help="only list problems and candidates (no GPU, no nvcc)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every trial to stderr")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    from cutlass_wsp.kernels.cache import KernelCache
    from cutlass_wsp.kernels.candidates import DEFAULT_SM_COUNT

    try:
        if args.list or args.compile_only:
            arch, sm = args.arch or "sm90", args.sm_count or DEFAULT_SM_COUNT
            all_cases = build_cases(args, arch)
            if args.list:
                return list_mode(all_cases, args.dtype, arch, sm, args.budget)
            return compile_only(all_cases, args.dtype, arch, sm, KernelCache(args.cache), args.jobs)
        return measure_mode(args, KernelCache(args.cache))
    except WspError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
