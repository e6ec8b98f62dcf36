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
from cutlass_wsp.kernels.abi import (  # noqa: F401 (re-exported: the families build WspArgs from here)
    ABI_VERSION, CUDA_ERROR_BASE, CUTLASS_STATUS, WspArgs, c_void_p, make_args, status_message, status_name)

if TYPE_CHECKING:
    from cutlass_wsp.kernels.cache import KernelCache
    from cutlass_wsp.kernels.description import KernelDesc

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
