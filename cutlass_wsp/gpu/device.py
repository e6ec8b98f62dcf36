"""Is there a usable CUDA GPU? One answer, one line of reason; cupy is imported only when asked."""

from __future__ import annotations

import functools

from cutlass_wsp.errors import GpuUnavailable


@functools.lru_cache(maxsize=None)
def gpu_status() -> tuple[bool, str]:
    """(True, 'NVIDIA H100 80GB HBM3, sm_90') or (False, why not) -- never raises."""
    try:
        import cupy as cp
    except ImportError:
        return False, "CuPy is not installed (pip install 'cutlass-wsp[cuda13]' or '[cuda12]')"
    try:
        n = cp.cuda.runtime.getDeviceCount()
    except Exception as e:  # cudaErrorInsufficientDriver / NoDevice on CPU-only machines
        return False, f"no CUDA GPU or driver ({type(e).__name__}: {e})"
    if n == 0:
        return False, "no CUDA GPU or driver (0 devices)"
    try:
        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    except Exception as e:
        return False, f"CUDA device not usable ({type(e).__name__}: {e})"
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return True, f"{name}, sm_{props['major']}{props['minor']}"


def require_gpu() -> None:
    ok, why = gpu_status()
    if not ok:
        raise GpuUnavailable(why, "run this command on a machine with an NVIDIA GPU and driver")


def compute_capability() -> int:
    """e.g. 90 for Hopper. Requires a GPU."""
    require_gpu()
    import cupy as cp

    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    return props["major"] * 10 + props["minor"]


@functools.lru_cache(maxsize=None)
def _gpu_name(device_id: int) -> str:
    import cupy

    name = cupy.cuda.runtime.getDeviceProperties(device_id)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def current_gpu_name() -> str | None:
    """Name of the current CUDA device (what tuned choices are keyed by), or None without a usable GPU."""
    if not gpu_status()[0]:
        return None
    import cupy

    return _gpu_name(cupy.cuda.Device().id)


def current_sm_count() -> int | None:
    """SMs of the current CUDA device, or None without a usable GPU."""
    if not gpu_status()[0]:
        return None
    import cupy

    return int(cupy.cuda.Device().attributes["MultiProcessorCount"])
