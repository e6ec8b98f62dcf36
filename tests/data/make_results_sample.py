"""Writes tests/data/results_sample.jsonl: SYNTHETIC results (nothing here was measured) for the plot,
compare and schema tests.

    python tests/data/make_results_sample.py [OUT.jsonl]

Points come from the real planner (a few VGG-16 and ResNet-18 layers, batch 32, p = 4, fp16, cuDNN's
conv, plus dense CUTLASS at p = 6). Times are roofline floors (H100 ceilings from shared/BRIEF.md:
759 TFLOP/s fp16, 3.01 TB/s) of the GEMM each pattern leaves behind, divided by a per-implementation
efficiency, plus a launch overhead and ±3% deterministic jitter seeded by the point key. Whole-layer
times add the transforms at 70% of their copy-bandwidth floor; cuDNN's conv is its direct-conv floor at
an efficiency growing with the channel count. A few rows carry the non-ok statuses (wrong,
unsupported, error, oom) so readers see them, and one ok row has no layer time (its reason says why).
GPU name 'synthetic-H100', method 'synthetic'.
Deterministic: the same planner gives the same rows (tests check the committed file against it).
"""

from __future__ import annotations

import random
import sys
import zlib
from pathlib import Path

from cutlass_wsp.dtypes import get_dtype
from cutlass_wsp.problem import BatchProblem
from cutlass_wsp.sweep.plan import SweepSpec, expand
from cutlass_wsp.sweep.results import ResultStore, make_row

FLOP_RATE, BANDWIDTH, LAUNCH_MS = 759e12, 3.01e12, 0.006
EFFICIENCY = {"cutlass": 0.72, "cublas": 0.78, "cutlass-grouped": 0.66, "cutlass-padded": 0.72,
              "cusparse-per-position": 0.05, "cusparse-block-diag": 0.08}
PROVENANCE = {"gpu": "synthetic-H100", "sm_count": 132, "sm_clock_mhz": 1980, "mem_clock_mhz": 2619,
              "driver": "synthetic", "cuda": "13.0", "cupy": "14.2.0", "cutlass": "4.2.0", "nvcc": "13.0",
              "git_commit": "0000000", "timestamp": "2026-01-01T00:00:00+00:00"}
# key fragment -> (status, reason): shows every non-ok status in the sample
FAILURES = {
    "vgg16/c64n64@224x224/b32/p4/fp16/wsp-c/cutlass/r0.9/balanced": ("wrong", "rel_error 0.31 > 5e-3"),
    "resnet18/c512n512@7x7/b32/p4/fp16/wsp-c/cutlass-padded/r0.9/unbalanced":
        ("unsupported", "synthetic: no kernel for this shape"),
    "vgg16/c512n512@28x28/b32/p4/fp16/wsp-r/cutlass-grouped/r0.5/unbalanced": ("error", "synthetic launch failure"),
    "vgg16/c64n64@224x224/b32/p4/fp16/wwp/cusparse-block-diag/r0.5": ("oom", "synthetic: out of memory"),
}
# ok rows whose whole layer was not timed
LAYER_NOT_TIMED = {"vgg16/c512n512@28x28/b32/p4/fp16/dense/cublas": "layer not timed: synthetic graph capture failure"}
TRANSFORM_EFFICIENCY, LAYOUT = 0.7, "nhwc"


def sample_spec() -> SweepSpec:
    return SweepSpec(
        layers=("vgg16:conv1_1,conv1_2,conv4_2,conv4_3", "resnet18:layer4.0.conv2"),
        batches=(32,), tiles=(4,), dtypes=("fp16",),
        patterns=("conv", "dense", "fp", "wsp-r", "wsp-c", "wwp"),
        ratios=(0.5, 0.7, 0.9), balances=("balanced", "unbalanced"),
        implementations={"conv": ("cudnn",), "dense": ("cutlass", "cublas"), "fp": ("cutlass",),
                         "wsp-r": ("cutlass", "cutlass-grouped", "cutlass-padded"),
                         "wsp-c": ("cutlass", "cutlass-padded"),
                         "wwp": ("cusparse-block-diag",)},
    )


def p6_spec() -> SweepSpec:
    """Dense CUTLASS at p = 6 on the same layers: a second Winograd tile size for the plan to choose from."""
    base = sample_spec()
    return SweepSpec(layers=base.layers, batches=base.batches, tiles=(6,), dtypes=base.dtypes,
                     patterns=("dense",), implementations={"dense": ("cutlass",)})


def sample_points() -> list:
    points = expand(sample_spec())
    keys = {p.key for p in points}
    return points + [p for p in expand(p6_spec()) if p.key not in keys]


def _kept(total: int, ratio: float, L: int, balanced: bool, rng: random.Random) -> list[int]:
    """Per-position kept counts with the same sum: equal when balanced, spread ±40% otherwise."""
    mean = max(1, round(total * (1 - ratio)))
    if balanced:
        return [mean] * L
    raw = [rng.uniform(0.6, 1.4) for _ in range(L)]
    scale = mean * L / sum(raw)
    return [min(total, max(1, round(x * scale))) for x in raw]


def _gemm_cost(problems: list[tuple[int, int, int]], itemsize: int) -> tuple[int, int]:
    """(flops, bytes moved once) of GEMMs given as (M, N, K) run together."""
    flops = sum(2 * m * n * k for m, n, k in problems)
    nbytes = sum(itemsize * (m * k + k * n + m * n) for m, n, k in problems)
    return flops, nbytes


def _round(row: dict) -> dict:
    # 6 significant digits keep the committed file small; nothing synthetic is more precise than that
    return {k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in row.items()}


def conv_row(point) -> dict:
    """cuDNN's direct conv: its floor at an efficiency from 0.45 (few channels) to 0.85 (512)."""
    rng = random.Random(zlib.crc32(point.key.encode()))
    dt = get_dtype(point.dtype)
    B, c, n, H, W = point.batch, point.c, point.n, point.H, point.W
    flops = 2 * B * H * W * n * c * 9
    nbytes = dt.itemsize * (B * c * H * W + 9 * n * c + B * n * H * W)
    floor_s = max(flops / FLOP_RATE, nbytes / BANDWIDTH)
    med = (floor_s * 1e3 / (0.45 + 0.4 * min(1.0, c / 512)) + LAUNCH_MS) * rng.uniform(0.97, 1.03)
    row = make_row(point, "ok", flops=flops, floor_ms=floor_s * 1e3, kernel="synthetic_cudnn", kernel_config={},
                   median_ms=med, q1_ms=med * 0.99, q3_ms=med * 1.015, min_ms=med * 0.98, reps=100,
                   method="synthetic", rel_error=rng.uniform(1e-4, 9e-4), layer_ms=med, layer_q1_ms=med * 0.99,
                   layer_q3_ms=med * 1.015, layer_rel_error=rng.uniform(1e-4, 9e-4), layout=LAYOUT, **PROVENANCE)
    return _round(row)


def _layer_fields(point, gemm_ms: float, T: int, out_rows: int, rng: random.Random) -> dict:
    """Whole layer = transforms (read d, write X; read Y's out_rows rows, write the output) + GEMM batch."""
    dt = get_dtype(point.dtype)
    B, c, n, H, W, L = point.batch, point.c, point.n, point.H, point.W, point.p ** 2
    nbytes = dt.itemsize * (B * c * H * W + L * c * T + out_rows * T + B * n * H * W)
    floor_ms = nbytes / BANDWIDTH * 1e3
    transform = (floor_ms / TRANSFORM_EFFICIENCY + 2 * LAUNCH_MS) * rng.uniform(0.97, 1.03)
    layer = (gemm_ms + transform) * rng.uniform(0.99, 1.02)
    return dict(layer_ms=layer, layer_q1_ms=layer * 0.99, layer_q3_ms=layer * 1.015, transform_ms=transform,
                transform_floor_ms=floor_ms, layer_rel_error=rng.uniform(2e-4, 1.5e-3), layout=LAYOUT)


def synthetic_row(point) -> dict:
    if point.p is None:
        return conv_row(point)
    rng = random.Random(zlib.crc32(point.key.encode()))
    dt = get_dtype(point.dtype)
    prob: BatchProblem = point.problem()
    L, M, N, K = prob.L, prob.M, prob.N, prob.K
    kept_m = kept_k = nnz = None
    balanced = point.balance in (None, "balanced")
    if point.pattern == "dense":
        flops, nbytes = _gemm_cost([(M, N, K)] * L, dt.itemsize)
    elif point.pattern in ("fp", "wsp-r"):
        kept_m = _kept(M, point.ratio, L, point.pattern == "fp" or balanced, rng)
        rows = [max(kept_m)] * L if point.impl == "cutlass-padded" else kept_m
        flops, nbytes = _gemm_cost([(m, N, K) for m in rows], dt.itemsize)
    elif point.pattern == "wsp-c":
        kept_k = _kept(K, point.ratio, L, balanced, rng)
        cols = [max(kept_k)] * L if point.impl == "cutlass-padded" else kept_k
        flops, nbytes = _gemm_cost([(M, N, k) for k in cols], dt.itemsize)
        nbytes += 2 * dt.itemsize * sum(cols) * N     # two passes: the gathered X is written, then read
    else:  # wwp: CSR values + 4-byte column indices, all of X read, all of Y written
        nnz = [round(M * K * (1 - point.ratio))] * L
        flops = 2 * sum(nnz) * N
        nbytes = sum(nnz) * (dt.itemsize + 4) + L * dt.itemsize * (K * N + M * N)
    floor_s = max(flops / FLOP_RATE, nbytes / BANDWIDTH)
    fields = dict(L=L, M=M, N=N, K=K, T=N, Npad=prob.npad(dt), kept_m=kept_m, kept_k=kept_k, nnz=nnz,
                  kept_fraction=1.0 if point.pattern == "dense" else round(1 - point.ratio, 6),
                  flops=int(flops), floor_ms=floor_s * 1e3, **PROVENANCE)
    fields["kernel"] = f"synthetic_{point.pattern}_{point.impl}".replace("-", "_")
    fields["kernel_config"] = {"tile": [128, 128, 64], "stages": 4} if point.impl.startswith("cutlass") else {}
    status, reason = FAILURES.get(point.key, ("ok", None))
    if status == "ok":
        med = (floor_s * 1e3 / EFFICIENCY[point.impl] + LAUNCH_MS) * rng.uniform(0.97, 1.03)
        fields.update(median_ms=med, q1_ms=med * 0.99, q3_ms=med * 1.015, min_ms=med * 0.98, reps=100,
                      method="synthetic", rel_error=rng.uniform(1e-4, 9e-4))
        reason = LAYER_NOT_TIMED.get(point.key)
        if reason is None:
            # fp/wsp-r keep compact outputs: the output transform reads only the kept rows
            out_rows = sum(kept_m) if kept_m is not None and point.pattern in ("fp", "wsp-r") else L * M
            fields.update(_layer_fields(point, med, N, out_rows, rng))
    elif status == "wrong":
        fields.update(rel_error=0.31)
    return _round(make_row(point, status, reason=reason, **fields))


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path(__file__).with_name("results_sample.jsonl")
    if out.exists():
        out.unlink()
    store = ResultStore(out, provenance={**PROVENANCE, "synthetic": True,
                                         "generator": "tests/data/make_results_sample.py"})
    for point in sample_points():
        store.append(synthetic_row(point))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
