"""cuSPARSELt called through ctypes: the 2:4 GEMM batch Y_i = W_i(2:4) · X_i, one strided-batched call.

UNTESTED ON A GPU. Written from the cuSPARSELt documentation (docs.nvidia.com/cuda/cusparselt:
"Getting Started" workflow, "cuSPARSELt Functions", "cuSPARSELt Data Types", release notes of v0.8) and
never run: the CPU tests check only what needs no library (`batch_descriptors`, the argument checks).
Nothing here loads a library or CuPy at import; `CusparseLtBatched(...)` does, lazily.

The call order is the documented workflow:
  1. cusparseLtInit(handle)
  2. cusparseLtStructuredDescriptorInit(A: W, M×K, 2:4) and cusparseLtDenseDescriptorInit(B: X, C/D: Y),
     then cusparseLtMatDescSetAttribute(NUM_BATCHES: int32 L, BATCH_STRIDE: int64 elements) on each
  3. cusparseLtMatmulDescriptorInit(opA = opB = NON_TRANSPOSE, compute = CUSPARSE_COMPUTE_32F)
  4. cusparseLtMatmulAlgSelectionInit(CUSPARSELT_MATMUL_ALG_DEFAULT)
  5. cusparseLtMatmulPlanInit, cusparseLtMatmulGetWorkspace
  6. cusparseLtSpMMAPruneCheck (the host-made 2:4 mask, on the device), cusparseLtSpMMACompressedSize,
     cusparseLtSpMMACompress (the compressed layout is the library's own, see semi_structured.py)
  7. cusparseLtMatmul(alpha, A_compressed, B, beta, C, D, workspace, streams, 1) per run
  8. destroy: matrix descriptors, alg selection (v0.8+), plan, handle.
Enum values are those of cuSPARSELt >= 0.6 (cusparseComputeType: 32I = 0, 16F = 1, 32F = 2; earlier
releases numbered it differently), so the version is checked first (cusparseLtGetProperty).
The library comes from cuda.pathfinder (`load_nvidia_dynamic_lib("cusparseLt")`: pip
nvidia-cusparselt-cu13 or a CUDA install). Opaque structs are allocated generously (the header's sizes
changed between releases: 1024 bytes, 11024 bytes) and 16-byte aligned.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

from cutlass_wsp.errors import GpuUnavailable, InputError, KernelError, Unsupported

# cuSPARSELt / cuSPARSE / CUDA enums (cusparseLt.h >= 0.6, cusparse.h, library_types.h)
CUSPARSE_ORDER_ROW = 2
CUSPARSE_OPERATION_NON_TRANSPOSE = 0
CUSPARSELT_SPARSITY_50_PERCENT = 0
CUSPARSELT_MAT_NUM_BATCHES, CUSPARSELT_MAT_BATCH_STRIDE = 0, 1
CUSPARSE_COMPUTE_32F = 2
CUSPARSELT_MATMUL_ALG_DEFAULT = 0
CUSPARSELT_PRUNE_SPMMA_TILE = 0
CUDA_R_16F, CUDA_R_16BF = 2, 14
MAJOR_VERSION, MINOR_VERSION = 0, 1          # libraryPropertyType
MIN_VERSION = (0, 6)
ALIGNMENT_BYTES = 16
OPAQUE_BYTES = 16384                          # >= every released sizeof(cusparseLt*_t)

_VALUE_TYPES = {"fp16": (CUDA_R_16F, 2), "bf16": (CUDA_R_16BF, 2)}


@dataclass(frozen=True)
class MatrixDesc:
    """One row-major matrix of the batch as cuSPARSELt describes it (extents and strides in elements)."""

    rows: int
    cols: int
    ld: int
    batch_stride: int
    structured: bool = False


@dataclass(frozen=True)
class BatchDescriptors:
    """The three descriptors and types of Y[L, M, ldy] = W[L, M, K](2:4) · X[L, K, N], all row-major and
    contiguous per batch (EC2B: W[L, n, c], X[L, c, Npad], Y[L, n, Npad])."""

    L: int
    M: int
    K: int
    N: int
    dtype: str
    value_type: int
    A: MatrixDesc
    B: MatrixDesc
    C: MatrixDesc

    @property
    def compressed_values(self) -> int:
        """Kept values of A per batch entry (M·K/2); the library's compressed buffer adds its metadata and
        is sized by cusparseLtSpMMACompressedSize, not by this."""
        return self.M * self.K // 2


def _positive_int(value, name: str) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        v = 0
    if v < 1 or v != value:
        raise InputError(f"{name}={value!r}", f"{name} must be a positive integer")
    return v


def batch_descriptors(L: int, M: int, K: int, N: int, *, dtype: str = "fp16", y_cols: int | None = None) -> BatchDescriptors:
    """Check the shapes of a 2:4 GEMM batch and work out its descriptors (no library needed).

    K (channels, the 2:4 axis) must be a multiple of 4; every row (K of W, N of X, y_cols of Y) must be a
    whole number of 16-byte vectors (the alignment passed to the descriptors). fp16 and bf16 only: for
    32-bit types CUSPARSELT_SPARSITY_50_PERCENT means 1:2, not 2:4."""
    L, M, K, N = (_positive_int(v, name) for v, name in ((L, "L"), (M, "M"), (K, "K"), (N, "N")))
    if dtype not in _VALUE_TYPES:
        raise Unsupported(f"2:4 through cuSPARSELt needs a 16-bit dtype, got {dtype!r}",
                          "use fp16 or bf16 (for float, cuSPARSELt's 50% sparsity is 1:2)")
    value_type, itemsize = _VALUE_TYPES[dtype]
    ldy = N if y_cols is None else _positive_int(y_cols, "y_cols")
    if ldy < N:
        raise InputError(f"Y rows hold {ldy} columns, fewer than X's N={N}", "allocate Y[L, M, >= N]")
    if K % 4:
        raise InputError(f"K={K} is not a multiple of 4: 2:4 groups run along K", "prune layers with c divisible by 4")
    per_vector = ALIGNMENT_BYTES // itemsize
    for name, ld in (("K (W's row)", K), ("N (X's row)", N), ("Y's row", ldy)):
        if ld % per_vector:
            raise InputError(f"{name} = {ld} elements is not a multiple of {per_vector} ({ALIGNMENT_BYTES} bytes)",
                             "pad the row to 16 bytes (EC2B buffers pad N to Npad)")
    return BatchDescriptors(
        L=L, M=M, K=K, N=N, dtype=dtype, value_type=value_type,
        A=MatrixDesc(M, K, K, M * K, structured=True),
        B=MatrixDesc(K, N, N, K * N),
        C=MatrixDesc(M, N, ldy, M * ldy))


# ---------------------------------------------------------------------------------------------
# The library (lazy)
# ---------------------------------------------------------------------------------------------

def _opaque() -> ctypes.Array:
    # ctypes allocates with malloc: 16-byte aligned on the platforms cuSPARSELt supports
    return (ctypes.c_uint8 * OPAQUE_BYTES)()


def load_library() -> ctypes.CDLL:
    """libcusparseLt via cuda.pathfinder; GpuUnavailable with the fix when it is not installed."""
    try:
        from cuda import pathfinder  # type: ignore[import-not-found]
    except ImportError:
        raise GpuUnavailable("cuda-pathfinder is not installed", "pip install cuda-pathfinder") from None
    try:
        found = pathfinder.load_nvidia_dynamic_lib("cusparseLt")
    except Exception as e:  # DynamicLibNotFoundError and friends
        raise GpuUnavailable(f"libcusparseLt not found ({type(e).__name__})",
                             "pip install nvidia-cusparselt-cu13 (or -cu12)") from None
    lib = ctypes.CDLL(found.abs_path) if found.abs_path else ctypes.CDLL("libcusparseLt.so.0")
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.cusparseLtGetProperty(MAJOR_VERSION, ctypes.byref(major))
    lib.cusparseLtGetProperty(MINOR_VERSION, ctypes.byref(minor))
    if (major.value, minor.value) < MIN_VERSION:
        raise Unsupported(f"cuSPARSELt {major.value}.{minor.value} numbers its enums differently",
                          "install cuSPARSELt >= 0.6 (pip install nvidia-cusparselt-cu13)")
    return lib


class CusparseLtBatched:
    """Y[l] = W[l](2:4) · X[l] for all l with one cusparseLtMatmul (strided batch). UNTESTED ON A GPU.

    `W` is the masked dense weights (semi_structured.SemiStructured.dense_weights(), on the device, in
    the storage dtype); the constructor checks the 2:4 pattern on the device and compresses it once.
    `run(X, Y)` launches on CuPy's current stream."""

    def __init__(self, W: Any, X: Any, Y: Any, *, dtype: str = "fp16"):
        import cupy

        if W.ndim != 3 or X.ndim != 3 or Y.ndim != 3:
            raise InputError(f"expected W[L,M,K], X[L,K,N], Y[L,M,N]; got {W.shape}, {X.shape}, {Y.shape}",
                             "pass 3-D EC2B arrays")
        L, M, K = W.shape
        if X.shape[:2] != (L, K) or Y.shape[:2] != (L, M):
            raise InputError(f"shapes do not chain: W {W.shape}, X {X.shape}, Y {Y.shape}",
                             "X must be [L, K, N] and Y [L, M, >= N]")
        self.desc = batch_descriptors(L, M, K, X.shape[2], dtype=dtype, y_cols=Y.shape[2])
        self._cp, self._lib = cupy, load_library()
        self._handle, self._plan, self._alg = _opaque(), _opaque(), _opaque()
        self._mats = {name: _opaque() for name in "ABC"}
        self._matmul = _opaque()
        self._keep = []                                   # device buffers the plan points into
        self._live: list[tuple[str, Any]] = []            # (destroy function, object) in creation order
        try:
            self._setup(W)
        except BaseException:
            self.close()
            raise

    def _call(self, name: str, *args) -> None:
        status = getattr(self._lib, name)(*args)
        if status != 0:
            msg = name
            get = getattr(self._lib, "cusparseLtGetErrorString", None)
            if get is not None:
                get.restype = ctypes.c_char_p
                msg = f"{name}: {get(status).decode(errors='replace')}"
            raise KernelError(f"cuSPARSELt {msg} (status {status})",
                              "check the shapes against the cuSPARSELt constraints; record 2:4 as unsupported here")

    def _setup(self, W) -> None:
        d, lib, c_int64 = self.desc, self._lib, ctypes.c_int64
        h = ctypes.byref(self._handle)
        self._call("cusparseLtInit", h)
        self._live.append(("cusparseLtDestroy", self._handle))
        for name, m in (("A", d.A), ("B", d.B), ("C", d.C)):
            mat = ctypes.byref(self._mats[name])
            if m.structured:
                self._call("cusparseLtStructuredDescriptorInit", h, mat, c_int64(m.rows), c_int64(m.cols),
                           c_int64(m.ld), ctypes.c_uint32(ALIGNMENT_BYTES), d.value_type, CUSPARSE_ORDER_ROW,
                           CUSPARSELT_SPARSITY_50_PERCENT)
            else:
                self._call("cusparseLtDenseDescriptorInit", h, mat, c_int64(m.rows), c_int64(m.cols),
                           c_int64(m.ld), ctypes.c_uint32(ALIGNMENT_BYTES), d.value_type, CUSPARSE_ORDER_ROW)
            self._live.append(("cusparseLtMatDescriptorDestroy", self._mats[name]))
            batches, stride = ctypes.c_int32(d.L), c_int64(m.batch_stride)
            self._call("cusparseLtMatDescSetAttribute", h, mat, CUSPARSELT_MAT_NUM_BATCHES,
                       ctypes.byref(batches), ctypes.c_size_t(4))
            self._call("cusparseLtMatDescSetAttribute", h, mat, CUSPARSELT_MAT_BATCH_STRIDE,
                       ctypes.byref(stride), ctypes.c_size_t(8))
        A, B, C = (ctypes.byref(self._mats[k]) for k in "ABC")
        self._call("cusparseLtMatmulDescriptorInit", h, ctypes.byref(self._matmul), CUSPARSE_OPERATION_NON_TRANSPOSE,
                   CUSPARSE_OPERATION_NON_TRANSPOSE, A, B, C, C, CUSPARSE_COMPUTE_32F)
        self._call("cusparseLtMatmulAlgSelectionInit", h, ctypes.byref(self._alg), ctypes.byref(self._matmul),
                   CUSPARSELT_MATMUL_ALG_DEFAULT)
        for name in ("cusparseLtMatmulAlgSelectionDestroy", "cusparseLtAlgSelectionDestroy"):  # v0.8+
            if getattr(lib, name, None) is not None:
                self._live.append((name, self._alg))
                break
        self._call("cusparseLtMatmulPlanInit", h, ctypes.byref(self._plan), ctypes.byref(self._matmul),
                   ctypes.byref(self._alg))
        self._live.append(("cusparseLtMatmulPlanDestroy", self._plan))
        work = ctypes.c_size_t()
        self._call("cusparseLtMatmulGetWorkspace", h, ctypes.byref(self._plan), ctypes.byref(work))
        cp = self._cp
        stream = ctypes.c_void_p(cp.cuda.get_current_stream().ptr)
        valid = cp.zeros(1, dtype=cp.int32)
        self._call("cusparseLtSpMMAPruneCheck", h, ctypes.byref(self._matmul), ctypes.c_void_p(W.data.ptr),
                   ctypes.c_void_p(valid.data.ptr), stream)
        if int(valid.get()[0]) != 0:
            raise InputError("the weights are not 2:4 along K on the device",
                             "upload semi_structured.prune_2to4(W).dense_weights() in the storage dtype")
        size, buf_size = ctypes.c_size_t(), ctypes.c_size_t()
        self._call("cusparseLtSpMMACompressedSize", h, ctypes.byref(self._plan), ctypes.byref(size),
                   ctypes.byref(buf_size))
        self._compressed = cp.empty(max(size.value, 1), dtype=cp.uint8)
        scratch = cp.empty(max(buf_size.value, 1), dtype=cp.uint8)
        self._call("cusparseLtSpMMACompress", h, ctypes.byref(self._plan), ctypes.c_void_p(W.data.ptr),
                   ctypes.c_void_p(self._compressed.data.ptr), ctypes.c_void_p(scratch.data.ptr), stream)
        self._workspace = cp.empty(max(work.value, 1), dtype=cp.uint8)
        self._keep = [self._compressed, self._workspace, scratch]
        self._alpha, self._beta = ctypes.c_float(1.0), ctypes.c_float(0.0)

    def run(self, X, Y) -> None:
        """One cusparseLtMatmul over the whole batch on CuPy's current stream (D = C = Y, beta = 0)."""
        stream = ctypes.c_void_p(self._cp.cuda.get_current_stream().ptr)
        streams = (ctypes.c_void_p * 1)(stream)
        self._call("cusparseLtMatmul", ctypes.byref(self._handle), ctypes.byref(self._plan),
                   ctypes.byref(self._alpha), ctypes.c_void_p(self._compressed.data.ptr), ctypes.c_void_p(X.data.ptr),
                   ctypes.byref(self._beta), ctypes.c_void_p(Y.data.ptr), ctypes.c_void_p(Y.data.ptr),
                   ctypes.c_void_p(self._workspace.data.ptr), streams, ctypes.c_int32(1))

    def close(self) -> None:
        """Destroy what was created, newest first (plan, alg selection, descriptors, handle)."""
        while self._live:
            name, obj = self._live.pop()
            getattr(self._lib, name)(ctypes.byref(obj))
        self._keep = []
