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
  xform     the gather moves into the Winograd input transform: the compact transform
            (gpu/transforms.py, `channel_map()`) writes only X_i's kept rows, straight into
            Xc[L, K, Npad], and the GEMM batch is the plain dense kernel on Wc . Xc. No gather pass, no
            gather mainloop, and the transform writes (1 - ratio) fewer rows. `prepare` takes Xc;
            `compact_input(X)` builds it from a dense X (what the GEMM-batch benchmark feeds).
            Xc's pad rows (rows >= c_i of position i) are never written by the transform: they must be
            finite (zero-fill Xc once when allocating it), so that the zero weight columns add exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from cutlass_wsp.errors import InputError
from cutlass_wsp.families.base import (ANY, BALANCED_ONLY, UNBALANCED_ONLY, Cost, PointContext, PrunedFamily, Serves,
                                       instance_kernel)
from cutlass_wsp.families.dense import DENSE_KERNEL
from cutlass_wsp.families.gather import (
    GATHER_FAMILY, GatherGemm, GatherProblem, Launches, RowGather, check_device_array, check_index_list,
    check_mask_matches, check_pruned, finish_uploads, gather_desc, pad_columns_with_zeros,
    padded_global_index, padded_k,
)
from cutlass_wsp.families.wsp_r import resolve_arch
from cutlass_wsp.kernels.description import KernelDesc
from cutlass_wsp.problem import BatchProblem, GatherTuneProblem

MODES = ("fused", "two_pass", "xform")


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
    X: EC2B input [L, c, N] (N = Npad); xform mode: the compact Xc [L, K, N] (`input_shape`).
    Y = output(): dense [L, n, N]."""

    def __init__(self, pruned: Any, dtype: str, N: int, *, arch: str | None = None, mode: str = "fused",
                 desc: KernelDesc | None = None, tuned: Any = None):
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
        self.desc, self.tuned = instance_kernel(self, desc, tuned)
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

    @property
    def tune_problem(self) -> tuple[str, BatchProblem | GatherTuneProblem]:
        """(family, problem) under which the tuner searches and remembers this instance's kernel."""
        if self.mode == "fused":
            return GATHER_FAMILY, GatherTuneProblem(self.problem, self.layout.c)
        return DENSE_KERNEL.name, self.problem

    def _default_desc(self) -> KernelDesc:
        """The untuned kernel: gather_desc for fused, else the dense default (manifest.select)."""
        if self.mode == "fused":
            return gather_desc(self.dtype, N=self.N, K=self.K)
        return DENSE_KERNEL.default(self.problem, self.dtype, self.arch)

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
            if self.mode == "two_pass":     # xform's GEMM reads the transform's Xc: no Xg of its own
                self._xg = empty((lay.L, self.K, self.N), self.dtype)
            self._launcher = True
        self._gather = RowGather()
        finish_uploads()
        return self

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """What prepare() reads: X[L, c, N], or in xform mode the compact Xc[L, K, N]."""
        lay = self.layout
        return (lay.L, self.K if self.mode == "xform" else lay.c, self.N)

    def channel_map(self) -> Any:
        """The compact input transform's map for this layer (a `transforms.ChannelMap`, on the GPU):
        row k of Xc at position i takes channel cols_i[k], the column order of the compact weights."""
        from cutlass_wsp.gpu.transforms import InputTransform

        lay = self.layout
        return InputTransform.channel_map(lay.cols, lay.c, self.K)

    def compact_input(self, X: Any, Xc: Any = None) -> Any:
        """Xc[L, K, N] = X_i's kept rows (pad rows: copies of the last kept row, finite) from a dense
        X[L, c, N], on CuPy's current stream: the operand the transform would have written, for running
        the xform GEMM batch on a given X. Not part of the launch."""
        from cutlass_wsp.gpu.arrays import empty

        if self._launcher is None:
            raise InputError("WSP-C was not set up", "call setup() before compact_input()")
        lay = self.layout
        check_device_array("X", X, (lay.L, lay.c, self.N), self.dtype)
        if Xc is None:
            Xc = empty((lay.L, self.K, self.N), self.dtype)
        check_device_array("Xc", Xc, (lay.L, self.K, self.N), self.dtype)
        self._gather.prepare(X, Xc, self._index)()
        return Xc

    def output(self) -> Any:
        from cutlass_wsp.gpu.arrays import empty

        return empty((self.layout.L, self.layout.n, self.N), self.dtype)

    def prepare(self, X: Any, Y: Any, *, stream: Any = None) -> Callable[[], None]:
        if self._launcher is None:
            raise InputError("WSP-C was not set up", "call setup() before run()/prepare()")
        lay = self.layout
        if self.mode == "xform" and tuple(getattr(X, "shape", ())) != self.input_shape:
            raise InputError(f"WSP-C xform reads the compact Xc{self.input_shape} (K={self.K} kept rows per "
                             f"position), got an array of shape {tuple(getattr(X, 'shape', ()))}",
                             "pass the compact input transform's Xc (channel_map()) or compact_input(X)")
        check_device_array("Xc" if self.mode == "xform" else "X", X, self.input_shape, self.dtype)
        check_device_array("Y", Y, (lay.L, lay.n, self.N), self.dtype)
        # self too: the launches read this object's weights, index and gathered X through raw pointers
        if self.mode == "fused":
            return Launches([self._launcher.prepare(X, Y, stream=stream)], (X, Y, self))
        if self.mode == "xform":
            return Launches([self._dense.prepare(self._weights, X, Y, stream=stream)], (X, Y, self))
        gather = self._gather.prepare(X, self._xg, self._index, stream=stream)
        gemm = self._dense.prepare(self._weights, self._xg, Y, stream=stream)
        return Launches([gather, gemm], (X, Y, self))

    def run(self, X: Any, Y: Any, *, stream: Any = None) -> Any:
        self.prepare(X, Y, stream=stream)()
        return Y

    def to_dense_output(self, Y: Any) -> Any:
        """Y is already dense [L, n, N] (every row of Y_i is computed)."""
        return Y


def cols_cost(problem: BatchProblem, dt: Any, kept_cols: Any) -> Cost:
    """WSP-C: position i keeps kept_cols[i] of W_i's K columns; reads only those rows of X_i."""
    k = np.asarray(kept_cols, dtype=np.float64)
    M, N, s = problem.M, problem.N, dt.itemsize
    return Cost(float(2 * M * N * k.sum()), float(s * (M * k.sum() + k.sum() * N + len(k) * M * N)))


class WspCFamily(PrunedFamily):
    """WSP-C's three ways to gather: a pass of its own (wsp-c), the GEMM mainloop (wsp-c-fused cutlass,
    cutlass-padded: the gather_b kernel), the input transform (wsp-c-fused cutlass-xform). Unequal c_i
    run padded to max c_i: no grouped WSP-C kernel (docs/families.md). All share WSP-C's floor."""

    name = "wsp_c"
    description = "WSP-C: each W_i keeps its own columns; the rows of X they need are gathered"
    serves = (
        Serves("wsp-c", "cutlass", BALANCED_ONLY, mode="two_pass",
               description="CUTLASS batched GEMM: one shape for all p² positions"),
        Serves("wsp-c", "cutlass-padded", UNBALANCED_ONLY, mode="two_pass",
               description="CUTLASS batched GEMM on weights padded to the largest position (the straggler case)"),
        Serves("wsp-c-fused", "cutlass", BALANCED_ONLY, mode="fused"),
        Serves("wsp-c-fused", "cutlass-padded", UNBALANCED_ONLY, mode="fused"),
        Serves("wsp-c-fused", "cutlass-xform", ANY, mode="xform",
               description="WSP-C: the input transform writes only the kept rows of X (compact Xc), then the "
                           "dense CUTLASS batched GEMM on them: no gather pass, no gather mainloop"),
    )

    def instance(self, ctx: PointContext) -> WspC:
        return WspC(ctx.pruned, ctx.dt.name, ctx.Npad, arch=ctx.arch, mode=self.serving(ctx.point).mode,
                    tuned=ctx.tuned)

    def cost(self, ctx: PointContext) -> Cost:
        return cols_cost(ctx.problem, ctx.dt, ctx.pruned.kept_per_position)


FAMILY = WspCFamily()
