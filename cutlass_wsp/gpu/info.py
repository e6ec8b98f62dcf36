"""Provenance of a measurement: which GPU, clocks, driver, CUDA, CuPy, CUTLASS, nvcc and code produced it.

Never raises: anything unreadable is None. Without a GPU the GPU fields are None and `gpu_error`
says why; the CPU-side fields (versions, git commit, host, time) are still filled in.
"""

from __future__ import annotations

import datetime as _dt
import platform
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

GPU_FIELDS = ("gpu_name", "gpu_pci_bus_id", "sm_count", "compute_capability", "l2_bytes", "memory_bytes",
              "sm_clock_mhz", "mem_clock_mhz", "sm_clock_max_mhz", "mem_clock_max_mhz", "driver_version",
              "cuda_driver_version", "cuda_runtime_version")
_NVSMI_QUERY = ("clocks.sm", "clocks.mem", "clocks.max.sm", "clocks.max.mem", "driver_version")


def _run(cmd: list[str], cwd: str | Path | None = None, timeout: float = 10.0) -> str | None:
    """stdout of a command, or None if it is missing, fails or hangs."""
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(path: str | Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout holding the cutlass_wsp package (or `path`); (None, None) if
    that is not the top of a git work tree (e.g. an installed wheel inside someone else's repo).
    CUTLASS_WSP_GIT_COMMIT names the commit where the tree was copied without its .git (device runs)."""
    env = os.environ.get("CUTLASS_WSP_GIT_COMMIT")
    if env:
        commit, _, flag = env.partition("-")
        return commit, flag == "dirty"
    if path is None:
        path = Path(__file__).resolve().parents[2]
    path = Path(path).resolve()
    if shutil.which("git") is None:
        return None, None
    top = _run(["git", "rev-parse", "--show-toplevel"], cwd=path)
    if top is None or Path(top).resolve() != path:
        return None, None
    commit = _run(["git", "rev-parse", "HEAD"], cwd=path)
    if commit is None:  # a repository without commits
        return None, None
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path)
    return commit, (None if status is None else bool(status))


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _cupy_version() -> str | None:
    try:
        import cupy
    except Exception:
        return None
    return cupy.__version__


def _toolchain_versions() -> dict[str, str | None]:
    """CUTLASS headers' version and nvcc's, each None when not found."""
    from cutlass_wsp.errors import WspError
    from cutlass_wsp.kernels import toolchain

    out: dict[str, str | None] = {"cutlass_version": None, "nvcc_version": None}
    try:
        out["cutlass_version"] = toolchain.find_cutlass()[2]
    except (WspError, OSError):
        pass
    try:
        out["nvcc_version"] = toolchain.nvcc_version(toolchain.find_nvcc())
    except (WspError, OSError):
        pass
    return out


def _cuda_version(v: int) -> str:
    """13000 -> '13.0'."""
    return f"{v // 1000}.{(v % 1000) // 10}"


def _nvidia_smi(pci_bus_id: str | None) -> dict[str, Any]:
    """Current and max clocks (MHz) and the driver version, by PCI bus id so CUDA and NVML agree."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    cmd = [exe, f"--query-gpu={','.join(_NVSMI_QUERY)}", "--format=csv,noheader,nounits"]
    if pci_bus_id:
        cmd += ["-i", pci_bus_id]
    text = _run(cmd)
    if not text:
        return {}
    vals = [v.strip() for v in text.splitlines()[0].split(",")]
    if len(vals) != len(_NVSMI_QUERY):
        return {}

    def num(s: str) -> int | None:
        try:
            return int(float(s))
        except ValueError:  # "[N/A]", "[Not Supported]"
            return None

    return {"sm_clock_mhz": num(vals[0]), "mem_clock_mhz": num(vals[1]), "sm_clock_max_mhz": num(vals[2]),
            "mem_clock_max_mhz": num(vals[3]), "driver_version": vals[4] or None}


def _pynvml(pci_bus_id: str | None) -> dict[str, Any]:
    """The same through pynvml, when nvidia-smi is absent and pynvml is installed."""
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        try:
            h = (pynvml.nvmlDeviceGetHandleByPciBusId(pci_bus_id) if pci_bus_id
                 else pynvml.nvmlDeviceGetHandleByIndex(0))
            drv = pynvml.nvmlSystemGetDriverVersion()
            return {"sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
                    "mem_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM),
                    "sm_clock_max_mhz": pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM),
                    "mem_clock_max_mhz": pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_MEM),
                    "driver_version": drv.decode() if isinstance(drv, bytes) else drv}
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return {}


def gpu_info() -> dict[str, Any]:
    """GPU fields (see GPU_FIELDS) plus `gpu_error` (None when the GPU was read)."""
    info: dict[str, Any] = dict.fromkeys(GPU_FIELDS)
    from cutlass_wsp.gpu.device import gpu_status

    ok, why = gpu_status()
    if not ok:
        info["gpu_error"] = why
        return info
    try:
        import cupy

        rt = cupy.cuda.runtime
        dev = cupy.cuda.Device().id
        props = rt.getDeviceProperties(dev)
        name = props["name"]
        info.update(
            gpu_name=name.decode() if isinstance(name, bytes) else name,
            sm_count=int(props["multiProcessorCount"]),
            compute_capability=int(props["major"]) * 10 + int(props["minor"]),
            l2_bytes=int(rt.deviceGetAttribute(rt.cudaDevAttrL2CacheSize, dev)),
            memory_bytes=int(props["totalGlobalMem"]),
            cuda_driver_version=_cuda_version(rt.driverGetVersion()),
            cuda_runtime_version=_cuda_version(rt.runtimeGetVersion()),
        )
        try:
            info["gpu_pci_bus_id"] = rt.deviceGetPCIBusId(dev)
        except Exception:
            pass
    except Exception as e:
        info["gpu_error"] = f"{type(e).__name__}: {e}"
        return info
    clocks = _nvidia_smi(info["gpu_pci_bus_id"]) or _pynvml(info["gpu_pci_bus_id"])
    info.update({k: v for k, v in clocks.items() if v is not None})
    info["gpu_error"] = None
    return info


def provenance() -> dict[str, Any]:
    """Everything needed to say where a number came from. CPU-only machines get GPU fields = None."""
    import numpy

    from cutlass_wsp import __version__

    commit, dirty = git_state()
    out: dict[str, Any] = {
        "timestamp_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "cupy": _cupy_version(),
        "cutlass_wsp": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "nvidia_cutlass_wheel": _version("nvidia-cutlass"),
    }
    out.update(_toolchain_versions())
    out.update(gpu_info())
    return out
