"""Load a compiled kernel library (.so) with ctypes and call its C ABI (templates/wsp_abi.h).

`WspArgs` mirrors `wsp_args` field for field; a library whose wsp_abi_version() or wsp_args_size()
disagrees with this mirror is refused at load time (a stale cache entry is rebuilt by get_kernel).
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cutlass_wsp.errors import KernelError

if TYPE_CHECKING:
    from cutlass_wsp.kernels.cache import KernelCache
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


class KernelLibrary:
    """One loaded kernel library. Thread-safe to call; the ABI functions keep no state."""

    def __init__(self, path: str | Path, desc: "KernelDesc | None" = None):
        self.path = Path(path)
        self.desc = desc
        try:
            lib = ctypes.CDLL(str(self.path), mode=ctypes.RTLD_LOCAL)
        except OSError as e:
            raise KernelError(f"could not load kernel library {self.path}: {e}",
                              "delete it (cutlass-wsp cache clear) so it is rebuilt") from None
        try:
            lib.wsp_abi_version.restype = ctypes.c_int
            lib.wsp_abi_version.argtypes = []
            lib.wsp_args_size.restype = ctypes.c_size_t
            lib.wsp_args_size.argtypes = []
            lib.wsp_kernel_name.restype = ctypes.c_char_p
            lib.wsp_kernel_name.argtypes = []
            lib.wsp_can_implement.restype = ctypes.c_int
            lib.wsp_can_implement.argtypes = [ctypes.POINTER(WspArgs)]
            lib.wsp_workspace_size.restype = ctypes.c_size_t
            lib.wsp_workspace_size.argtypes = [ctypes.POINTER(WspArgs)]
            lib.wsp_run.restype = ctypes.c_int
            lib.wsp_run.argtypes = [ctypes.POINTER(WspArgs), c_void_p, ctypes.c_size_t, c_void_p]
        except AttributeError as e:
            raise KernelError(f"{self.path} does not export the wsp C ABI ({e})",
                              "rebuild it from a cutlass-wsp template (cutlass-wsp cache clear)") from None
        version = lib.wsp_abi_version()
        if version != ABI_VERSION:
            raise KernelError(f"{self.path} speaks ABI version {version}, this cutlass-wsp speaks {ABI_VERSION}",
                              "clear the cache (cutlass-wsp cache clear) so kernels are rebuilt")
        size = lib.wsp_args_size()
        if size != ctypes.sizeof(WspArgs):
            raise KernelError(f"{self.path} has a {size}-byte wsp_args, the Python mirror is "
                              f"{ctypes.sizeof(WspArgs)} bytes", "clear the cache; if it persists, "
                              "templates/wsp_abi.h and kernels/library.py disagree")
        self._lib = lib
        self.name = lib.wsp_kernel_name().decode()

    def can_implement_status(self, args: WspArgs) -> int:
        return int(self._lib.wsp_can_implement(ctypes.byref(args)))

    def can_implement(self, args: WspArgs) -> bool:
        return self.can_implement_status(args) == 0

    def check(self, args: WspArgs) -> None:
        """Raise KernelError saying why this kernel refuses `args`."""
        status = self.can_implement_status(args)
        if status:
            raise KernelError(f"{self.name} cannot run this problem: {status_message(status, args, self.desc)}")

    def workspace_size(self, args: WspArgs) -> int:
        return int(self._lib.wsp_workspace_size(ctypes.byref(args)))

    def run(self, args: WspArgs, workspace: Any = None, stream_ptr: int = 0) -> None:
        """Launch (asynchronously) on `stream_ptr` (a cudaStream_t as int; 0 = legacy default stream).
        `workspace`: None, a device pointer (int), or a CuPy array / memory pointer of enough bytes."""
        ptr, nbytes = _workspace_pointer(workspace, self.workspace_size(args) if workspace is not None else 0)
        status = int(self._lib.wsp_run(ctypes.byref(args), ptr, nbytes, stream_ptr))
        if status:
            raise KernelError(f"{self.name} failed: {status_message(status, args, self.desc)}")

    def __repr__(self) -> str:
        return f"KernelLibrary({self.name!r}, {str(self.path)!r})"


def _workspace_pointer(workspace: Any, needed: int) -> tuple[int | None, int]:
    if workspace is None:
        return None, 0
    if isinstance(workspace, int):
        return workspace, needed                         # caller vouches for the size
    data = getattr(workspace, "data", None)              # cupy.ndarray
    if data is not None and hasattr(data, "ptr"):
        return int(data.ptr), int(workspace.nbytes)
    if hasattr(workspace, "ptr"):                        # cupy.cuda.MemoryPointer
        return int(workspace.ptr), int(getattr(getattr(workspace, "mem", None), "size", needed))
    raise KernelError(f"workspace of type {type(workspace).__name__} is not a device buffer",
                      "pass None, a device pointer or a CuPy array")


_loaded: dict[Path, KernelLibrary] = {}
_loaded_guard = threading.Lock()


def load(path: str | Path, desc: "KernelDesc | None" = None) -> KernelLibrary:
    """Load once per process per path (ctypes would hand back the same handle anyway)."""
    p = Path(path).resolve()
    with _loaded_guard:
        lib = _loaded.get(p)
        if lib is None:
            lib = _loaded[p] = KernelLibrary(p, desc)
        elif lib.desc is None and desc is not None:
            lib.desc = desc
        return lib


def get_kernel(desc: "KernelDesc", cache: "KernelCache | None" = None) -> KernelLibrary:
    """The loaded library for `desc`, compiled first if the cache has none. An entry that will not
    load (truncated, wrong ABI) is dropped and rebuilt once."""
    from cutlass_wsp.kernels.cache import default_cache

    cache = cache or default_cache()
    path = cache.get(desc)
    try:
        return load(path, desc)
    except KernelError:
        cache.invalidate(desc)
        return load(cache.get(desc), desc)
