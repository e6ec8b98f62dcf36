"""BCBP (balanced column-wise block pruning, seed 002): W_i is cut into row tiles of t rows; row tile j
keeps k column segments `tile_cols[i, j]` (the same count k in every tile), so Y_i's rows j*t..j*t+t-1
= compact[i, j] (t x k) . X_i[tile_cols[i, j], :]: a K gather per row tile.

One launch of the gather_b kernel (templates/gather_b_sm80.cu.j2) with one batch entry per (position
i, row tile j), b = i*n_tiles + j:
  A_b = compact weights of the tile, [t, K] (batch stride t*K)
  B   = X viewed as X_flat[L*c, Npad], batch stride 0, rows idx[b, :] = i*c + tile_cols[i, j] (global)
  D_b = rows j*t .. j*t+t-1 of Y_i: at (i*n + j*t)*Npad = b*t*Npad since n = n_tiles*t, so D's batch
        stride is t*Npad and the output is the dense Y[L, n, Npad].
M = t: the kernel bounds-checks rows, so any t works; a CTA tile M >= t (32 for the default t = 32)
wastes nothing beyond the rounding. K = k rounded up to 16 bytes (zero weight columns, repeated index).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from cutlass_wsp.errors import InputError
from cutlass_wsp.families.base import Cost, PointContext, PrunedFamily, Serves
from cutlass_wsp.families.gather import (
    GATHER_FAMILY, GatherGemm, GatherProblem, Launches, check_device_array, check_mask_matches, check_pruned,
    check_sorted_indices, finish_uploads, gather_desc, pad_columns_with_zeros, padded_global_index, padded_k,
    tile_m_for_rows,
)
from cutlass_wsp.families.wsp_r import resolve_arch
from cutlass_wsp.kernels.description import KernelDesc
from cutlass_wsp.problem import BatchProblem


@dataclass(frozen=True, eq=False)
class TileLayout:
    """Checked BCBP compact form: tile_cols[L, n_tiles, k] and compact weights [L, n_tiles, t, k]."""

    L: int
    n: int
    c: int
    t: int
    tile_cols: np.ndarray                 # int32 [L, n_tiles, k], each row strictly ascending in [0, c)
    compact: np.ndarray                   # [L, n_tiles, t, k]

    @property
    def n_tiles(self) -> int:
        return self.n // self.t

    @property
    def k(self) -> int:
        return int(self.tile_cols.shape[2])

    @property
    def batches(self) -> int:
        return self.L * self.n_tiles

    def K(self, alignment: int) -> int:
        return padded_k(self.k, alignment)

    def global_index(self, K: int) -> np.ndarray:
        """int32 [L*n_tiles, K]: entry i*n_tiles + j holds i*c + tile_cols[i, j] (pads repeat the last)."""
        local = list(self.tile_cols.reshape(self.batches, self.k))
        base = np.repeat(np.arange(self.L) * self.c, self.n_tiles)
        return padded_global_index(local, base, K)

    def padded_weights(self, K: int) -> np.ndarray:
        """[L*n_tiles, t, K]: the tiles' compact weights with zero pad columns."""
        return pad_columns_with_zeros(self.compact.reshape(self.batches, self.t, self.k), K)


def tile_layout(pruned: Any) -> TileLayout:
    """Check a BCBP `Pruned` (tile_rows, tile_cols, compact weights, mask) and return its layout."""
    L, n, c = check_pruned(pruned, ("bcbp",), "BCBP")
    t = pruned.tile_rows
    if not isinstance(t, (int, np.integer)) or t < 1 or n % t:
        raise InputError(f"BCBP tile_rows={t!r} does not divide n={n}", "use a divisor of n (prune picks one)")
    t = int(t)
    nt = n // t
    tc = np.asarray(pruned.tile_cols) if pruned.tile_cols is not None else np.zeros((0,))
    if tc.ndim != 3 or tc.shape[:2] != (L, nt):
        raise InputError(f"tile_cols has shape {tc.shape}", f"give tile_cols[L={L}, n/t={nt}, k]")
    if tc.shape[2] == 0:
        raise InputError("BCBP keeps no column segments per row tile: the ratio leaves an empty GEMM",
                         "use a lower ratio, so every row tile keeps at least one column")
    for i in range(L):
        for j in range(nt):
            check_sorted_indices(tc[i, j], c, f"tile_cols[{i}, {j}]", "column")
    try:
        compact = np.stack([np.asarray(w) for w in pruned.compact_weights])
    except (TypeError, ValueError):
        compact = np.zeros((0,))
    if compact.shape != (L, nt, t, tc.shape[2]):
        raise InputError(f"compact weights have shape {compact.shape}, expected [L, {nt}, {t}, {tc.shape[2]}]",
                         "give compact_weights[i][j] = W_i[j*t:(j+1)*t, tile_cols[i, j]]")
    expected = np.zeros((L, nt, t, c), dtype=bool)
    for i in range(L):
        for j in range(nt):
            expected[i, j, :, tc[i, j]] = True
    check_mask_matches(np.asarray(pruned.mask), expected.reshape(L, n, c), "column segments")
    return TileLayout(L=L, n=n, c=c, t=t, tile_cols=tc.astype(np.int32), compact=compact)


class Bcbp:
    """BCBP on the GPU: one gather_b launch over L*n_tiles batch entries. Construct (host only),
    `setup()`, then `run(X, Y)` or `prepare(X, Y)()`. X: EC2B input [L, c, N]; Y = output(): [L, n, N]."""

    def __init__(self, pruned: Any, dtype: str, N: int, *, arch: str | None = None, desc: KernelDesc | None = None):
        from cutlass_wsp.dtypes import get_dtype

        dt = get_dtype(dtype)
        if int(N) < 1:
            raise InputError(f"N={N}", "pass the padded column count of X (Npad >= 1)")
        self.layout = tile_layout(pruned)
        self.dtype, self.N = dtype, int(N)
        self.arch = resolve_arch(arch)   # the gather kernel is sm80 code on either arch
        self.K = self.layout.K(dt.alignment)
        self.index = self.layout.global_index(self.K)
        if desc is None:
            desc = gather_desc(dtype, N=self.N, K=self.K, tile_m=tile_m_for_rows(self.layout.t))
        elif desc.family != GATHER_FAMILY or desc.dtype != dtype:
            raise InputError(f"BCBP runs a {dtype} {GATHER_FAMILY!r} kernel, got {desc.name}",
                             f"pass a KernelDesc(family={GATHER_FAMILY!r}, dtype={dtype!r}) or none")
        self.desc = desc.validate()
        self._gemm: GatherGemm | None = None

    @property
    def gather_problem(self) -> GatherProblem:
        lay = self.layout
        return GatherProblem(batches=lay.batches, M=lay.t, N=self.N, K=self.K,
                             a_batch_stride=lay.t * self.K, d_batch_stride=lay.t * self.N)

    @property
    def kernel_descs(self) -> list[KernelDesc]:
        return [self.desc]

    def setup(self, cache: Any = None) -> "Bcbp":
        import cupy

        from cutlass_wsp.gpu.arrays import from_host
        from cutlass_wsp.kernels.library import get_kernel

        lay = self.layout
        kernel = get_kernel(self.desc, cache)
        self._weights = from_host(np.ascontiguousarray(lay.padded_weights(self.K)), self.dtype)
        self._index = cupy.asarray(np.ascontiguousarray(self.index.reshape(-1)))
        self._gemm = GatherGemm(kernel, self.gather_problem, self._weights, self._index, x_rows=lay.L * lay.c)
        finish_uploads()
        return self

    def output(self) -> Any:
        from cutlass_wsp.gpu.arrays import empty

        return empty((self.layout.L, self.layout.n, self.N), self.dtype)

    def prepare(self, X: Any, Y: Any, *, stream: Any = None) -> Callable[[], None]:
        if self._gemm is None:
            raise InputError("BCBP was not set up", "call setup() before run()/prepare()")
        lay = self.layout
        check_device_array("X", X, (lay.L, lay.c, self.N), self.dtype)
        check_device_array("Y", Y, (lay.L, lay.n, self.N), self.dtype)
        # self too: the launch reads this object's weight and index arrays through raw pointers, and a
        # caller that keeps only the launcher (the hybrid point) must keep them alive
        return Launches([self._gemm.prepare(X, Y, stream=stream)], (X, Y, self))

    def run(self, X: Any, Y: Any, *, stream: Any = None) -> Any:
        self.prepare(X, Y, stream=stream)()
        return Y

    def to_dense_output(self, Y: Any) -> Any:
        """Y is already dense [L, n, N]."""
        return Y


def block_cols_cost(problem: BatchProblem, dt: Any, tile_cols: np.ndarray) -> Cost:
    """BCBP: tile_cols[i, j, :] are the columns row tile j of position i keeps. X rows read once per
    position: the union of its tiles' columns."""
    L, M, N, s = problem.L, problem.M, problem.N, dt.itemsize
    n_tiles, kept = tile_cols.shape[1], tile_cols.shape[2]
    t = M // n_tiles
    x_rows = sum(len(np.unique(tile_cols[i])) for i in range(L))
    w = L * n_tiles * t * kept
    return Cost(float(2 * w * N), float(s * (w + x_rows * N + L * M * N)))


class BcbpFamily(PrunedFamily):
    """One gather_b launch over every (position, row tile); the default kernel (no tune problem)."""

    name = "bcbp"
    description = "BCBP: column segments per row tile, one gather_b launch"
    serves = (Serves("bcbp", "cutlass", description="CUTLASS batched GEMM: one shape for all p² positions"),)

    def instance(self, ctx: PointContext) -> Bcbp:
        return Bcbp(ctx.pruned, ctx.dt.name, ctx.Npad, arch=ctx.arch)

    def cost(self, ctx: PointContext) -> Cost:
        return block_cols_cost(ctx.problem, ctx.dt, ctx.pruned.tile_cols)


FAMILY = BcbpFamily()
