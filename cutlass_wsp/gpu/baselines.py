"""Library baselines called directly: cuBLAS strided-batched GEMM and cuSPARSE CSR SpMM.

Not `cupy.matmul` on 3-D arrays (5-10x slower than cuBLAS called directly on the H100) and not
cupyx's `csr @ dense` (converts the dense operand to column-major inside the call): both would time
CuPy's glue, not the library. See docs/measurement.md.

Layouts are EC2B (row-major, contiguous): W[L, M, K], X[L, K, Npad], Y[L, M, Npad].
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from cutlass_wsp.dtypes import DType
from cutlass_wsp.errors import InputError, KernelError, Unsupported
from cutlass_wsp.gpu.arrays import as_dtype, from_host, storage_dtype

# cudaDataType_t (library_types.h)
CUDA_R_32F, CUDA_R_16F, CUDA_R_16BF = 0, 2, 14
# cublasComputeType_t (cublas_api.h); read from CuPy when it has them
CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32F_FAST_TF32 = 68, 77
CUBLAS_GEMM_DEFAULT = -1

_CUDA_TYPE = {"fp16": CUDA_R_16F, "bf16": CUDA_R_16BF, "tf32": CUDA_R_32F, "fp32": CUDA_R_32F}


def _need_storage(name: str, a, dt: DType) -> None:
    want = storage_dtype(dt)
    if np.dtype(a.dtype) != want:
        raise InputError(f"{name} has dtype {a.dtype}, but {dt.name} buffers are {want}",
                         "create it with cutlass_wsp.gpu.arrays (from_host/random/empty) for this dtype")
    if not a.flags.c_contiguous:
        raise InputError(f"{name} is not C-contiguous (shape {a.shape}, strides {a.strides})",
                         "pass a contiguous array (cupy.ascontiguousarray)")


def _check_batch(W, X, Y) -> tuple[int, int, int]:
    if W.ndim != 3 or X.ndim != 3 or Y.ndim != 3:
        raise InputError(f"expected W[L,M,K], X[L,K,Npad], Y[L,M,Npad]; got shapes {W.shape}, {X.shape}, {Y.shape}",
                         "pass 3-D EC2B arrays")
    L, M, K = W.shape
    if X.shape[:2] != (L, K) or Y.shape[:2] != (L, M) or Y.shape[2] < X.shape[2]:
        raise InputError(f"shapes do not chain: W {W.shape}, X {X.shape}, Y {Y.shape}",
                         "X must be [L, K, Npad] and Y [L, M, >= Npad] for W [L, M, K]")
    return L, M, K


class CublasBatched:
    """Row-major Y[l] = W[l] . X[l] for all l with one cublasGemmStridedBatchedEx call.

    cuBLAS is column-major: a row-major [r, c] buffer is a column-major [c, r] matrix. So the call
    computes Y^T = X^T . W^T with operands swapped: m = N (columns of Y), n = M, k = K, A = X with
    lda = Npad, B = W with ldb = K, C = Y with ldc = Y's row length. Accumulates in fp32; tf32 uses
    CUBLAS_COMPUTE_32F_FAST_TF32 on fp32 buffers.
    """

    def __init__(self, dt: DType | str):
        import cupy
        from cupy_backends.cuda.libs import cublas

        self.dt = as_dtype(dt)
        self._cublas = cublas
        self.handle = cupy.cuda.device.get_cublas_handle()
        self.data_type = _CUDA_TYPE[self.dt.name]
        c32 = getattr(cublas, "CUBLAS_COMPUTE_32F", CUBLAS_COMPUTE_32F)
        tf32 = getattr(cublas, "CUBLAS_COMPUTE_32F_FAST_TF32", CUBLAS_COMPUTE_32F_FAST_TF32)
        self.compute_type = tf32 if self.dt.name == "tf32" else c32
        self.algo = getattr(cublas, "CUBLAS_GEMM_DEFAULT", CUBLAS_GEMM_DEFAULT)
        # alpha/beta are read from host memory in the compute type (fp32); kept alive with the object.
        self._alpha = np.ones(1, np.float32)
        self._beta = np.zeros(1, np.float32)

    def run(self, W, X, Y, *, cols: int | None = None) -> None:
        """Launch on cupy's current stream. `cols` columns of Y are computed (default X.shape[2])."""
        cb = self._cublas
        for name, a in (("W", W), ("X", X), ("Y", Y)):
            _need_storage(name, a, self.dt)
        L, M, K = _check_batch(W, X, Y)
        ldx, ldy = X.shape[2], Y.shape[2]
        n = ldx if cols is None else cols
        if not 0 < n <= ldx:
            raise InputError(f"cols={cols} outside 1..{ldx}", "pass the number of valid columns T")
        # Host scalars; default math, so fp32 is never silently run as TF32 (CUPY_TF32 sets the handle).
        cb.setPointerMode(self.handle, cb.CUBLAS_POINTER_MODE_HOST)
        cb.setMathMode(self.handle, cb.CUBLAS_DEFAULT_MATH)
        cb.gemmStridedBatchedEx(
            self.handle, cb.CUBLAS_OP_N, cb.CUBLAS_OP_N, n, M, K,
            self._alpha.ctypes.data,
            X.data.ptr, self.data_type, ldx, K * ldx,
            W.data.ptr, self.data_type, K, M * K,
            self._beta.ctypes.data,
            Y.data.ptr, self.data_type, ldy, M * ldy,
            L, self.compute_type, self.algo)


# --- cuSPARSE ---------------------------------------------------------------------------------------

def _csr_parts(item: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int] | None]:
    if isinstance(item, (tuple, list)) and len(item) == 3:
        indptr, indices, data = item
        shape = None
    elif all(hasattr(item, a) for a in ("indptr", "indices", "data")):
        indptr, indices, data = item.indptr, item.indices, item.data
        shape = tuple(item.shape) if hasattr(item, "shape") else None
    else:
        raise InputError(f"CSR input {type(item).__name__} is not (indptr, indices, data)",
                         "pass per-position CSR arrays from cutlass_wsp.pruning")
    return np.asarray(indptr), np.asarray(indices), np.asarray(data), shape


def _validate_csr(i: int, indptr, indices, data, cols: int) -> None:
    rows = len(indptr) - 1
    ok = (rows >= 1 and indptr[0] == 0 and np.all(np.diff(indptr) >= 0) and indptr[-1] == len(indices) == len(data)
          and (len(indices) == 0 or (indices.min() >= 0 and indices.max() < cols)))
    if not ok:
        raise InputError(f"CSR matrix of position {i} is malformed (rows {rows}, cols {cols}, nnz {len(indices)})",
                         "indptr must start at 0, never decrease, end at nnz; indices must lie in 0..cols-1")


def block_diagonal_csr(parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], cols: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR of the block-diagonal matrix diag(A_0, ..., A_{L-1}) from the CSR arrays of equal-shape A_l
    with `cols` columns each: row pointers shift by the nonzeros before, column indices by l * cols."""
    nnz = np.cumsum([0] + [len(ix) for _, ix, _ in parts])
    indptr = np.concatenate([np.zeros(1, np.int64)] + [np.asarray(ip[1:], np.int64) + nnz[l]
                                                       for l, (ip, _, _) in enumerate(parts)])
    indices = np.concatenate([np.asarray(ix, np.int64) + l * cols for l, (_, ix, _) in enumerate(parts)])
    data = np.concatenate([np.asarray(dv) for _, _, dv in parts])
    return indptr, indices, data


# cusparseSpMMAlg_t value from cusparse.h: CuPy's low-level module does not export this one.
CUSPARSE_SPMM_CSR_ALG2 = 6


def _status_name(err: Exception) -> str:
    return str(err).split(":")[0].strip() or type(err).__name__


class CusparseCsr:
    """Y[l] = A_l . X[l] with cuSPARSE SpMM, CSR A_l (element-pruned W_l), row-major dense operands,
    CUSPARSE_SPMM_CSR_ALG2, fp32 compute.

    mode='per_position': one SpMM per position (L calls).
    mode='block_diag': one SpMM of the block-diagonal (L*M) x (L*K) CSR of all positions with X seen
    as (L*K) x Npad and Y as (L*M) x Npad (CuPy does not expose cusparseCsrSetStridedBatch).

    Descriptors and the work buffer are made once per (X, Y) pair, on the first run with them, and
    kept: warm-up runs do the setup, timed runs only call SpMM. `close()` destroys them.

    accumulate=True: Y[l] += A_l . X[l] (beta = 1; a position without nonzeros leaves Y as it is), for a
    part of W added to what another launch wrote (the hybrid point's CSR remainder on top of its blocks).
    """

    MODES = ("per_position", "block_diag")

    def __init__(self, dt: DType | str, csr: Sequence[Any], *, cols: int | None = None,
                 mode: str = "per_position", accumulate: bool = False):
        import cupy
        from cupy_backends.cuda.libs import cusparse

        self.dt = as_dtype(dt)
        if self.dt.name == "tf32":
            raise Unsupported("cuSPARSE SpMM has no TF32 mode", "use fp32 (or fp16/bf16) for the cuSPARSE baseline")
        if mode not in self.MODES:
            raise InputError(f"unknown cuSPARSE mode {mode!r}", f"use one of {', '.join(self.MODES)}")
        if len(csr) == 0:
            raise InputError("no CSR matrices given", "pass one CSR matrix per Winograd position")
        self.mode = mode
        self._cp, self._sp = cupy, cusparse
        self._mats: list[int | None] = []               # SpMat descriptors (None: no nonzeros)
        self._dense: dict[tuple, tuple[list, Any]] = {}  # (X, Y) key -> ([(dnB, dnC, l) ...], buffer)
        self._alpha = np.ones(1, np.float32)
        self.accumulate = bool(accumulate)
        self._beta = np.full(1, 1.0 if self.accumulate else 0.0, np.float32)
        self.value_type = _CUDA_TYPE[self.dt.name]

        parts = [_csr_parts(item) for item in csr]
        shapes = {p[3] for p in parts if p[3] is not None}
        if cols is None:
            if not shapes:
                raise InputError("the CSR column count is unknown", "pass cols=K (input channels)")
            cols = next(iter(shapes))[1]
        rows = {len(p[0]) - 1 for p in parts}
        if len(rows) != 1 or any(s[1] != cols for s in shapes):
            raise InputError(f"CSR matrices differ in shape (rows {sorted(rows)}, cols {cols})",
                             "every position's sparse W_i must be M x K (prune elements, not rows)")
        for i, (ip, ix, dv, _) in enumerate(parts):
            _validate_csr(i, ip, ix, dv, cols)
        self.L, self.M, self.K = len(parts), rows.pop(), cols
        self.nnz = [len(p[1]) for p in parts]
        if sum(self.nnz) >= 2**31 or self.L * max(self.M, self.K) >= 2**31:
            raise Unsupported(f"{sum(self.nnz)} nonzeros exceed 32-bit CSR indices", "use a smaller layer or batch")

        if mode == "block_diag":
            parts = [(*block_diagonal_csr([p[:3] for p in parts], self.K), None)]
            shapes_dev = [(self.L * self.M, self.L * self.K)]
        else:
            shapes_dev = [(self.M, self.K)] * self.L
        # Device copies stay referenced by self: the descriptors point into them.
        self._arrays = [(cupy.asarray(ip.astype(np.int32)), cupy.asarray(ix.astype(np.int32)), from_host(dv, self.dt))
                        for ip, ix, dv, _ in parts]
        self._mat_nnz = [len(ix) for _, ix, _, _ in parts]
        try:
            for (ip, ix, dv), (r, c), nnz in zip(self._arrays, shapes_dev, self._mat_nnz):
                if nnz == 0:  # fully pruned: no descriptor (null value pointers); run() zeroes its output
                    self._mats.append(None)
                    continue
                self._mats.append(cusparse.createCsr(
                    r, c, nnz, ip.data.ptr, ix.data.ptr, dv.data.ptr,
                    cusparse.CUSPARSE_INDEX_32I, cusparse.CUSPARSE_INDEX_32I,
                    cusparse.CUSPARSE_INDEX_BASE_ZERO, self.value_type))
        except cusparse.CuSparseError as e:
            self.close()
            raise self._error(e, "createCsr") from None

    def _error(self, e: Exception, call: str) -> Exception:
        status = getattr(e, "status", None)
        if status == getattr(self._sp, "CUSPARSE_STATUS_NOT_SUPPORTED", 10) or "NOT_SUPPORTED" in str(e):
            return Unsupported(
                f"cuSPARSE {call} does not support CSR SpMM with {self.dt.name} values, fp32 compute, "
                f"CSR_ALG2, row-major operands ({_status_name(e)})",
                "record the cuSPARSE baseline as unsupported for this dtype, or use fp32")
        return KernelError(f"cuSPARSE {call} failed for {self.dt.name} ({e})",
                           "check the CSR arrays and the X/Y shapes")

    def _dn(self, rows: int, cols: int, ld: int, ptr: int) -> int:
        return self._sp.createDnMat(rows, cols, ld, ptr, self.value_type, self._sp.CUSPARSE_ORDER_ROW)

    def _setup(self, X, Y, n: int):
        """Dense descriptors and one work buffer (the largest any call needs) for this (X, Y)."""
        sp, cp = self._sp, self._cp
        handle = cp.cuda.device.get_cusparse_handle()
        ldx, ldy = X.shape[2], Y.shape[2]
        size = X.dtype.itemsize
        calls: list[tuple[int, int, int]] = []
        try:
            if self.mode == "block_diag":
                calls.append((self._dn(self.L * self.K, n, ldx, X.data.ptr),
                              self._dn(self.L * self.M, n, ldy, Y.data.ptr), 0))
            else:
                for l in range(self.L):
                    calls.append((self._dn(self.K, n, ldx, X.data.ptr + l * self.K * ldx * size),
                                  self._dn(self.M, n, ldy, Y.data.ptr + l * self.M * ldy * size), l))
            need = 0
            for b, c, l in calls:
                if self._mat_nnz[l]:
                    need = max(need, sp.spMM_bufferSize(
                        handle, sp.CUSPARSE_OPERATION_NON_TRANSPOSE, sp.CUSPARSE_OPERATION_NON_TRANSPOSE,
                        self._alpha.ctypes.data, self._mats[l], b, self._beta.ctypes.data, c,
                        CUDA_R_32F, CUSPARSE_SPMM_CSR_ALG2))
        except sp.CuSparseError as e:
            for b, c, _ in calls:
                sp.destroyDnMat(b)
                sp.destroyDnMat(c)
            raise self._error(e, "SpMM setup") from None
        buf = cp.empty(max(need, 1), dtype=cp.uint8)
        return calls, buf

    def run(self, X, Y, *, cols: int | None = None) -> None:
        """Launch on cupy's current stream. The first run with a given (X, Y) pair also does setup."""
        sp, cp = self._sp, self._cp
        for name, a in (("X", X), ("Y", Y)):
            _need_storage(name, a, self.dt)
        if X.ndim != 3 or Y.ndim != 3 or X.shape[:2] != (self.L, self.K) or Y.shape[:2] != (self.L, self.M) \
                or Y.shape[2] < X.shape[2]:
            raise InputError(f"X {X.shape} / Y {Y.shape} do not fit the {self.L} CSR matrices of {self.M}x{self.K}",
                             f"pass X[{self.L}, {self.K}, Npad] and Y[{self.L}, {self.M}, Npad]")
        n = X.shape[2] if cols is None else cols
        key = (X.data.ptr, Y.data.ptr, X.shape, Y.shape, n)
        if key not in self._dense:
            self._dense[key] = self._setup(X, Y, n)
        calls, buf = self._dense[key]
        handle = cp.cuda.device.get_cusparse_handle()
        stream = cp.cuda.get_current_stream().ptr
        try:
            sp.setStream(handle, stream)  # CuPy's wrappers do this too; explicit, since timing depends on it
            for b, c, l in calls:
                if self._mat_nnz[l] == 0:  # a fully pruned position: cuSPARSE is not asked about nnz = 0
                    if not self.accumulate:
                        self._zero(Y, l, stream)
                    continue
                sp.spMM(handle, sp.CUSPARSE_OPERATION_NON_TRANSPOSE, sp.CUSPARSE_OPERATION_NON_TRANSPOSE,
                        self._alpha.ctypes.data, self._mats[l], b, self._beta.ctypes.data, c,
                        CUDA_R_32F, CUSPARSE_SPMM_CSR_ALG2, buf.data.ptr)
        except sp.CuSparseError as e:
            raise self._error(e, "SpMM") from None

    def _zero(self, Y, l: int, stream: int) -> None:
        if self.mode == "block_diag":
            self._cp.cuda.runtime.memsetAsync(Y.data.ptr, 0, Y.nbytes, stream)
        else:
            per = Y.nbytes // self.L
            self._cp.cuda.runtime.memsetAsync(Y.data.ptr + l * per, 0, per, stream)

    def close(self) -> None:
        sp = getattr(self, "_sp", None)
        if sp is None:
            return
        for calls, _ in getattr(self, "_dense", {}).values():
            for b, c, _ in calls:
                sp.destroyDnMat(b)
                sp.destroyDnMat(c)
        self._dense = {}
        for m in getattr(self, "_mats", []):
            if m is not None:
                sp.destroySpMat(m)
        self._mats = []

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
