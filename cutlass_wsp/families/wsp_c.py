"""WSP-C (column pruning): W_i keeps c_i of its c columns, so Y_i = W_i[:, cols_i] . X_i[cols_i, :]:
a GEMM with K = c_i whose B operand is X_i's rows `cols_i`, gathered along K.

Layout: compact weights Wc[L, n, K] and a GLOBAL row index idx[L, K] into X viewed as X_flat[L*c, Npad]
(idx[i, k] = i*c + cols_i[k]). K = max c_i rounded up to 16 bytes of elements (the kernels' vector
width): positions with fewer columns (unbalanced WSP, or the round-up) get zero weight columns whose
index repeats the position's last kept column, so they add exactly 0. Output: the dense Y[L, n, Npad]
(every row of Y_i is computed).

Modes:
  fused     one launch of the gather_b kernel (templates/gather_b_sm80.cu.j2): its mainloop reads
            B's rows through idx + i*K, B's batch stride is 0. fp16, bf16, tf32; sm80 code, which
            also runs on sm90 (there is no TMA gather: TMA cannot gather rows).
  two_pass  RowGather (CuPy RawKernel, 16-byte vectors) writes Xg[L, K, Npad], then the dense batched
            kernel with K columns: simple, costs one extra read and write of Xg.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from cutlass_wsp.errors import InputError
from cutlass_wsp.families.gather import (
    GATHER_FAMILY, GatherGemm, GatherProblem, Launches, RowGather, check_device_array, check_index_list,
    check_mask_matches, check_pruned, finish_uploads, gather_desc, pad_columns_with_zeros,
    padded_global_index, padded_k,
)
from cutlass_wsp.families.wsp_r import resolve_arch
from cutlass_wsp.kernels.description import KernelDesc
from cutlass_wsp.problem import BatchProblem

MODES = ("fused", "two_pass")


@dataclass(frozen=True, eq=False)
class ColumnLayout:
    """Kept columns of every W_i, checked, and the padded compact forms the kernels read."""

    L: int
    n: int
    c: int
    cols: tuple[np.ndarray, ...]          # int32, strictly ascending, in [0, c), non-empty
    compact: tuple[np.ndarray, ...]       # W_i[:, cols_i], [n, c_i]

    @property
    def counts(self) -> np.ndarray:
        return np.array([len(k) for k in self.cols], dtype=np.int64)

    def K(self, alignment: int) -> int:
        """Columns per position after padding: max c_i rounded up to `alignment`."""
        return padded_k(int(self.counts.max()), alignment)

    def global_index(self, K: int) -> np.ndarray:
        """int32 [L, K]: rows of X_flat[L*c, N] that position i multiplies (pads repeat the last)."""
        return padded_global_index(self.cols, [i * self.c for i in range(self.L)], K)

    def padded_weights(self, K: int) -> np.ndarray:
        """[L, n, K]: compact weights with zero pad columns."""
        return np.stack([pad_columns_with_zeros(np.asarray(w), K) for w in self.compact])


def column_layout(pruned: Any) -> ColumnLayout:
    """Check a WSP-C `Pruned` (cols, compact weights, mask) and return its layout."""
    L, n, c = check_pruned(pruned, ("wsp-c",), "WSP-C")
    cols = check_index_list(pruned.cols, L, c, "cols", "column")
    compact = list(pruned.compact_weights) if pruned.compact_weights is not None else []
    if len(compact) != L:
        raise InputError(f"{len(compact)} compact weight blocks for {L} positions",
                         "give one W_i[:, cols_i] per position")
    for i, (k, w) in enumerate(zip(cols, compact)):
        if np.shape(w) != (n, len(k)):
            raise InputError(f"compact_weights[{i}] has shape {np.shape(w)}, cols[{i}] keeps {len(k)} of {c} "
                             f"columns of {n} rows", "give compact_weights[i] = W_i[:, cols[i]]")
    expected = np.zeros((L, n, c), dtype=bool)
    for i, k in enumerate(cols):
        expected[i, :, k] = True
    check_mask_matches(np.asarray(pruned.mask), expected, "columns")
    return ColumnLayout(L=L, n=n, c=c, cols=tuple(cols), compact=tuple(np.asarray(w) for w in compact))


class WspC:
    """WSP-C on the GPU. Construct (host only: checks, layout, kernel choice), `setup()` (loads kernels,
    uploads weights and index once), then `run(X, Y)` or `prepare(X, Y)()`.
    X: EC2B input [L, c, N] (N = Npad); Y = output(): dense [L, n, N]."""

    def __init__(self, pruned: Any, dtype: str, N: int, *, arch: str | None = None, mode: str = "fused",
                 desc: KernelDesc | None = None):
        from cutlass_wsp.dtypes import get_dtype

        dt = get_dtype(dtype)
        if mode not in MODES:
            raise InputError(f"unknown WSP-C mode {mode!r}", f"use one of {', '.join(MODES)}")
        if int(N) < 1:
            raise InputError(f"N={N}", "pass the padded column count of X (Npad >= 1)")
        self.layout = column_layout(pruned)
        self.dtype, self.N, self.mode = dtype, int(N), mode
        self.arch = resolve_arch(arch)
        self.K = self.layout.K(dt.alignment)
        self.index = self.layout.global_index(self.K)
        self.desc = self._check_desc(desc) if desc is not None else self._default_desc()
        self._launcher: Any = None

    # ------------------------------------------------------------------------------ kernels
    @property
    def problem(self) -> BatchProblem:
        lay = self.layout
        return BatchProblem(L=lay.L, M=lay.n, N=self.N, K=self.K)

    @property
    def gather_problem(self) -> GatherProblem:
        lay = self.layout
        return GatherProblem(batches=lay.L, M=lay.n, N=self.N, K=self.K,
                             a_batch_stride=lay.n * self.K, d_batch_stride=lay.n * self.N)

    def _default_desc(self) -> KernelDesc:
        # the dense kernel tuned for this exact problem when the tuning cache has one (else the default)
        from cutlass_wsp.kernels.tuning import tuned_or_default

        if self.mode == "fused":
            return gather_desc(self.dtype, N=self.N, K=self.K)
        return tuned_or_default(self.problem, self.dtype, self.arch)

    def _check_desc(self, desc: KernelDesc) -> KernelDesc:
        want = GATHER_FAMILY if self.mode == "fused" else "dense"
        if desc.family != want or desc.dtype != self.dtype:
            raise InputError(f"WSP-C {self.mode} runs a {self.dtype} {want!r} kernel, got {desc.name}",
                             f"pass a KernelDesc(family={want!r}, dtype={self.dtype!r}) or none")
        return desc.validate()

    @property
    def kernel_descs(self) -> list[KernelDesc]:
        return [self.desc]

    # ------------------------------------------------------------------------------- device
    def setup(self, cache: Any = None) -> "WspC":
        import cupy

        from cutlass_wsp.families.dense import DenseBatch
        from cutlass_wsp.gpu.arrays import empty, from_host
        from cutlass_wsp.kernels.library import get_kernel

        lay = self.layout
        kernel = get_kernel(self.desc, cache)
        self._weights = from_host(np.ascontiguousarray(self.layout.padded_weights(self.K)), self.dtype)
        self._index = cupy.asarray(np.ascontiguousarray(self.index.reshape(-1)))
        if self.mode == "fused":
            self._launcher = GatherGemm(kernel, self.gather_problem, self._weights, self._index, x_rows=lay.L * lay.c)
        else:
            self._dense = DenseBatch(kernel)
            self._gather = RowGather()
            self._xg = empty((lay.L, self.K, self.N), self.dtype)
            self._launcher = True
        finish_uploads()
        return self

    def output(self) -> Any:
        from cutlass_wsp.gpu.arrays import empty

        return empty((self.layout.L, self.layout.n, self.N), self.dtype)

    def prepare(self, X: Any, Y: Any, *, stream: Any = None) -> Callable[[], None]:
        if self._launcher is None:
            raise InputError("WSP-C was not set up", "call setup() before run()/prepare()")
        lay = self.layout
        check_device_array("X", X, (lay.L, lay.c, self.N), self.dtype)
        check_device_array("Y", Y, (lay.L, lay.n, self.N), self.dtype)
        if self.mode == "fused":
            return Launches([self._launcher.prepare(X, Y, stream=stream)], (X, Y))
        gather = self._gather.prepare(X, self._xg, self._index, stream=stream)
        gemm = self._dense.prepare(self._weights, self._xg, Y, stream=stream)
        return Launches([gather, gemm], (X, Y))

    def run(self, X: Any, Y: Any, *, stream: Any = None) -> Any:
        self.prepare(X, Y, stream=stream)()
        return Y

    def to_dense_output(self, Y: Any) -> Any:
        """Y is already dense [L, n, N] (every row of Y_i is computed)."""
        return Y
