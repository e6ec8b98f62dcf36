"""Gathering X's rows by index, and the launch plumbing the pruned families share.

WSP-C and BCBP multiply compact weights by rows of X picked per position (or per row tile). Both
kernels here read X as one matrix X_flat[L*c, Npad] through GLOBAL row indices `i*c + column`, so a
single index array serves every batch entry:
  - two-pass: `RowGather` (a CuPy RawKernel, 16-byte vectors along N) writes Xg[r, :] = X_flat[idx[r], :],
    then the dense batch runs on Xg;
  - fused: `GatherGemm` runs the `gather_b` kernel (templates/gather_b_sm80.cu.j2), whose mainloop
    gathers B's rows through idx + batch * index_stride, with B's batch stride 0.
K (kept columns) is padded up to the kernel's alignment: pad entries repeat the batch's last index and
their weight columns are zero, so they add exactly 0 (X is finite).

Also here, because every pruned family needs them: index-array validation and device-array checks
(InputError before anything is launched) and the checked-launch helper.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from cutlass_wsp.errors import InputError, Unsupported
from cutlass_wsp.families.base import CandidateMeasure, Family, KernelFamily, explicit_warp
from cutlass_wsp.gpu.launch import (  # noqa: F401 (re-exported)
    bound_stream_pointer, launch_stream_pointer, sm_count, stream_object)
from cutlass_wsp.kernels.candidates import FEW_WAVES, Recipe, adapt, shape_allows, tile_m_choices, wastes, waves
from cutlass_wsp.kernels.description import KernelDesc, default_desc
from cutlass_wsp.kernels.library import KernelLibrary, WspArgs, make_args
from cutlass_wsp.problem import GatherTuneProblem, round_up

GATHER_FAMILY = "gather_b"


# ---------------------------------------------------------------------------------------------
# Index arrays (host, numpy)
# ---------------------------------------------------------------------------------------------

def check_sorted_indices(idx: Any, bound: int, where: str, unit: str) -> np.ndarray:
    """One kept-index array: 1-D integers, non-empty, strictly ascending, in [0, bound). int32 copy."""
    a = np.asarray(idx)
    if a.ndim != 1 or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
        raise InputError(f"{where} has shape {a.shape} and dtype {a.dtype}",
                         f"give the kept {unit}s as a 1-D integer array")
    if a.size == 0:
        raise InputError(f"{where} keeps no {unit}s: the pruning ratio leaves a GEMM with an empty extent",
                         f"use a lower ratio, so every W_i keeps at least one {unit}")
    if a.min() < 0 or a.max() >= bound:
        raise InputError(f"{where} has {unit} indices in [{a.min()}, {a.max()}], outside [0, {bound})",
                         f"give indices of existing {unit}s (0 .. {bound - 1})")
    if a.size > 1 and not (np.diff(a) > 0).all():
        raise InputError(f"{where} is not strictly ascending", f"sort the kept {unit} indices and drop repeats")
    return a.astype(np.int32)


def check_index_list(indices: Sequence[Any] | None, count: int, bound: int, name: str, unit: str) -> list[np.ndarray]:
    """`count` kept-index arrays (one per Winograd position), each checked by check_sorted_indices."""
    if indices is None or len(indices) != count:
        have = "none" if indices is None else len(indices)
        raise InputError(f"{name} has {have} index arrays for {count} Winograd positions",
                         f"give one array of kept {unit}s per position")
    return [check_sorted_indices(a, bound, f"{name}[{i}]", unit) for i, a in enumerate(indices)]


def check_pruned(pruned: Any, patterns: tuple[str, ...], family: str) -> tuple[int, int, int]:
    """A `Pruned` of one of `patterns` whose weights and mask agree in shape: (L, n, c)."""
    pattern = getattr(pruned, "pattern", None)
    if pattern not in patterns:
        raise InputError(f"{family} runs pruning pattern {' or '.join(patterns)}, got {pattern!r}",
                         f"prune with pattern={patterns[0]!r} (cutlass_wsp.pruning.prune)")
    W = np.asarray(pruned.weights)
    mask = np.asarray(pruned.mask)
    if W.ndim != 3:
        raise InputError(f"pruned weights have shape {W.shape}", "pass W[L, n, c]")
    if mask.shape != W.shape or mask.dtype != np.bool_:
        raise InputError(f"mask {mask.dtype}{mask.shape} does not match weights {W.shape}",
                         "give a boolean mask of the weights' shape (True = kept)")
    return W.shape  # type: ignore[return-value]


def check_mask_matches(mask: np.ndarray, expected: np.ndarray, what: str) -> None:
    if not np.array_equal(mask, expected):
        bad = np.argwhere(mask != expected)[0]
        raise InputError(f"mask disagrees with the kept {what} at position {bad[0]}, element {tuple(bad[1:])}",
                         f"build the mask and the {what} together (cutlass_wsp.pruning.prune does)")


def padded_global_index(local: Sequence[np.ndarray], base: Sequence[int], K: int) -> np.ndarray:
    """int32 [B, K]: entry b holds base[b] + local[b], padded to K by repeating its last index.

    `base[b]` is the first row of batch b's X_i in X_flat (i*c), so X_flat[idx[b, k]] = X_i[local[b][k]]."""
    B = len(local)
    out = np.empty((B, K), dtype=np.int64)
    for b, cols in enumerate(local):
        k = len(cols)
        if k > K:
            raise InputError(f"batch entry {b} keeps {k} indices, more than K={K}", "pass K >= the largest count")
        out[b, :k] = cols
        out[b, k:] = cols[-1]
        out[b] += int(base[b])
    if out.size and out.max() > np.iinfo(np.int32).max:
        raise Unsupported(f"row index {out.max()} does not fit the kernel's int32 index",
                          "split the batch: X has more than 2^31 rows")
    return out.astype(np.int32)


def random_global_index(L: int, c: int, K: int, rng: np.random.Generator) -> np.ndarray:
    """int32 [L, K]: per position one sorted random choice of min(K, c) of its c columns, as global rows
    of X_flat[L*c, N] (i*c + column) padded to K like padded_global_index (a realistic WSP-C index for
    timing a gather kernel without a pruned layer)."""
    kept = min(int(K), int(c))
    local = [np.sort(rng.choice(int(c), size=kept, replace=False)) for _ in range(int(L))]
    return padded_global_index(local, [i * int(c) for i in range(int(L))], int(K))


def pad_columns_with_zeros(w: np.ndarray, K: int) -> np.ndarray:
    """[..., k] -> [..., K] with zero columns appended (their products with pad rows of X are 0)."""
    k = w.shape[-1]
    out = np.zeros(w.shape[:-1] + (K,), dtype=w.dtype)
    out[..., :k] = w
    return out


def padded_k(k: int, alignment: int) -> int:
    """Kept-column count rounded up to the kernel's vector width (K must be a multiple of it)."""
    return round_up(int(k), int(alignment))


# ---------------------------------------------------------------------------------------------
# Device arrays and launches
# ---------------------------------------------------------------------------------------------

def check_device_array(name: str, a: Any, shape: tuple[int, ...], dtype_name: str) -> None:
    """A C-contiguous CuPy array of `shape` in the storage type of `dtype_name`, 16-byte aligned."""
    from cutlass_wsp.gpu.arrays import storage_dtype

    if not hasattr(a, "data") or not hasattr(a.data, "ptr") or not hasattr(a, "device"):
        raise InputError(f"{name} is a {type(a).__name__}, not a CuPy array",
                         "move it to the GPU with cutlass_wsp.gpu.arrays.from_host")
    want = storage_dtype(dtype_name)
    if a.dtype != want:
        raise InputError(f"{name} holds {a.dtype}, a {dtype_name} kernel reads {want}",
                         f"convert with cutlass_wsp.gpu.arrays.to_storage(..., '{dtype_name}')")
    if tuple(a.shape) != tuple(shape):
        raise InputError(f"{name} has shape {tuple(a.shape)}, expected {tuple(shape)}",
                         "use the EC2B layout: X[L, c, Npad]; outputs as the family's output() makes them")
    if not a.flags.c_contiguous:
        raise Unsupported(f"{name} {tuple(a.shape)} is not C-contiguous", f"pass cupy.ascontiguousarray({name})")
    if a.data.ptr % 16:
        raise Unsupported(f"{name} address {a.data.ptr:#x} is not 16-byte aligned",
                          "allocate it with cupy (allocations are 256-byte aligned), not as an offset view")


def same_device(**arrays: Any) -> int:
    devices = {int(a.device.id) for a in arrays.values()}
    if len(devices) != 1:
        raise InputError(f"{', '.join(arrays)} live on different GPUs {sorted(devices)}", "put them on one device")
    return devices.pop()


def finish_uploads() -> None:
    """Wait for setup()'s host-to-device copies: they run on CuPy's current stream and a launch on a
    non-blocking stream would not wait for them."""
    import cupy

    cupy.cuda.Device().synchronize()


class Workspace:
    """A kernel workspace kept between prepares (grown, never shrunk)."""

    def __init__(self) -> None:
        self._buf = None

    def get(self, nbytes: int, device_id: int):
        import cupy

        if nbytes <= 0:
            return None
        if self._buf is None or self._buf.nbytes < nbytes:
            with cupy.cuda.Device(device_id):
                self._buf = cupy.empty(nbytes, dtype=cupy.uint8)
        return self._buf


class Launches:
    """No-argument launcher: a fixed sequence of checked launches; holds every array it uses."""

    __slots__ = ("steps", "arrays")

    def __init__(self, steps: Sequence[Callable[[], None]], arrays: tuple):
        self.steps = tuple(steps)
        self.arrays = arrays

    def __call__(self) -> None:
        for step in self.steps:
            step()


def kernel_step(kernel: KernelLibrary, args: WspArgs, workspace: Workspace, stream_ptr: int | None
                ) -> Callable[[], None]:
    """Check `args` with the kernel's can_implement, size its workspace: a launch-only callable
    (`stream_ptr` None: CuPy's current stream when it is called)."""
    kernel.check(args)
    ws = workspace.get(kernel.workspace_size(args), int(args.device_id))

    def launch() -> None:
        kernel.run(args, ws, launch_stream_pointer(stream_ptr))

    return launch


def require_family(kernel: KernelLibrary, family: str) -> KernelDesc:
    if kernel.desc is None:
        raise InputError(f"kernel {kernel.name} was loaded without its description",
                         "load it with kernels.library.get_kernel(desc)")
    if kernel.desc.family != family:
        raise InputError(f"kernel {kernel.name} is a {kernel.desc.family!r} kernel, not {family!r}",
                         f"pick a kernel with KernelDesc(family={family!r})")
    return kernel.desc


# ---------------------------------------------------------------------------------------------
# Two-pass: the row gather kernel
# ---------------------------------------------------------------------------------------------

_ROW_GATHER_SOURCE = r"""
// dst[r, :] = src[index[r], :] for r < rows; rows are row_vecs vectors of V. Grid-stride in both axes.
template <typename V>
__device__ __forceinline__ void gather_rows(const V* __restrict__ src, V* __restrict__ dst,
                                            const int* __restrict__ index, long long rows, long long row_vecs) {
  for (long long r = blockIdx.y; r < rows; r += gridDim.y) {
    const V* s = src + (long long)__ldg(index + r) * row_vecs;
    V* d = dst + r * row_vecs;
    for (long long v = (long long)blockIdx.x * blockDim.x + threadIdx.x; v < row_vecs;
         v += (long long)gridDim.x * blockDim.x)
      d[v] = __ldg(s + v);
  }
}
#define WSP_GATHER(BYTES, V) \
  extern "C" __global__ void wsp_gather_rows_##BYTES(const V* s, V* d, const int* i, long long r, long long v) { \
    gather_rows(s, d, i, r, v); \
  }
WSP_GATHER(16, uint4)
WSP_GATHER(8, uint2)
WSP_GATHER(4, unsigned int)
WSP_GATHER(2, unsigned short)
"""

GATHER_THREADS = 256
MAX_GRID_Y = 65535


def gather_vector_bytes(row_bytes: int, *pointers: int) -> int:
    """Widest of 16, 8, 4, 2 bytes dividing the row size and every pointer."""
    for v in (16, 8, 4, 2):
        if row_bytes % v == 0 and all(p % v == 0 for p in pointers):
            return v
    raise Unsupported(f"rows of {row_bytes} bytes cannot be copied in 2-byte vectors", "pad N to Npad")


def gather_grid(rows: int, row_vecs: int, threads: int = GATHER_THREADS) -> tuple[int, int]:
    """(blocks along a row, blocks over rows): every vector of every row is covered by grid-striding."""
    return (max(1, min(-(-row_vecs // threads), 1 << 16)), max(1, min(rows, MAX_GRID_Y)))


@functools.lru_cache(maxsize=None)
def _row_gather_function(device_id: int, vec: int):
    """wsp_gather_rows_<vec>, built by NVRTC through the compile cache (as the transforms are)."""
    import cupy

    from cutlass_wsp.gpu.transforms import compile_module, load_function

    with cupy.cuda.Device(device_id):
        cc = cupy.cuda.Device(device_id).compute_capability
        path = compile_module(_ROW_GATHER_SOURCE, "wsp_gather_rows", int(cc), options=("--std=c++17",))
        return load_function(path, f"wsp_gather_rows_{vec}")


class RowGather:
    """Xg_flat[r, :] = X_flat[index[r], :] on the GPU, 16-byte vectors when the row size allows."""

    def prepare(self, src: Any, dst: Any, index: Any, *, stream: Any = None) -> Callable[[], None]:
        """src [R_in, N], dst [R_out, N] (any leading shape, C-contiguous, same dtype), index int32
        [R_out] device array with values in [0, R_in) (checked on the host when the family was set up)."""
        import cupy

        if src.dtype != dst.dtype or src.shape[-1] != dst.shape[-1]:
            raise InputError(f"gather: src {src.dtype}{tuple(src.shape)} and dst {dst.dtype}{tuple(dst.shape)} "
                             "differ in dtype or row length", "gather rows of one array into one like it")
        if not (src.flags.c_contiguous and dst.flags.c_contiguous and index.flags.c_contiguous):
            raise Unsupported("gather needs C-contiguous src, dst and index", "pass cupy.ascontiguousarray(...)")
        if index.dtype != cupy.int32:
            raise InputError(f"gather index is {index.dtype}", "pass an int32 index array")
        rows_out = dst.size // dst.shape[-1]
        if index.size != rows_out:
            raise InputError(f"gather index has {index.size} entries for {rows_out} output rows",
                             "give one source row per output row")
        row_bytes = dst.shape[-1] * dst.dtype.itemsize
        vec = gather_vector_bytes(row_bytes, src.data.ptr, dst.data.ptr)
        row_vecs = row_bytes // vec
        device_id = same_device(src=src, dst=dst, index=index)
        fn = _row_gather_function(device_id, vec)
        grid = gather_grid(rows_out, row_vecs)
        # An explicit stream is bound now; None follows CuPy's current stream at launch, as the CUTLASS
        # launches do, so both passes of a family share it.
        stream_obj = None if stream is None else stream_object(stream)
        args = (src, dst, index, np.int64(rows_out), np.int64(row_vecs))

        def launch() -> None:
            fn(grid, (GATHER_THREADS,), args, stream=stream_obj)

        return launch


# ---------------------------------------------------------------------------------------------
# Fused: the gather_b kernel
# ---------------------------------------------------------------------------------------------

def gather_desc(dtype: str, *, N: int, K: int, tile_m: int = 128, **overrides: Any) -> KernelDesc:
    """Default gather_b kernel: sm80 (CUTLASS 2.x; runs on sm80..sm90, there is no sm90 gather template),
    the widest alignment N and K allow, CTA tile M = tile_m (32/64/128; BCBP uses its row-tile height)."""
    from cutlass_wsp.kernels.manifest import alignment_for

    if tile_m not in (32, 64, 128, 256):
        raise Unsupported(f"gather tile M {tile_m}", "use 32, 64, 128 or 256")
    align = alignment_for(dtype, N, K)
    k = 32
    base = dict(alignment=align, tile=(tile_m, 128, k), warp=(max(tile_m // 2, 16), 64, k))
    base.update(overrides)
    return default_desc(GATHER_FAMILY, dtype, "sm80", **base)


def tile_m_for_rows(rows: int) -> int:
    """Smallest sm80 CTA tile M (32, 64, 128) covering `rows` output rows, 128 for more."""
    for m in (32, 64, 128):
        if rows <= m:
            return m
    return 128


@dataclass(frozen=True)
class GatherProblem:
    """One fused launch: batch b computes D_b[M, N] = A_b[M, K] . X_flat[index[b, :], :]."""

    batches: int
    M: int
    N: int
    K: int
    a_batch_stride: int      # elements between A_b and A_{b+1} (A_b row-major, lda = K)
    d_batch_stride: int      # elements between D_b and D_{b+1} (D_b row-major, ldd = N)


class GatherGemm:
    """Runs a compiled gather_b kernel: A (compact weights), X (EC2B input) and the global index are
    fixed at construction; prepare(X, D) checks and returns a launch-only callable."""

    def __init__(self, kernel: KernelLibrary, problem: GatherProblem, A: Any, index: Any, x_rows: int):
        self.desc = require_family(kernel, GATHER_FAMILY)
        self.kernel = kernel
        self.problem = problem
        self.A, self.index, self.x_rows = A, index, x_rows
        self._workspace = Workspace()

    def arguments(self, X: Any, D: Any) -> WspArgs:
        p = self.problem
        if X.size != self.x_rows * p.N or X.shape[-1] != p.N:
            raise InputError(f"X has shape {tuple(X.shape)}; this launch reads {self.x_rows} rows of {p.N}",
                             "pass X[L, c, Npad] as set up")
        if D.size != p.batches * p.M * p.N:
            raise InputError(f"output has {D.size} elements, this launch writes {p.batches}x{p.M}x{p.N}",
                             "allocate it with the family's output()")
        dev = same_device(A=self.A, X=X, D=D, index=self.index)
        return make_args(M=p.M, N=p.N, K=p.K, L=p.batches, A=self.A.data.ptr, B=X.data.ptr, D=D.data.ptr,
                         lda=p.K, ldb=p.N, ldd=p.N, batch_stride_A=p.a_batch_stride, batch_stride_B=0,
                         batch_stride_D=p.d_batch_stride, alpha=1.0, beta=0.0,
                         gather_index=self.index.data.ptr, index_stride=p.K,
                         sm_count=sm_count(dev), device_id=dev)

    def prepare(self, X: Any, D: Any, *, stream: Any = None) -> Callable[[], None]:
        args = self.arguments(X, D)
        return kernel_step(self.kernel, args, self._workspace, bound_stream_pointer(stream))


# ---------------------------------------------------------------------------------------------
# The gather_b kernel family: menu and measurement (fused WSP-C's launch)
# ---------------------------------------------------------------------------------------------

DEEP_STAGES = 6                         # sm80 stages beyond the auto 96 KB budget (H100/A100 have room)
PRUNED_MAX_CANDIDATES = 12              # the pruned families' menus: at most this many per problem


def _gather_recipes(problem: GatherTuneProblem, base: KernelDesc, sm_count: int) -> list[Recipe]:
    """The gather kernel is memory-bound on X (B: K gathered rows of Npad columns, 16-byte cp.async per
    row segment): tile M up to M reads X once; deeper pipelines keep more gathered rows in flight (the
    index load sits in front of every row's copy); a swizzle runs N-neighbours of one row segment
    together when M spans several tile rows; tile K 64 halves the k-iterations of long K loops."""
    M, K = problem.M, problem.K
    k = base.tile[2]                                   # 32: 64 bytes of fp16/bf16 (128 of tf32)
    k2 = 2 * k if 2 * k * base.itemsize <= 128 and not wastes(K, 2 * k) else None
    tms = tile_m_choices(M)
    out: list[Recipe] = []
    for tm in tms:
        if tm == 256:
            out += [Recipe((256, 128, k), warp=(64, 64, k)),
                    Recipe((256, 128, k), warp=(64, 64, k), stages=DEEP_STAGES)]
        elif tm == 128:
            out += [Recipe((128, 128, k), stages=DEEP_STAGES), Recipe((128, 256, k), warp=(64, 64, k))]
            if k2:
                out += [Recipe((128, 128, k2), warp=(64, 64, k2))]
            if M > 128:
                out += [Recipe((128, 128, k), swizzle=2), Recipe((128, 128, k), swizzle=4)]
        else:
            out += [Recipe((64, 128, k)), Recipe((64, 256, k), warp=(64, 64, k)),
                    Recipe((64, 128, k), stages=DEEP_STAGES)]
            if k2:
                out += [Recipe((64, 128, k2))]
    # Few tiles (late layers, small N): narrower tiles put more CTAs on the SMs (64x32 warps: 4 or 8
    # warps, not 2x2 warps of 128 rows).
    if waves(problem, (tms[0], 128, k), sm_count) < FEW_WAVES:
        out += [Recipe((tms[0], 64, k), warp=(min(tms[0], 64), 32, k))]
    return out


class GatherKernel(KernelFamily):
    """`gather_b` (templates/gather_b_sm80.cu.j2: CUTLASS 2.x, sm80 code that also runs on sm90). Tuned
    for fused WSP-C's launch (GatherTuneProblem); BCBP's row-tile launches run the default."""

    name = GATHER_FAMILY
    archs = ("sm80",)
    problem_type = GatherTuneProblem
    limit = PRUNED_MAX_CANDIDATES
    # H100 batch-32 winners (results/tune-families-h100.jsonl: 36 problems): 64x256 won every M = 64
    # shape, swizzle 2 most M > 128 ones (by little); the default the rest
    short_recipes = {"sm90": (Recipe((64, 256, 32), warp=(64, 64, 32)), Recipe((128, 128, 32), swizzle=2))}
    short_limit = 3
    bench_point = ("wsp-c-fused", "cutlass", "balanced")

    def default(self, problem: GatherTuneProblem, dtype: str, arch: str) -> KernelDesc:
        return gather_desc(dtype, N=problem.N, K=problem.K)    # what WspC(mode="fused") runs untuned

    def recipes(self, problem, dtype, arch, base, sm_count):
        return _gather_recipes(problem, base, sm_count)

    def adapt(self, recipe: Recipe, base: KernelDesc) -> KernelDesc | None:
        return explicit_warp(adapt(recipe, base))

    def allows(self, desc: KernelDesc, problem: GatherTuneProblem) -> bool:
        return shape_allows(desc, problem)

    def measure(self, dtype: str, cache: Any) -> "GatherMeasure":
        return GatherMeasure(dtype, cache)


class GatherMeasure(CandidateMeasure):
    """Fused WSP-C (gather_b): per position one sorted random choice of K of the c rows of X_i (global
    rows i*c + column, as ColumnLayout.global_index), fresh random A[L, M, K] and X[L, c, N], a
    poisoned D; the reference is fp32 cuBLAS of A times the gathered rows of X."""

    def __call__(self, problem: GatherTuneProblem, desc: KernelDesc, budget_s: float):
        import cupy

        from cutlass_wsp.gpu import arrays
        from cutlass_wsp.gpu.harness import Check

        L, M, N, K, c = problem.L, problem.M, problem.N, problem.K, problem.c
        lib = self.load(desc)
        index = cupy.asarray(random_global_index(L, c, K, np.random.default_rng()).reshape(-1))
        A = arrays.random((L, M, K), self.dtype)
        X = arrays.random((L, c, N), self.dtype)
        D = arrays.empty((L, M, N), self.dtype)
        gemm = GatherGemm(lib, GatherProblem(L, M, N, K, a_batch_stride=M * K, d_batch_stride=M * N), A, index,
                          x_rows=L * c)
        launch = gemm.prepare(X, D)

        def reference():
            Xg = X.reshape(L * c, N)[index].reshape(L, K, N)          # the rows the kernel gathers
            return self.reference(A, Xg)

        return self.run(desc, launch, outputs=D, reference=reference,
                        check=Check(self.dtype, desc.name, shape=(L, M, N, K), K=K), budget_s=budget_s)


GATHER_KERNEL = GatherKernel()


class GatherFamily(Family):
    """Owns the gather_b kernel and the row gather; WSP-C (fused) and BCBP serve the points."""

    name = "gather"
    description = "gather X's rows by index: the gather_b GEMM kernel and the two-pass row gather"
    kernels = (GATHER_KERNEL,)


FAMILY = GatherFamily()
