"""FLOPs and fewest bytes of the GEMM batch a pattern leaves behind: each row's roofline floor.

The floor is the pattern's own (what an ideal kernel for it would need), not the implementation's:
a two-pass WSP-C and a fused one share a floor, so the row's % of floor shows what the extra pass
costs. Row pruning still reads all of X, which is why its floor-predicted speedup is far below
1 / (1 - ratio) on these memory-bound shapes (BRIEF).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cutlass_wsp.dtypes import DType
from cutlass_wsp.problem import BatchProblem


@dataclass(frozen=True)
class Cost:
    flops: float
    bytes: float

    def floor_ms(self, flop_rate: float, bandwidth: float) -> float:
        return 1e3 * max(self.flops / flop_rate, self.bytes / bandwidth)


def dense_cost(problem: BatchProblem, dt: DType) -> Cost:
    return Cost(problem.flops(), problem.bytes_moved(dt))


def rows_cost(problem: BatchProblem, dt: DType, kept_rows) -> Cost:
    """WSP-R / FP: position i keeps kept_rows[i] of W_i's M rows; reads all of X_i, writes n_i rows."""
    m = np.asarray(kept_rows, dtype=np.float64)
    N, K, s = problem.N, problem.K, dt.itemsize
    return Cost(float(2 * m.sum() * N * K), float(s * (m.sum() * K + len(m) * K * N + m.sum() * N)))


def cols_cost(problem: BatchProblem, dt: DType, kept_cols) -> Cost:
    """WSP-C: position i keeps kept_cols[i] of W_i's K columns; reads only those rows of X_i."""
    k = np.asarray(kept_cols, dtype=np.float64)
    M, N, s = problem.M, problem.N, dt.itemsize
    return Cost(float(2 * M * N * k.sum()), float(s * (M * k.sum() + k.sum() * N + len(k) * M * N)))


def csr_cost(problem: BatchProblem, dt: DType, nnz: int) -> Cost:
    """WWP: nnz values with a 4-byte column index each, row pointers, all of X, all of Y."""
    L, M, N, K, s = problem.L, problem.M, problem.N, problem.K, dt.itemsize
    return Cost(float(2 * nnz * N), float(nnz * (s + 4) + L * (M + 1) * 4 + s * L * (K * N + M * N)))


def block_cols_cost(problem: BatchProblem, dt: DType, tile_cols: np.ndarray) -> Cost:
    """BCBP: tile_cols[i, j, :] are the columns row tile j of position i keeps. X rows read once per
    position: the union of its tiles' columns."""
    L, M, N, s = problem.L, problem.M, problem.N, dt.itemsize
    n_tiles, kept = tile_cols.shape[1], tile_cols.shape[2]
    t = M // n_tiles
    x_rows = sum(len(np.unique(tile_cols[i])) for i in range(L))
    w = L * n_tiles * t * kept
    return Cost(float(2 * w * N), float(s * (w + x_rows * N + L * M * N)))
