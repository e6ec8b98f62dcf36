"""cuSPARSELt called through ctypes: the 2:4 GEMM batch Y_i = W_i(2:4) · X_i, one strided-batched call.

Written from the cuSPARSELt documentation (docs.nvidia.com/cuda/cusparselt: "Getting Started"
workflow, "cuSPARSELt Functions", "cuSPARSELt Data Types") and checked against the header of
nvidia-cusparselt-cu13 0.10.0 (signatures, enum values, sizeof of the opaque structs: 512 bytes,
alignas(16)) and NVIDIA's CUDALibrarySamples cuSPARSELt/matmul_advanced example (the batched call: int32
NUM_BATCHES and int64 BATCH_STRIDE on each of A, B, C). The CPU tests check what needs no library
(`batch_descriptors`, the argument checks, the ctypes signatures against that header's text);
tests/gpu/test_semi24_gpu.py runs it. Nothing here loads a library or CuPy at import.

The call order is the documented workflow:
  1. cusparseLtInit(handle)
  2. cusparseLtStructuredDescriptorInit(A: W, M×K, 2:4) and cusparseLtDenseDescriptorInit(B: X, C/D: Y),
     then cusparseLtMatDescSetAttribute(NUM_BATCHES: int32 L, BATCH_STRIDE: int64 elements) on each
  3. cusparseLtMatmulDescriptorInit(opA = opB = NON_TRANSPOSE, compute = CUSPARSE_COMPUTE_32F)
  4. cusparseLtMatmulAlgSelectionInit(CUSPARSELT_MATMUL_ALG_DEFAULT)
  5. cusparseLtMatmulPlanInit, cusparseLtMatmulGetWorkspace
  6. cusparseLtSpMMAPruneCheck (the host-made 2:4 mask, on the device), cusparseLtSpMMACompressedSize,
     cusparseLtSpMMACompress (the compressed layout is the library's own, see semi_structured.py)
  7. cusparseLtMatmul(alpha, A_compressed, B, beta, C, D, workspace, streams, 1) per run (C: a zero buffer
     of Y's shape, D: Y)
  8. destroy: matrix descriptors, alg selection (v0.8+), plan, handle.
Enum values are those of cuSPARSELt >= 0.6 (cusparseComputeType: 32I = 0, 16F = 1, 32F = 2; earlier
releases numbered it differently), so the version is checked first (cusparseLtGetProperty).
The library comes from cuda.pathfinder (`load_nvidia_dynamic_lib("cusparseLt")`: pip
nvidia-cusparselt-cu13 puts it in nvidia/cu13/lib) or the loader's path. Opaque structs are allocated
generously (512 bytes in 0.10, larger in older releases) at a 16-byte aligned address. Every function
gets its argtypes, so int64 extents and size_t sizes are passed at their width. A status of
INVALID_VALUE or NOT_SUPPORTED while setting up (a shape or type this library/GPU refuses) is
Unsupported (the row's status 'unsupported'); any other failure is a KernelError.
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
OPAQUE_BYTES = 16384                          # >= every released sizeof(cusparseLt*_t) (0.10: 512)
CUSPARSE_STATUS_INVALID_VALUE, CUSPARSE_STATUS_NOT_SUPPORTED = 3, 10   # cusparseStatus_t
SONAME = "libcusparseLt.so.0"

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

# ctypes signatures (cusparseLt.h 0.10.0): P = a pointer (handle, descriptor, device or host buffer).
_P, _I, _I64, _U32, _SZ = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_uint32, ctypes.c_size_t
SIGNATURES: dict[str, tuple] = {
    "cusparseLtInit": (_P,),
    "cusparseLtDestroy": (_P,),
    "cusparseLtGetProperty": (_I, _P),
    "cusparseLtDenseDescriptorInit": (_P, _P, _I64, _I64, _I64, _U32, _I, _I),
    "cusparseLtStructuredDescriptorInit": (_P, _P, _I64, _I64, _I64, _U32, _I, _I, _I),
    "cusparseLtMatDescriptorDestroy": (_P,),
    "cusparseLtMatDescSetAttribute": (_P, _P, _I, _P, _SZ),
    "cusparseLtMatmulDescriptorInit": (_P, _P, _I, _I, _P, _P, _P, _P, _I),
    "cusparseLtMatmulAlgSelectionInit": (_P, _P, _P, _I),
    "cusparseLtMatmulAlgSelectionDestroy": (_P,),
    "cusparseLtMatmulPlanInit": (_P, _P, _P, _P),
    "cusparseLtMatmulPlanDestroy": (_P,),
    "cusparseLtMatmulGetWorkspace": (_P, _P, _P),
    "cusparseLtSpMMAPruneCheck": (_P, _P, _P, _P, _P),
    "cusparseLtSpMMACompressedSize": (_P, _P, _P, _P),
    "cusparseLtSpMMACompress": (_P, _P, _P, _P, _P, _P),
    "cusparseLtMatmul": (_P, _P, _P, _P, _P, _P, _P, _P, _P, _P, ctypes.c_int32),
}
OPTIONAL = ("cusparseLtMatmulAlgSelectionDestroy",)     # 0.7+; older releases free it with the plan


class _Opaque:
    """One opaque cuSPARSELt struct: OPAQUE_BYTES at a 16-byte aligned address (`ptr`)."""

    def __init__(self) -> None:
        self._buf = (ctypes.c_uint8 * (OPAQUE_BYTES + ALIGNMENT_BYTES))()
        base = ctypes.addressof(self._buf)
        self.ptr = ctypes.c_void_p(base + (-base) % ALIGNMENT_BYTES)


def _find_library() -> ctypes.CDLL:
    """libcusparseLt through cuda.pathfinder, else the loader's search path; Unsupported with the fix."""
    why = "cuda-pathfinder is not installed"
    try:
        from cuda import pathfinder  # type: ignore[import-not-found]
    except ImportError:
        pathfinder = None
    if pathfinder is not None:
        try:
            found = pathfinder.load_nvidia_dynamic_lib("cusparseLt")
            return ctypes.CDLL(found.abs_path) if found.abs_path else ctypes.CDLL(SONAME)
        except Exception as e:  # DynamicLibNotFoundError and friends
            why = f"cuda.pathfinder did not find it ({type(e).__name__})"
    try:
        return ctypes.CDLL(SONAME)
    except OSError:
        raise Unsupported(f"libcusparseLt not found: {why}", "pip install nvidia-cusparselt-cu13 (or -cu12)") from None


def load_library() -> ctypes.CDLL:
    """libcusparseLt with its signatures set, version >= 0.6 checked; Unsupported with the fix otherwise."""
    lib = _find_library()
    for name, args in SIGNATURES.items():
        fn = getattr(lib, name, None)
        if fn is None:
            if name in OPTIONAL:
                continue
            raise Unsupported(f"libcusparseLt has no {name}", "install cuSPARSELt >= 0.6 (pip install nvidia-cusparselt-cu13)")
        fn.argtypes, fn.restype = list(args), ctypes.c_int
    for name in ("cusparseLtGetErrorString", "cusparseLtGetErrorName"):
        fn = getattr(lib, name, None)
        if fn is not None:
            fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_char_p
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.cusparseLtGetProperty(MAJOR_VERSION, ctypes.byref(major))
    lib.cusparseLtGetProperty(MINOR_VERSION, ctypes.byref(minor))
    if (major.value, minor.value) < MIN_VERSION:
        raise Unsupported(f"cuSPARSELt {major.value}.{minor.value} numbers its enums differently",
                          "install cuSPARSELt >= 0.6 (pip install nvidia-cusparselt-cu13)")
    lib.wsp_version = f"{major.value}.{minor.value}"
    return lib


def error_for(name: str, status: int, message: str, *, setup: bool) -> Exception:
    """The one-line error of a failed call: a shape/type the library refuses while setting up is
    Unsupported, anything else a KernelError."""
    what = f"cuSPARSELt {name}: {message} (status {status})"
    if setup and status in (CUSPARSE_STATUS_INVALID_VALUE, CUSPARSE_STATUS_NOT_SUPPORTED):
        return Unsupported(what, "record 2:4 through cuSPARSELt as unsupported for this shape, dtype or GPU")
    return KernelError(what, "check the GPU state and the shapes against the cuSPARSELt constraints")


class CusparseLtBatched:
    """Y[l] = W[l](2:4) · X[l] for all l with one cusparseLtMatmul (strided batch).

    `W` is the masked dense weights (semi_structured.SemiStructured.dense_weights(), on the device, in
    the storage dtype); the constructor checks the 2:4 pattern on the device and compresses it once.
    `run(X, Y)` launches on CuPy's current stream. X and Y are the buffers the plan was made for (their
    strides are in the descriptors); other buffers of the same shapes work too."""

    def __init__(self, W: Any, X: Any, Y: Any, *, dtype: str = "fp16"):
        import cupy

        if W.ndim != 3 or X.ndim != 3 or Y.ndim != 3:
            raise InputError(f"expected W[L,M,K], X[L,K,N], Y[L,M,N]; got {W.shape}, {X.shape}, {Y.shape}",
                             "pass 3-D EC2B arrays")
        L, M, K = W.shape
        if X.shape[:2] != (L, K) or Y.shape[:2] != (L, M):
            raise InputError(f"shapes do not chain: W {W.shape}, X {X.shape}, Y {Y.shape}",
                             "X must be [L, K, N] and Y [L, M, >= N]")
        for name, a in (("W", W), ("X", X), ("Y", Y)):
            if not a.flags.c_contiguous:
                raise InputError(f"{name} is not C-contiguous", "pass contiguous EC2B arrays")
        self.desc = batch_descriptors(L, M, K, X.shape[2], dtype=dtype, y_cols=Y.shape[2])
        self._cp, self._lib = cupy, load_library()
        self.version = getattr(self._lib, "wsp_version", "")
        self._handle, self._plan, self._alg, self._matmul = _Opaque(), _Opaque(), _Opaque(), _Opaque()
        self._mats = {name: _Opaque() for name in "ABC"}
        self._keep: list[Any] = []                        # device buffers the plan points into
        self._live: list[tuple[str, _Opaque]] = []        # (destroy function, object) in creation order
        try:
            self._setup(W)
        except BaseException:
            self.close()
            raise

    def _call(self, name: str, *args, setup: bool = True) -> None:
        status = getattr(self._lib, name)(*args)
        if status != 0:
            get = getattr(self._lib, "cusparseLtGetErrorString", None)
            raw = get(status) if get is not None else None       # c_char_p: bytes, or None for NULL
            message = raw.decode(errors="replace") if isinstance(raw, bytes) else "failed"
            raise error_for(name, status, message, setup=setup)

    def _setup(self, W) -> None:
        d, lib, c_int64 = self.desc, self._lib, ctypes.c_int64
        h = self._handle.ptr
        self._call("cusparseLtInit", h)
        self._live.append(("cusparseLtDestroy", self._handle))
        for name, m in (("A", d.A), ("B", d.B), ("C", d.C)):
            mat = self._mats[name].ptr
            if m.structured:
                self._call("cusparseLtStructuredDescriptorInit", h, mat, m.rows, m.cols, m.ld, ALIGNMENT_BYTES,
                           d.value_type, CUSPARSE_ORDER_ROW, CUSPARSELT_SPARSITY_50_PERCENT)
            else:
                self._call("cusparseLtDenseDescriptorInit", h, mat, m.rows, m.cols, m.ld, ALIGNMENT_BYTES,
                           d.value_type, CUSPARSE_ORDER_ROW)
            self._live.append(("cusparseLtMatDescriptorDestroy", self._mats[name]))
            batches, stride = ctypes.c_int32(d.L), c_int64(m.batch_stride)   # int and int64_t in the header
            self._call("cusparseLtMatDescSetAttribute", h, mat, CUSPARSELT_MAT_NUM_BATCHES,
                       ctypes.addressof(batches), ctypes.sizeof(batches))
            self._call("cusparseLtMatDescSetAttribute", h, mat, CUSPARSELT_MAT_BATCH_STRIDE,
                       ctypes.addressof(stride), ctypes.sizeof(stride))
        A, B, C = (self._mats[k].ptr for k in "ABC")
        self._call("cusparseLtMatmulDescriptorInit", h, self._matmul.ptr, CUSPARSE_OPERATION_NON_TRANSPOSE,
                   CUSPARSE_OPERATION_NON_TRANSPOSE, A, B, C, C, CUSPARSE_COMPUTE_32F)
        self._call("cusparseLtMatmulAlgSelectionInit", h, self._alg.ptr, self._matmul.ptr,
                   CUSPARSELT_MATMUL_ALG_DEFAULT)
        if getattr(lib, "cusparseLtMatmulAlgSelectionDestroy", None) is not None:
            self._live.append(("cusparseLtMatmulAlgSelectionDestroy", self._alg))
        self._call("cusparseLtMatmulPlanInit", h, self._plan.ptr, self._matmul.ptr, self._alg.ptr)
        self._live.append(("cusparseLtMatmulPlanDestroy", self._plan))
        work = ctypes.c_size_t()
        self._call("cusparseLtMatmulGetWorkspace", h, self._plan.ptr, ctypes.addressof(work))
        cp = self._cp
        stream = cp.cuda.get_current_stream()
        valid = cp.zeros(1, dtype=cp.int32)
        self._call("cusparseLtSpMMAPruneCheck", h, self._matmul.ptr, W.data.ptr, valid.data.ptr, stream.ptr)
        if int(valid.get()[0]) != 0:
            raise InputError("the weights are not 2:4 along K on the device",
                             "upload semi_structured.prune_2to4(W).dense_weights() in the storage dtype")
        size, buf_size = ctypes.c_size_t(), ctypes.c_size_t()
        self._call("cusparseLtSpMMACompressedSize", h, self._plan.ptr, ctypes.addressof(size),
                   ctypes.addressof(buf_size))
        self._compressed = cp.empty(max(size.value, 1), dtype=cp.uint8)
        scratch = cp.empty(max(buf_size.value, 1), dtype=cp.uint8)
        self._call("cusparseLtSpMMACompress", h, self._plan.ptr, W.data.ptr, self._compressed.data.ptr,
                   scratch.data.ptr, stream.ptr)
        stream.synchronize()                              # W and the scratch buffer may go after this
        self._workspace = cp.empty(max(work.value, 1), dtype=cp.uint8)
        # C (beta = 0) is a zero buffer of its own, not Y: the documentation does not promise that C is
        # left unread when beta = 0, and Y holds NaN poison during the checked run.
        self._c = cp.zeros((d.L, d.M, d.C.ld), dtype=cp.uint16)       # 16-bit zeros: 0.0 in fp16 and bf16
        self._keep = [self._compressed, self._workspace, self._c]
        self._alpha, self._beta = ctypes.c_float(1.0), ctypes.c_float(0.0)
        self.compressed_bytes = int(size.value)

    def run(self, X, Y) -> None:
        """One cusparseLtMatmul over the whole batch on CuPy's current stream (D = Y; beta = 0, C zeros)."""
        streams = (ctypes.c_void_p * 1)(self._cp.cuda.get_current_stream().ptr)
        self._call("cusparseLtMatmul", self._handle.ptr, self._plan.ptr, ctypes.addressof(self._alpha),
                   self._compressed.data.ptr, X.data.ptr, ctypes.addressof(self._beta), self._c.data.ptr, Y.data.ptr,
                   self._workspace.data.ptr, streams, 1, setup=False)

    def close(self) -> None:
        """Destroy what was created, newest first (plan, alg selection, descriptors, handle)."""
        while self._live:
            name, obj = self._live.pop()
            getattr(self._lib, name)(obj.ptr)
        self._keep = []
