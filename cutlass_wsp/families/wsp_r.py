"""WSP-R (row pruning): W_i keeps n_i of its n rows, so Y_i has n_i rows worth computing.

Output convention (every mode): a COMPACT Yc[L, M, Npad] with M = max n_i, plus `row_index` int32
[L, M]: Yc[i, j] is row row_index[i, j] of the dense Y_i for j < n_i; row_index[i, j] = -1 marks a pad
row (not a result; zero in 'padded' mode, never written in 'grouped' mode). Rows of Y_i that W_i does
not keep are zero, so the output transform takes the compact rows plus the index map; to_dense_output
scatters Yc into a dense Y[L, n, Npad] for verification.

Modes (one launch each):
  batched  every n_i equal (balanced / BWSP): the dense batched kernel with M = n'.
  padded   unequal n_i: the dense batched kernel with M = max n_i; compact weights get zero pad rows.
  grouped  unequal n_i: a grouped GEMM, group i has M_i = n_i (templates/wsp_r_grouped_<arch>.cu.j2):
           sm90 CUTLASS 3.x ptr-array (fp16, bf16), sm80 CUTLASS 2.x GemmGrouped (fp16, bf16, tf32;
           also runs on sm90, and serves sm90 tf32, which the 3.x grouped builder cannot build with a
           row-major B).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from cutlass_wsp.errors import InputError, Unsupported
from cutlass_wsp.families.gather import (
    Launches, Workspace, check_device_array, check_index_list, check_mask_matches, check_pruned,
    bound_stream_pointer, finish_uploads, kernel_step, require_family, same_device, sm_count, stream_object,
)
from cutlass_wsp.kernels.description import ARCHS, KernelDesc, default_desc
from cutlass_wsp.kernels.library import make_args
from cutlass_wsp.problem import BatchProblem, GroupedTuneProblem

MODES = ("auto", "batched", "padded", "grouped")
GROUPED_FAMILY = "wsp_r_grouped"
SM90_GROUPED_SCHEDULES = ("tma_ws_cooperative", "tma_ws_pingpong")


# ---------------------------------------------------------------------------------------------
# Host layout (numpy)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class RowLayout:
    """Kept rows of every W_i, checked, and the compact forms the kernels read."""

    L: int
    n: int
    c: int
    rows: tuple[np.ndarray, ...]          # int32, strictly ascending, in [0, n), non-empty
    compact: tuple[np.ndarray, ...]       # W_i[rows_i], [n_i, c]

    @property
    def counts(self) -> np.ndarray:
        return np.array([len(r) for r in self.rows], dtype=np.int64)

    @property
    def M(self) -> int:
        """Rows per position of the compact output: max n_i."""
        return int(self.counts.max())

    @property
    def is_balanced(self) -> bool:
        return bool((self.counts == self.counts[0]).all())

    def row_index(self, M: int | None = None) -> np.ndarray:
        """int32 [L, M]: dense row of each compact row, -1 for pad rows."""
        M = self.M if M is None else M
        out = np.full((self.L, M), -1, dtype=np.int32)
        for i, r in enumerate(self.rows):
            out[i, : len(r)] = r
        return out

    def padded_weights(self, M: int | None = None) -> np.ndarray:
        """[L, M, c]: compact weights with zero pad rows (their output rows are 0)."""
        M = self.M if M is None else M
        dt = np.result_type(*self.compact)
        out = np.zeros((self.L, M, self.c), dtype=dt)
        for i, w in enumerate(self.compact):
            out[i, : w.shape[0]] = w
        return out

    def row_offsets(self) -> np.ndarray:
        """int64 [L]: first row of W_i's compact block in packed_weights()."""
        return np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)

    def packed_weights(self) -> np.ndarray:
        """[sum n_i, c]: the compact weights back to back (grouped mode; no pad rows)."""
        return np.concatenate(self.compact, axis=0)


def row_layout(pruned: Any, patterns: tuple[str, ...] = ("wsp-r",), family: str = "WSP-R") -> RowLayout:
    """Check a row-pruned `Pruned` (rows, compact weights, mask) and return its layout."""
    L, n, c = check_pruned(pruned, patterns, family)
    rows = check_index_list(pruned.rows, L, n, "rows", "row")
    compact = list(pruned.compact_weights) if pruned.compact_weights is not None else []
    if len(compact) != L:
        raise InputError(f"{len(compact)} compact weight blocks for {L} positions", "give one W_i[rows_i] per position")
    for i, (r, w) in enumerate(zip(rows, compact)):
        if np.shape(w) != (len(r), c):
            raise InputError(f"compact_weights[{i}] has shape {np.shape(w)}, rows[{i}] keeps {len(r)} rows of {c}",
                             "give compact_weights[i] = W_i[rows[i]]")
    expected = np.zeros((L, n, c), dtype=bool)
    for i, r in enumerate(rows):
        expected[i, r, :] = True
    check_mask_matches(np.asarray(pruned.mask), expected, "rows")
    return RowLayout(L=L, n=n, c=c, rows=tuple(rows), compact=tuple(np.asarray(w) for w in compact))


def scatter_rows(Yc: Any, row_index: np.ndarray, n: int) -> Any:
    """Compact Yc[L, M, N] + row_index[L, M] -> dense Y[L, n, N] (numpy or cupy, Yc's dtype); rows that
    no compact row maps to are zero, pad rows (-1) are dropped."""
    from cutlass_wsp.gpu.arrays import array_module

    xp = array_module(Yc)
    L, M, N = (int(s) for s in Yc.shape)
    if row_index.shape != (L, M):
        raise InputError(f"row index {row_index.shape} does not match compact output {tuple(Yc.shape)}",
                         "pass the row_index of the family that wrote Yc")
    valid = row_index >= 0
    pos, j = np.nonzero(valid)
    src = pos * M + j
    dst = pos * n + row_index[valid].astype(np.int64)
    Y = xp.zeros((L, n, N), dtype=Yc.dtype)
    Y.reshape(L * n, N)[xp.asarray(dst)] = Yc.reshape(L * M, N)[xp.asarray(src)]
    return Y


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------

def check_grouped_desc(desc: KernelDesc) -> KernelDesc:
    """What the grouped templates can build, beyond KernelDesc.validate(): sm90 only with the TMA
    warp-specialized cooperative/pingpong schedules and a 16-bit dtype; sm80 ignores the swizzle."""
    desc.validate()
    if desc.family != GROUPED_FAMILY:
        raise Unsupported(f"kernel {desc.name} is not a {GROUPED_FAMILY} kernel", f"use family={GROUPED_FAMILY!r}")
    if desc.arch == "sm90":
        if desc.dtype == "tf32":
            raise Unsupported("sm90 grouped tf32 with a row-major B needs CUTLASS's register-sourced (RS) "
                              "mainloop, which its ptr-array builder supports only for mixed-input GEMMs",
                              "use the sm80 grouped kernel (runs on sm90 too) for tf32")
        ks = desc.resolved().kernel_schedule
        if ks not in SM90_GROUPED_SCHEDULES:
            raise Unsupported(f"sm90 grouped kernels have no {ks} schedule (CUTLASS's ptr-array kernels are TMA "
                              "warp-specialized)", f"use kernel_schedule in {SM90_GROUPED_SCHEDULES} and "
                              "16-byte alignment, or the sm80 grouped kernel")
    elif desc.swizzle != 1:
        raise Unsupported("CUTLASS 2.x grouped kernels ignore the threadblock swizzle", "leave swizzle at 1")
    return desc


def grouped_desc(dtype: str, arch: str, *, N: int, K: int, **overrides: Any) -> KernelDesc:
    """Default grouped kernel: sm90 ptr-array (TMA cooperative) where it can be built, else sm80
    GemmGrouped (tf32, or alignment under 16 bytes); alignment the widest N and K allow."""
    from cutlass_wsp.kernels.manifest import alignment_for

    align = alignment_for(dtype, N, K)
    itemsize = 4 if dtype == "tf32" else 2
    if arch == "sm90" and dtype != "tf32" and align * itemsize == 16:
        desc = default_desc(GROUPED_FAMILY, dtype, "sm90", **overrides)
    else:
        if arch not in ("sm90", "sm80"):
            raise Unsupported(f"unknown kernel arch {arch!r}", "use sm90 or sm80")
        desc = default_desc(GROUPED_FAMILY, dtype, "sm80", alignment=align, **overrides)
    return check_grouped_desc(desc)


def resolve_arch(arch: str | None) -> str:
    """The given kernel arch, or the one for this machine's GPU (sm90 on Hopper, sm80 on Ampere/Ada)."""
    if arch is not None:
        if arch not in ARCHS:
            raise Unsupported(f"unknown kernel arch {arch!r}", f"use one of {', '.join(ARCHS)}")
        return arch
    from cutlass_wsp.gpu.device import compute_capability
    from cutlass_wsp.kernels.manifest import arch_for_device

    return arch_for_device(compute_capability())


# ---------------------------------------------------------------------------------------------
# The family
# ---------------------------------------------------------------------------------------------

class WspR:
    """WSP-R on the GPU. Construct (host only: checks, layout, kernel choice), `setup()` (loads the
    kernels, uploads compact weights once), then `run(X, Yc)` or `prepare(X, Yc)()` per launch.

    X is the EC2B input [L, c, N] (N = Npad, C-contiguous, storage dtype); Yc = output() is [L, M, N]."""

    PATTERNS: tuple[str, ...] = ("wsp-r",)
    NAME = "WSP-R"

    def __init__(self, pruned: Any, dtype: str, N: int, *, arch: str | None = None, mode: str = "auto",
                 desc: KernelDesc | None = None):
        from cutlass_wsp.dtypes import get_dtype

        get_dtype(dtype)
        if mode not in MODES:
            raise InputError(f"unknown {self.NAME} mode {mode!r}", f"use one of {', '.join(MODES)}")
        if int(N) < 1:
            raise InputError(f"N={N}", "pass the padded column count of X (Npad >= 1)")
        self.layout = self._layout(pruned)
        self.dtype, self.N, self.arch = dtype, int(N), resolve_arch(arch)
        if mode == "auto":
            mode = "batched" if self.layout.is_balanced else "grouped"
        if mode == "batched" and not self.layout.is_balanced:
            counts = self.layout.counts
            raise InputError(f"{self.NAME} 'batched' needs equal kept rows per position, "
                             f"got {counts.min()}..{counts.max()}",
                             "use mode 'padded' or 'grouped' for unbalanced pruning")
        self.mode = mode
        self.M = self.layout.M
        self.row_index = self.layout.row_index()
        self.desc = self._check_desc(desc) if desc is not None else self._default_desc()
        self._impl: Any = None
        self._weights: Any = None

    def _layout(self, pruned: Any) -> RowLayout:
        return row_layout(pruned, self.PATTERNS, self.NAME)

    # ------------------------------------------------------------------------------ kernels
    @property
    def problem(self) -> BatchProblem:
        """The batched problem (batched/padded); grouped: the largest group."""
        lay = self.layout
        return BatchProblem(L=lay.L, M=self.M, N=self.N, K=lay.c)

    @property
    def tune_problem(self) -> tuple[str, BatchProblem | GroupedTuneProblem]:
        """(family, problem) under which the tuner searches and remembers this instance's kernel."""
        if self.mode == "grouped":
            return GROUPED_FAMILY, GroupedTuneProblem(tuple(self.layout.counts), self.N, self.layout.c)
        return "dense", self.problem

    def _default_desc(self) -> KernelDesc:
        # the kernel tuned for this exact problem when the tuning cache has one (else the untuned default)
        from cutlass_wsp.kernels.tuning import best_desc, tuned_or_default

        if self.mode == "grouped":
            family, problem = self.tune_problem
            tuned = best_desc(problem, self.dtype, self.arch, family=family)
            return tuned or grouped_desc(self.dtype, self.arch, N=self.N, K=self.layout.c)
        return tuned_or_default(self.problem, self.dtype, self.arch)

    def _check_desc(self, desc: KernelDesc) -> KernelDesc:
        want = GROUPED_FAMILY if self.mode == "grouped" else "dense"
        if desc.family != want or desc.dtype != self.dtype:
            raise InputError(f"{self.NAME} {self.mode} runs a {self.dtype} {want!r} kernel, got {desc.name}",
                             f"pass a KernelDesc(family={want!r}, dtype={self.dtype!r}) or none")
        return check_grouped_desc(desc) if want == GROUPED_FAMILY else desc.validate()

    @property
    def kernel_descs(self) -> list[KernelDesc]:
        """Every kernel this instance launches (compile them up front with KernelCache.compile_many)."""
        return [self.desc]

    # ------------------------------------------------------------------------------- device
    def setup(self, cache: Any = None) -> "WspR":
        """Load (compiling if needed) the kernel and upload the compact weights. Returns self."""
        from cutlass_wsp.families.dense import DenseBatch
        from cutlass_wsp.gpu.arrays import from_host
        from cutlass_wsp.kernels.library import get_kernel

        kernel = get_kernel(self.desc, cache)
        if self.mode == "grouped":
            weights = from_host(np.ascontiguousarray(self.layout.packed_weights()), self.dtype)
            self._impl = GroupedRows(kernel, self.layout.counts, K=self.layout.c, N=self.N, weights=weights, M=self.M)
        else:
            self._weights = from_host(np.ascontiguousarray(self.layout.padded_weights(self.M)), self.dtype)
            self._impl = DenseBatch(kernel)
        finish_uploads()
        return self

    def output(self) -> Any:
        """A new (uninitialised) compact output Yc[L, M, N] in the storage dtype."""
        from cutlass_wsp.gpu.arrays import empty

        return empty((self.layout.L, self.M, self.N), self.dtype)

    def prepare(self, X: Any, Yc: Any, *, stream: Any = None) -> Callable[[], None]:
        """Check X and Yc, return a launch-only callable (for timing loops and CUDA graphs)."""
        if self._impl is None:
            raise InputError(f"{self.NAME} was not set up", "call setup() before run()/prepare()")
        lay = self.layout
        check_device_array("X", X, (lay.L, lay.c, self.N), self.dtype)
        check_device_array("Yc", Yc, (lay.L, self.M, self.N), self.dtype)
        if self.mode == "grouped":
            return self._impl.prepare(X, Yc, stream=stream)
        return self._impl.prepare(self._weights, X, Yc, stream=stream)

    def run(self, X: Any, Yc: Any, *, stream: Any = None) -> Any:
        self.prepare(X, Yc, stream=stream)()
        return Yc

    def to_dense_output(self, Yc: Any) -> Any:
        """Dense Y[L, n, N] from the compact output (kept rows placed, other rows zero)."""
        return scatter_rows(Yc, self.row_index, self.layout.n)


class GroupedRows:
    """Launches the grouped kernel: group i = (M = counts[i], N, K), A_i = rows offsets[i] .. of the
    packed weights A[sum counts, K] (device), B_i = X[i], D_i = the first counts[i] rows of D[i]
    (D = [L, M, N], M >= max counts). Problem sizes go up once; the pointer tables depend on X and D
    and are built in prepare(). WSP-R passes its compact weights; the tuner passes random ones."""

    def __init__(self, kernel: Any, counts: Any, *, K: int, N: int, weights: Any, M: int | None = None):
        import cupy

        self.desc = require_family(kernel, GROUPED_FAMILY)
        self.kernel = kernel
        counts = np.asarray(counts, dtype=np.int64)
        self.L, self.K, self.N = len(counts), int(K), int(N)
        self.M = int(counts.max()) if M is None else int(M)
        if tuple(weights.shape) != (int(counts.sum()), self.K):
            raise InputError(f"packed weights have shape {tuple(weights.shape)}, the groups need "
                             f"({int(counts.sum())}, {self.K})", "pass the compact rows of every W_i back to back")
        self.offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.host_sizes = np.ascontiguousarray(
            np.stack([counts, np.full(self.L, N), np.full(self.L, K)], axis=1).astype(np.int32))
        self.device_sizes = cupy.asarray(self.host_sizes)
        self.weights = weights
        self.lda = cupy.full(self.L, self.K, dtype=cupy.int64)
        self.ldb = cupy.full(self.L, self.N, dtype=cupy.int64)
        self.ldd = cupy.full(self.L, self.N, dtype=cupy.int64)
        self._workspace = Workspace()

    def pointer_tables(self, X: Any, Yc: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        item = X.dtype.itemsize
        g = np.arange(self.L, dtype=np.uint64)
        ptr_a = np.uint64(self.weights.data.ptr) + self.offsets.astype(np.uint64) * np.uint64(self.K * item)
        ptr_b = np.uint64(X.data.ptr) + g * np.uint64(self.K * self.N * item)
        ptr_d = np.uint64(Yc.data.ptr) + g * np.uint64(self.M * self.N * item)
        return ptr_a, ptr_b, ptr_d

    def prepare(self, X: Any, Yc: Any, *, stream: Any = None) -> Callable[[], None]:
        import cupy

        dev = same_device(X=X, Yc=Yc, W=self.weights)
        # Allocated on the launch stream: CuPy's pool reuses a freed block only in that stream's order,
        # so the tables stay intact until the kernel has read them even if the launcher is dropped.
        with cupy.cuda.Device(dev), stream_object(stream):
            ptr_a, ptr_b, ptr_d = (cupy.asarray(p) for p in self.pointer_tables(X, Yc))
        args = make_args(
            M=self.M, N=self.N, K=self.K, L=self.L, alpha=1.0, beta=0.0,
            group_count=self.L,
            host_problem_sizes=self.host_sizes.ctypes.data, device_problem_sizes=self.device_sizes.data.ptr,
            ptr_A=ptr_a.data.ptr, ptr_B=ptr_b.data.ptr, ptr_D=ptr_d.data.ptr,
            lda_array=self.lda.data.ptr, ldb_array=self.ldb.data.ptr, ldd_array=self.ldd.data.ptr,
            sm_count=sm_count(dev), device_id=dev)
        step = kernel_step(self.kernel, args, self._workspace, bound_stream_pointer(stream))
        # the launcher owns the pointer tables and the host sizes the ABI points into
        return Launches([step], (X, Yc, ptr_a, ptr_b, ptr_d, self.host_sizes, self.device_sizes, self.weights))
