"""Writes tests/data/results_sample.jsonl: SYNTHETIC results (nothing here was measured) for the plot,
compare and schema tests.

    python tests/data/make_results_sample.py [OUT.jsonl]

Points come from the real planner (a few VGG-16 and ResNet-18 layers, batch 32, p = 4, fp16). Times
are roofline floors (H100 ceilings from shared/BRIEF.md: 759 TFLOP/s fp16, 3.01 TB/s) of the GEMM
each pattern leaves behind, divided by a per-implementation efficiency, plus a launch overhead and
±3% deterministic jitter seeded by the point key. A few rows carry the non-ok statuses (wrong,
unsupported, error, oom) so readers see them. GPU name 'synthetic-H100', method 'synthetic'.
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


def sample_spec() -> SweepSpec:
    return SweepSpec(
        layers=("vgg16:conv1_1,conv1_2,conv4_2,conv4_3", "resnet18:layer4.0.conv2"),
        batches=(32,), tiles=(4,), dtypes=("fp16",),
        patterns=("dense", "fp", "wsp-r", "wsp-c", "wwp"),
        ratios=(0.5, 0.7, 0.9), balances=("balanced", "unbalanced"),
        implementations={"dense": ("cutlass", "cublas"), "fp": ("cutlass",),
                         "wsp-r": ("cutlass", "cutlass-grouped", "cutlass-padded"),
                         "wsp-c": ("cutlass", "cutlass-grouped", "cutlass-padded"),
                         "wwp": ("cusparse-block-diag",)},
    )


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


def synthetic_row(point) -> dict:
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
    elif status == "wrong":
        fields.update(rel_error=0.31)
    row = make_row(point, status, reason=reason, **fields)
    # 6 significant digits keep the committed file small; nothing synthetic is more precise than that
    return {k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in row.items()}


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path(__file__).with_name("results_sample.jsonl")
    if out.exists():
        out.unlink()
    store = ResultStore(out, provenance={**PROVENANCE, "synthetic": True,
                                         "generator": "tests/data/make_results_sample.py"})
    for point in expand(sample_spec()):
        store.append(synthetic_row(point))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
