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
from cutlass_wsp.families.base import (ANY, BALANCED_ONLY, UNBALANCED_ONLY, CandidateMeasure, Cost, KernelFamily,
                                       PointContext, PrunedFamily, Serves, explicit_warp, instance_kernel)
from cutlass_wsp.families.dense import DENSE_KERNEL
from cutlass_wsp.families.gather import (
    Launches, Workspace, check_device_array, check_index_list, check_mask_matches, check_pruned,
    bound_stream_pointer, finish_uploads, kernel_step, require_family, same_device, sm_count, stream_object,
)
from cutlass_wsp.kernels.candidates import FEW_WAVES, MAX_ROW_WASTE, Recipe, adapt, ceil_div, wastes
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
                 desc: KernelDesc | None = None, tuned: Any = None):
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
        self.desc, self.tuned = instance_kernel(self, desc, tuned)
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
        return DENSE_KERNEL.name, self.problem

    def _default_desc(self) -> KernelDesc:
        """The untuned kernel: grouped_desc for grouped, else the dense default (manifest.select)."""
        if self.mode == "grouped":
            return grouped_desc(self.dtype, self.arch, N=self.N, K=self.layout.c)
        return DENSE_KERNEL.default(self.problem, self.dtype, self.arch)

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


# ---------------------------------------------------------------------------------------------
# The wsp_r_grouped kernel family: menu and measurement
# ---------------------------------------------------------------------------------------------

def group_row_waste(Ms: Iterable[int], tile_m: int) -> float:
    """Fraction of the rows that `tile_m`-row tiles cover over all groups that are empty."""
    Ms = list(Ms)
    covered = sum(ceil_div(m, tile_m) * tile_m for m in Ms)
    return 1.0 - sum(Ms) / covered


def group_tile_count(problem: GroupedTuneProblem, tile: tuple[int, int, int]) -> int:
    return sum(ceil_div(m, tile[0]) for m in problem.Ms) * ceil_div(problem.N, tile[1])


def _typical_rows(problem: GroupedTuneProblem) -> int:
    """The median group's rows (what a cluster along M spans in most groups)."""
    Ms = sorted(problem.Ms)
    return Ms[len(Ms) // 2]


def _grouped_sm90_recipes(problem: GroupedTuneProblem, sm_count: int) -> list[Recipe]:
    """Group i is M_i x Npad x c: memory-bound on X_i like the dense batch, but M_i differ, so row waste
    is counted over all groups. 64-row ping-pong tiles waste least on small or odd M_i; 128/256-row
    tiles read X_i fewer times where the M_i allow; tile K 128 halves short K loops; 2x1 clusters
    multicast X_i to two M-neighbours where most groups span two tile rows (ping-pong 128x128 in 2x1
    is CUTLASS example 57's grouped configuration); few tiles: narrow 128x64 tiles."""
    pp = "tma_ws_pingpong"
    Ms, K = problem.Ms, problem.K
    fits = {tm: group_row_waste(Ms, tm) <= MAX_ROW_WASTE for tm in (128, 256)}
    out = [Recipe((64, 128, 64), pp), Recipe((64, 256, 64), pp)]
    if fits[128]:
        out += [Recipe((128, 256, 64)), Recipe((128, 128, 64), pp)]
    if fits[256]:
        out += [Recipe((256, 128, 64))]
    if K % 128 == 0:
        out += [Recipe((64, 128, 128), pp)] + ([Recipe((128, 128, 128), pp)] if fits[128] else [])
    rows = _typical_rows(problem)
    if rows >= 2 * 64:
        out += [Recipe((64, 128, 64), pp, cluster=(2, 1, 1))]
    if rows >= 2 * 128:
        out += [Recipe((128, 128, 64), pp, cluster=(2, 1, 1))]
    if group_tile_count(problem, (128, 128, 64)) < FEW_WAVES * sm_count:
        out += [Recipe((128, 64, 64)), Recipe((128, 64, 64), pp)]
    return out


def _grouped_sm80_recipes(problem: GroupedTuneProblem, base: KernelDesc, sm_count: int) -> list[Recipe]:
    """CUTLASS 2.x GemmGrouped (tf32, or under 16-byte alignment): the same tile-M reasoning; its
    problem visitor ignores the swizzle, and it has no clusters."""
    k = base.tile[2]
    out = [Recipe((64, 128, k)), Recipe((64, 256, k), warp=(64, 64, k))]
    if group_row_waste(problem.Ms, 128) <= MAX_ROW_WASTE:
        out += [Recipe((128, 256, k), warp=(64, 64, k))]
    if group_row_waste(problem.Ms, 256) <= MAX_ROW_WASTE:
        out += [Recipe((256, 128, k), warp=(64, 64, k))]
    if group_tile_count(problem, (128, 128, k)) < FEW_WAVES * sm_count:
        out += [Recipe((128, 64, k)), Recipe((64, 64, k))]
    return out


def grouped_shape_allows(desc: KernelDesc, problem: GroupedTuneProblem) -> bool:
    """Tile N not far above N (64 always allowed); a cluster no larger than the median group's tile rows."""
    m, n, _ = desc.tile
    if n > 64 and wastes(problem.N, n):
        return False
    cm, cn, _ = desc.cluster
    return cm <= max(1, _typical_rows(problem) // m) and cn <= ceil_div(problem.N, n)


PP = "tma_ws_pingpong"


class GroupedKernel(KernelFamily):
    """`wsp_r_grouped` (templates/wsp_r_grouped_sm90.cu.j2, wsp_r_grouped_sm80.cu.j2): unbalanced WSP-R's
    one launch, tuned for its GroupedTuneProblem; the default is what WspR(mode="grouped") runs untuned."""

    name = GROUPED_FAMILY
    archs = ("sm90", "sm80")
    problem_type = GroupedTuneProblem
    limit = 12
    # H100 batch-32 winners (results/tune-families-h100.jsonl: 36 problems): 64x256 ping-pong won 27
    short_recipes = {"sm90": (Recipe((64, 256, 64), PP), Recipe((64, 128, 64), PP), Recipe((128, 256, 64)))}
    short_limit = 4
    bench_point = ("wsp-r", "cutlass-grouped", "unbalanced")

    def default(self, problem: GroupedTuneProblem, dtype: str, arch: str) -> KernelDesc:
        return grouped_desc(dtype, arch, N=problem.N, K=problem.K)

    def recipes(self, problem, dtype, arch, base, sm_count):
        if base.arch == "sm90":
            return _grouped_sm90_recipes(problem, sm_count)
        return _grouped_sm80_recipes(problem, base, sm_count)

    def adapt(self, recipe: Recipe, base: KernelDesc) -> KernelDesc | None:
        return adapt(recipe, base) if base.arch == "sm90" else explicit_warp(adapt(recipe, base))

    def allows(self, desc: KernelDesc, problem: GroupedTuneProblem) -> bool:
        return grouped_shape_allows(desc, problem)

    def check(self, desc: KernelDesc) -> KernelDesc:
        return check_grouped_desc(desc)

    def measure(self, dtype: str, cache: Any) -> "GroupedMeasure":
        return GroupedMeasure(dtype, cache)


class GroupedMeasure(CandidateMeasure):
    """Unbalanced WSP-R (grouped): fresh random packed weights A[sum M_i, K] and X[L, K, N], a poisoned
    compact D[L, max M_i, N]; each group's M_i rows are checked against fp32 cuBLAS of A_i . X_i (its
    pad rows are never written and not compared)."""

    def __call__(self, problem: GroupedTuneProblem, desc: KernelDesc, budget_s: float):
        from cutlass_wsp.gpu import arrays
        from cutlass_wsp.gpu.harness import Check

        Ms, L, M, N, K = problem.Ms, problem.L, problem.M, problem.N, problem.K
        lib = self.load(desc)
        A = arrays.random((sum(Ms), K), self.dtype)
        X = arrays.random((L, K, N), self.dtype)
        D = arrays.empty((L, M, N), self.dtype)
        grouped = GroupedRows(lib, Ms, K=K, N=N, weights=A)
        launch = grouped.prepare(X, D)

        def reference():
            W = arrays.zeros((L, M, K), self.dtype)                  # A's groups, zero pad rows
            for i, (start, m) in enumerate(zip(grouped.offsets, Ms)):
                W[i, :m] = A[start:start + m]
            ref = self.reference(W, X)
            return [ref[i:i + 1, :m] for i, m in enumerate(Ms)]

        checks = [Check(self.dtype, f"{desc.name} group {i}", shape=(m, N, K), K=K) for i, m in enumerate(Ms)]
        return self.run(desc, launch, outputs=D, result=lambda: [D[i:i + 1, :m] for i, m in enumerate(Ms)],
                        reference=reference, check=checks, budget_s=budget_s)


GROUPED_KERNEL = GroupedKernel()


# ---------------------------------------------------------------------------------------------
# The sweep: wsp-r points, and the row-pruned floor
# ---------------------------------------------------------------------------------------------

def rows_cost(problem: BatchProblem, dt: Any, kept_rows: Any) -> Cost:
    """WSP-R / FP: position i keeps kept_rows[i] of W_i's M rows; reads all of X_i, writes n_i rows."""
    m = np.asarray(kept_rows, dtype=np.float64)
    N, K, s = problem.N, problem.K, dt.itemsize
    return Cost(float(2 * m.sum() * N * K), float(s * (m.sum() * K + len(m) * K * N + m.sum() * N)))


class WspRFamily(PrunedFamily):
    name = "wsp_r"
    description = "WSP-R: each W_i keeps its own rows; batched, padded or grouped launches"
    kernels = (GROUPED_KERNEL,)
    compact_rows = True
    serves = (
        Serves("wsp-r", "cutlass", BALANCED_ONLY, mode="batched",
               description="CUTLASS batched GEMM: one shape for all p² positions"),
        Serves("wsp-r", "cutlass-grouped", ANY, mode="grouped",
               description="CUTLASS grouped GEMM: one problem per position, shapes may differ"),
        Serves("wsp-r", "cutlass-padded", UNBALANCED_ONLY, mode="padded",
               description="CUTLASS batched GEMM on weights padded to the largest position (the straggler case)"),
    )

    def instance(self, ctx: PointContext) -> WspR:
        return WspR(ctx.pruned, ctx.dt.name, ctx.Npad, arch=ctx.arch, mode=self.serving(ctx.point).mode,
                    tuned=ctx.tuned)

    def cost(self, ctx: PointContext) -> Cost:
        return rows_cost(ctx.problem, ctx.dt, ctx.pruned.kept_per_position)


FAMILY = WspRFamily()
