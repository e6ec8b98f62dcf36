#!/usr/bin/env python
"""Tune the dense CUTLASS kernels for the 24 batch-32 VGG-16 / ResNet-18 shapes and compare with cuBLAS.

    python bench/tune_dense.py [--out results/tune-dense.jsonl] [--dtype fp16] [--budget 4] [--jobs N]
    python bench/tune_dense.py --list                               # shapes and candidate sets, no GPU
    python bench/tune_dense.py --compile-only --arch sm90 --jobs 1  # warm the compile cache, no GPU

Shapes: the unique 3x3 stride-1 layers of VGG-16 and ResNet-18 (conv1_1, c = 3, is never pruned and is
left out) at p = 4 and 6, batch 32. Per shape: tune (kernels/search.py with the dense kernel family's full
menu: every candidate verified against fp32 cuBLAS before it is timed; the winner goes into the tuning
cache beside the compile cache), then time the chosen kernel and cuBLAS (cublasGemmStridedBatchedEx
called directly) alternately on the same fresh operands, both verified first (gpu/harness.py), with an
L2 flush between repetitions. Floors use this GPU's
measured copy bandwidth and GEMM rate (gpu/ceilings.py) and the true tile count T.

Prints a table and writes JSON lines to --out: a header (provenance, ceilings), one row per shape, and
a summary (geomean speed ratio vs cuBLAS, the slowest shape, shapes with a floor >= 50 us under 85 %
of it) with the issue's targets: geomean >= 1.05x, no shape under 0.95x, >= 85 % of the floor.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cutlass_wsp.errors import WspError
from cutlass_wsp.problem import BatchProblem

TARGET_GEOMEAN = 1.05
TARGET_MIN_RATIO = 0.95
TARGET_PCT_FLOOR = 85.0
FLOOR_GATE_MS = 0.050          # the % of floor target applies to shapes whose floor is at least this


@dataclass(frozen=True)
class Shape:
    label: str                 # first layer of the shape, e.g. 'vgg16.conv3_2' (+ how many share it)
    net: str
    c: int
    n: int
    H: int
    p: int
    batch: int
    T: int                     # true tile count: the N of the floor
    problem: BatchProblem      # what the kernel runs: N = Npad, K padded to 16 bytes


def shapes(nets: list[str], tiles: list[int], batch: int, dtype: str) -> list[Shape]:
    from cutlass_wsp.dtypes import get_dtype
    from cutlass_wsp.layers import layer_problem, network, unique_shapes
    from cutlass_wsp.problem import round_up

    layers = [l for net in nets for l in network(net) if l.prunable]
    align = get_dtype(dtype).alignment
    out = []
    for p in tiles:
        for (c, n, H, _), same in unique_shapes(layers).items():
            pr = layer_problem(same[0], batch, p)
            label = same[0].name + (f" (+{len(same) - 1})" if len(same) > 1 else "")
            out.append(Shape(label, same[0].net, c, n, H, p, batch, pr.N,
                             BatchProblem(pr.L, pr.M, round_up(pr.N, align), round_up(pr.K, align))))
    return out


# ---------------------------------------------------------------------------------- comparison
def verified_launches(shape: Shape, desc, dtype: str, cache):
    """(ours, cublas, errors): launch-only callables for our kernel `desc` and cuBLAS on the same fresh
    operands (pad columns of X zero), each already checked on a poisoned output against fp32 cuBLAS."""
    from cutlass_wsp.families.dense import DenseBatch
    from cutlass_wsp.gpu import arrays
    from cutlass_wsp.gpu.baselines import CublasBatched
    from cutlass_wsp.gpu.harness import Check, verify
    from cutlass_wsp.kernels.library import get_kernel

    pr, T = shape.problem, shape.T
    W = arrays.random((pr.L, pr.M, pr.K), dtype)
    X = arrays.padded_x(pr.L, pr.K, T, dtype)
    if X.shape[2] != pr.N:
        raise WspError(f"padded X has {X.shape[2]} columns, the problem {pr.N}", "report this as a bug")
    Y_ours = arrays.empty((pr.L, pr.M, pr.N), dtype)
    Y_cub = arrays.empty((pr.L, pr.M, pr.N), dtype)
    ours = DenseBatch(get_kernel(desc, cache)).prepare(W, X, Y_ours)
    gemm = CublasBatched(dtype)
    cub = lambda: gemm.run(W, X, Y_cub)                                    # noqa: E731

    ref = arrays.empty((pr.L, pr.M, pr.N), "fp32")
    CublasBatched("fp32").run(arrays.to_float32(W, dtype), arrays.to_float32(X, dtype), ref)
    errors = {}
    for name, launch, Y in (("ours", ours, Y_ours), ("cublas", cub, Y_cub)):
        errors[name] = verify(launch, outputs=Y, result=lambda Y=Y: Y[..., :T], reference=ref[..., :T],
                              check=Check(dtype, name, shape=(pr.L, pr.M, T, pr.K), K=pr.K))
    return ours, cub, errors


def compare(shape: Shape, desc, dtype: str, cache, budget_s: float, rounds: int = 3) -> dict[str, Any]:
    """Ours and cuBLAS on the same fresh operands (verified_launches), timed alternately `rounds`
    times; medians of the round medians."""
    from cutlass_wsp.gpu.harness import time_launch

    ours, cub, errors = verified_launches(shape, desc, dtype, cache)
    samples: dict[str, list] = {"ours": [], "cublas": []}
    for _ in range(rounds):
        for name, launch in (("ours", ours), ("cublas", cub)):
            samples[name].append(time_launch(launch, budget_s=budget_s / (2 * rounds), flush_l2=True))
    med = {k: sorted(t.median_ms for t in v)[len(v) // 2] for k, v in samples.items()}
    iqr = {k: sorted(t.iqr_ms for t in v)[len(v) // 2] for k, v in samples.items()}
    return {"ours_ms": med["ours"], "ours_iqr_ms": iqr["ours"], "cublas_ms": med["cublas"],
            "cublas_iqr_ms": iqr["cublas"], "ours_rel_error": errors["ours"], "cublas_rel_error": errors["cublas"],
            "method": samples["ours"][0].method}


def short_config(desc) -> str:
    """'256x128x64 coop c2x1 sk/2' -- the table's config column."""
    r = desc.resolved()
    ks = {"tma_ws_cooperative": "coop", "tma_ws_pingpong": "pp", "tma_ws": "ws", "tma": "tma"}.get(
        r.kernel_schedule, r.kernel_schedule) if desc.arch == "sm90" else f"w{desc.warp_shape()[0]}x{desc.warp_shape()[1]}"
    parts = ["x".join(map(str, desc.tile)), ks]
    if desc.stages:
        parts.append(f"s{desc.stages}")
    if desc.cluster != (1, 1, 1):
        parts.append(f"c{desc.cluster[0]}x{desc.cluster[1]}")
    if desc.arch == "sm90" and r.epilogue_schedule != "tma":
        parts.append(f"e:{r.epilogue_schedule}")
    extra = desc.extra_dict()
    if extra.get("scheduler") == "streamk":
        parts.append(f"splitk{extra['splits']}" if "splits" in extra else "streamk")
    return " ".join(parts)


def summarize(rows: list[dict]) -> dict[str, Any]:
    ok = [r for r in rows if r.get("ratio_vs_cublas")]
    if not ok:
        return {"kind": "summary", "shapes": len(rows), "measured": 0}
    ratios = [r["ratio_vs_cublas"] for r in ok]
    geomean = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
    worst = min(ok, key=lambda r: r["ratio_vs_cublas"])
    gated = [r for r in ok if r["floor_ms"] >= FLOOR_GATE_MS]
    under = [r for r in gated if r["pct_of_floor"] < TARGET_PCT_FLOOR]
    return {
        "kind": "summary", "shapes": len(rows), "measured": len(ok),
        "geomean_ratio_vs_cublas": geomean, "min_ratio_vs_cublas": worst["ratio_vs_cublas"],
        "min_ratio_shape": f"{worst['label']} p={worst['p']}",
        "floor_gated_shapes": len(gated),
        "under_pct_of_floor": [f"{r['label']} p={r['p']} ({r['pct_of_floor']:.0f}%)" for r in under],
        "targets": {"geomean_ge_1.05": geomean >= TARGET_GEOMEAN,
                    "min_ge_0.95": worst["ratio_vs_cublas"] >= TARGET_MIN_RATIO,
                    "pct_floor_ge_85_where_floor_ge_50us": not under},
    }


# ------------------------------------------------------------------------------------------ modes
def list_mode(all_shapes: list[Shape], dtype: str, arch: str, sm_count: int) -> int:
    from cutlass_wsp.families.registry import candidate_union, candidates

    for s in all_shapes:
        descs = candidates(s.problem, dtype, arch, sm_count=sm_count)
        print(f"{s.label:28s} p={s.p} {s.problem}: {len(descs)} candidates")
        for d in descs:
            print(f"    {d.name}")
    union = candidate_union([s.problem for s in all_shapes], dtype, arch, sm_count=sm_count)
    print(f"{len(all_shapes)} shapes, {len(union)} distinct kernels")
    return 0


def compile_only(all_shapes: list[Shape], dtype: str, arch: str, sm_count: int, cache, jobs) -> int:
    from cutlass_wsp.families.registry import candidate_union

    union = candidate_union([s.problem for s in all_shapes], dtype, arch, sm_count=sm_count)
    return compile_union(union, f"{len(all_shapes)} shapes", cache, jobs)


def compile_union(union, what: str, cache, jobs) -> int:
    """Build every kernel of `union` (`jobs` nvcc at a time), listing them and the failures; 1 if any failed."""
    from cutlass_wsp.kernels.search import compile_candidates

    print(f"compiling {len(union)} distinct kernels for {what} into {cache.root}", flush=True)
    for d in union:
        print(f"    {d.name}", flush=True)
    t0 = time.perf_counter()
    built, failed = compile_candidates(union, cache, jobs=jobs)
    print(f"built {len(built)} in {time.perf_counter() - t0:.0f} s, {len(failed)} failed")
    for d, why in failed.items():
        print(f"FAILED {d.name}: {why}")
    return 1 if failed else 0


def measure_mode(args, all_shapes: list[Shape], cache) -> int:
    from cutlass_wsp.gpu.ceilings import measure_ceilings
    from cutlass_wsp.gpu.device import compute_capability, require_gpu
    from cutlass_wsp.gpu.info import provenance
    from cutlass_wsp.kernels.manifest import arch_for_device
    from cutlass_wsp.families.registry import tunable
    from cutlass_wsp.kernels.search import tune_many
    from cutlass_wsp.sweep.results import row_provenance

    require_gpu()
    arch = args.arch or arch_for_device(compute_capability())
    prov = provenance()
    ceil = measure_ceilings(args.dtype)
    print(f"{prov.get('gpu_name')}: copy {ceil.copy_bw_Bps / 1e12:.2f} TB/s, {args.dtype} GEMM "
          f"{ceil.gemm_flops / 1e12:.0f} TFLOP/s", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if args.verbose else None
    results = tune_many([s.problem for s in all_shapes], args.dtype, arch, families=tunable(), cache=cache,
                        budget_s=args.budget, jobs=args.jobs, record=not args.no_record, progress=say)
    rows = []
    head = f"{'shape':28s} {'p':>1s} {'floor us':>8s} {'cuBLAS us':>9s} {'ours us':>8s} {'ratio':>6s} {'%floor':>6s}  config"
    with open(out, "w") as f:
        f.write(json.dumps({"kind": "header", "schema": "cutlass-wsp/tune-dense", "version": 1,
                            "created": prov.get("timestamp_utc"), "provenance": prov,
                            "ceilings": ceil.to_dict(), "dtype": args.dtype, "arch": arch,
                            "budget_s": args.budget}) + "\n")
        print(head)
        for s, res in zip(all_shapes, results):
            pr = s.problem
            floor_ms = ceil.floor_seconds(BatchProblem(pr.L, pr.M, s.T, pr.K), args.dtype) * 1e3
            row: dict[str, Any] = {
                "kind": "shape", "label": s.label, "net": s.net, "c": s.c, "n": s.n, "H": s.H, "p": s.p,
                "batch": s.batch, "dtype": args.dtype, "arch": arch, "L": pr.L, "M": pr.M, "K": pr.K,
                "T": s.T, "Npad": pr.N, "floor_ms": floor_ms, "kernel": res.chosen.name,
                "config": short_config(res.chosen), "kernel_config": res.chosen.as_dict(),
                "tuned": res.best is not None, "default_kernel": res.default.name,
                "tune_default_ms": res.default_ms, "tune_best_ms": res.best_ms,
                "trials": [t.to_dict() for t in res.trials], "status": "ok", "reason": None}
            try:
                row.update(compare(s, res.chosen, args.dtype, cache, args.compare_budget))
                row["ratio_vs_cublas"] = row["cublas_ms"] / row["ours_ms"]
                row["pct_of_floor"] = 100.0 * floor_ms / row["ours_ms"]
                row["cublas_pct_of_floor"] = 100.0 * floor_ms / row["cublas_ms"]
                print(f"{s.label:28s} {s.p:1d} {floor_ms * 1e3:8.1f} {row['cublas_ms'] * 1e3:9.1f} "
                      f"{row['ours_ms'] * 1e3:8.1f} {row['ratio_vs_cublas']:6.2f} {row['pct_of_floor']:5.0f}%  "
                      f"{row['config']}", flush=True)
            except WspError as e:
                row.update(status="error", reason=str(e))
                print(f"{s.label:28s} {s.p:1d} {floor_ms * 1e3:8.1f}  FAILED: {e}", flush=True)
            row.update(row_provenance(prov))
            rows.append(row)
            f.write(json.dumps(row) + "\n")
            f.flush()
        summary = summarize(rows)
        f.write(json.dumps(summary) + "\n")
    if summary.get("measured"):
        t = summary["targets"]
        print(f"geomean speed vs cuBLAS {summary['geomean_ratio_vs_cublas']:.3f}x "
              f"(target >= {TARGET_GEOMEAN}: {'met' if t['geomean_ge_1.05'] else 'MISSED'})")
        print(f"slowest {summary['min_ratio_vs_cublas']:.3f}x at {summary['min_ratio_shape']} "
              f"(target >= {TARGET_MIN_RATIO}: {'met' if t['min_ge_0.95'] else 'MISSED'})")
        under = summary["under_pct_of_floor"]
        print(f"floor >= {FLOOR_GATE_MS * 1e3:.0f} us under {TARGET_PCT_FLOOR:.0f}% of floor: "
              f"{len(under)} of {summary['floor_gated_shapes']}" + (f": {', '.join(under)}" if under else ""))
    print(f"wrote {out}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", default="fp16", choices=("fp16", "bf16", "tf32"))
    ap.add_argument("--arch", default=None, choices=("sm90", "sm80"),
                    help="kernel arch (default: the GPU's; sm90 for --list/--compile-only)")
    ap.add_argument("--nets", default="vgg16,resnet18", help="comma-separated networks (default vgg16,resnet18)")
    ap.add_argument("--tiles", default="4,6", help="Winograd tile sizes p (default 4,6)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--budget", type=float, default=4.0, help="tuning seconds of timing per shape (default 4)")
    ap.add_argument("--compare-budget", type=float, default=2.0,
                    help="seconds of timing per shape for the final ours-vs-cuBLAS comparison (default 2)")
    ap.add_argument("--jobs", type=int, default=None, help="parallel nvcc builds (default: CPU count)")
    ap.add_argument("--sm-count", type=int, default=None,
                    help="SMs the candidate sets assume for --list/--compile-only (default 132: H100/H200)")
    ap.add_argument("--cache", default=None, help="compile cache root (default $CUTLASS_WSP_CACHE or ~/.cache)")
    ap.add_argument("--out", default="results/tune-dense.jsonl")
    ap.add_argument("--no-record", action="store_true", help="do not write winners to the tuning cache")
    ap.add_argument("--compile-only", action="store_true", help="only compile the candidate union (no GPU)")
    ap.add_argument("--list", action="store_true", help="only list shapes and candidates (no GPU, no nvcc)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every trial to stderr")
    args = ap.parse_args(argv)

    from cutlass_wsp.kernels.cache import KernelCache
    from cutlass_wsp.kernels.candidates import DEFAULT_SM_COUNT

    try:
        tiles = [int(t) for t in args.tiles.split(",") if t.strip()]
        nets = [n.strip() for n in args.nets.split(",") if n.strip()]
        all_shapes = shapes(nets, tiles, args.batch, args.dtype)
        if args.list or args.compile_only:
            arch, sm = args.arch or "sm90", args.sm_count or DEFAULT_SM_COUNT
            if args.list:
                return list_mode(all_shapes, args.dtype, arch, sm)
            return compile_only(all_shapes, args.dtype, arch, sm, KernelCache(args.cache), args.jobs)
        return measure_mode(args, all_shapes, KernelCache(args.cache))
    except WspError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except ValueError as e:
        print(f"error: {e} (give --tiles as e.g. 4,6)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
