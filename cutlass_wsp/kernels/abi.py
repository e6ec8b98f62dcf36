"""The kernel C ABI as Python sees it (templates/wsp_abi.h): the version, `WspArgs` (the ctypes mirror of
`wsp_args`, field for field) and what a returned status means. Shared by the compile cache (the ABI
version is part of every cache key) and the loader (`kernels/library.py`)."""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cutlass_wsp.kernels.description import KernelDesc

ABI_VERSION = 2            # == WSP_ABI_VERSION in templates/wsp_abi.h
CUDA_ERROR_BASE = 1000     # == WSP_CUDA_ERROR_BASE

c_int32, c_int64, c_float, c_void_p = ctypes.c_int32, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p


class WspArgs(ctypes.Structure):
    """ctypes mirror of `wsp_args` (same order, same natural alignment)."""

    _fields_ = [
        ("M", c_int32), ("N", c_int32), ("K", c_int32), ("L", c_int32),
        ("A", c_void_p), ("B", c_void_p), ("D", c_void_p),
        ("lda", c_int64), ("ldb", c_int64), ("ldd", c_int64),
        ("batch_stride_A", c_int64), ("batch_stride_B", c_int64), ("batch_stride_D", c_int64),
        ("alpha", c_float), ("beta", c_float),
        ("gather_index", c_void_p), ("index_stride", c_int64),
        ("group_count", c_int32),
        ("host_problem_sizes", c_void_p), ("device_problem_sizes", c_void_p),
        ("ptr_A", c_void_p), ("ptr_B", c_void_p), ("ptr_D", c_void_p),
        ("lda_array", c_void_p), ("ldb_array", c_void_p), ("ldd_array", c_void_p),
        ("batch", c_int32), ("H", c_int32), ("W", c_int32), ("C", c_int32), ("n_out", c_int32),
        ("index_a", c_void_p), ("index_b", c_void_p),
        ("sm_count", c_int32), ("device_id", c_int32),
    ]


def make_args(**fields: Any) -> WspArgs:
    """WspArgs with alpha=1, beta=0 and every other field zero unless given."""
    args = WspArgs()
    args.alpha, args.beta = 1.0, 0.0
    names = {f[0] for f in WspArgs._fields_}
    for k, v in fields.items():
        if k not in names:
            raise TypeError(f"wsp_args has no field {k!r}")
        setattr(args, k, v)
    return args


# cutlass::Status, in enum order (cutlass/cutlass.h), with what a user can do about each.
CUTLASS_STATUS = [
    ("kSuccess", ""),
    ("kErrorMisalignedOperand", "a pointer, leading dimension, batch stride, N or K is not a multiple of the "
                                "kernel's alignment"),
    ("kErrorInvalidDataType", "the kernel was built for another dtype"),
    ("kErrorInvalidLayout", "the operand layout does not match the kernel"),
    ("kErrorInvalidProblem", "the problem is empty or a leading dimension is smaller than its row"),
    ("kErrorNotSupported", "this kernel cannot run this problem on this device"),
    ("kErrorWorkspaceNull", "the kernel needs a workspace and got none (or too small)"),
    ("kErrorInternal", "a CUTLASS-internal error, usually a failed launch (too much shared memory for this GPU, "
                       "or a bad stream); rerun with CUDA_LAUNCH_BLOCKING=1 or under compute-sanitizer"),
    ("kErrorArchMismatch", "the kernel was not compiled for this GPU"),
    ("kErrorInsufficientDriver", "the NVIDIA driver is too old for this kernel"),
    ("kErrorMemoryAllocation", "out of device memory"),
    ("kInvalid", "unspecified status"),
]


def _cuda_error_name(code: int) -> str:
    try:
        from cupy_backends.cuda.api import runtime  # type: ignore[import-not-found]

        return f"{runtime.getErrorName(code)}: {runtime.getErrorString(code)}"
    except Exception:
        return f"cudaError {code}"


def status_name(status: int) -> str:
    if 0 <= status < len(CUTLASS_STATUS):
        return CUTLASS_STATUS[status][0]
    if status >= CUDA_ERROR_BASE:
        return _cuda_error_name(status - CUDA_ERROR_BASE)
    return f"status {status}"


def status_message(status: int, args: WspArgs | None = None, desc: "KernelDesc | None" = None) -> str:
    """'kErrorMisalignedOperand: ... use alignment 4 or pad N ...' -- the name, what it means, and the fix
    where one is known (for misalignment: the alignment the shape allows, from kernels.manifest)."""
    name = status_name(status)
    if 0 <= status < len(CUTLASS_STATUS):
        text = f"{name}: {CUTLASS_STATUS[status][1]}"
    else:
        text = f"CUDA error {status - CUDA_ERROR_BASE} ({name})" if status >= CUDA_ERROR_BASE else name
    if args is not None:
        text += (f" [M={args.M} N={args.N} K={args.K} L={args.L} lda={args.lda} ldb={args.ldb} "
                 f"ldd={args.ldd}]")
    if status == 1 and args is not None and desc is not None:
        from cutlass_wsp.kernels.manifest import alignment_for

        extents = [args.N, args.K, args.lda, args.ldb, args.ldd]
        if args.L > 1:
            extents += [args.batch_stride_A, args.batch_stride_B, args.batch_stride_D]
        fits = alignment_for(desc.dtype, *extents)
        text += (f"; this kernel reads {desc.alignment} elements per access: use alignment {fits} "
                 f"(kernels.manifest.select) or pad N and the leading dimensions to a multiple of {desc.alignment}")
    return text
