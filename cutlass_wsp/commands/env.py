"""`cutlass-wsp env`: is everything a run needs here? GPU, CuPy, nvcc, CUTLASS headers, compile cache."""

from __future__ import annotations

import argparse

HELP = "check the GPU, CuPy, nvcc, CUTLASS headers and compile cache this machine would use"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _gpu() -> tuple[bool, str, str]:
    from cutlass_wsp.gpu.device import gpu_status

    ok, what = gpu_status()
    if not ok:
        return False, what, "run on a machine with an NVIDIA GPU and driver (GPU commands need one)"
    try:
        import cupy

        rt = cupy.cuda.runtime
        drv, run = rt.driverGetVersion(), rt.runtimeGetVersion()
        what += f" (driver CUDA {drv // 1000}.{drv % 1000 // 10}, runtime {run // 1000}.{run % 1000 // 10})"
    except Exception:
        pass
    return True, what, ""


def _cupy() -> tuple[bool, str, str]:
    try:
        import cupy
    except Exception as e:
        return False, f"not importable ({type(e).__name__})", "pip install 'cutlass-wsp[cuda13]' (or [cuda12])"
    return True, cupy.__version__, ""


def _nvcc() -> tuple[bool, str, str]:
    from cutlass_wsp.errors import WspError
    from cutlass_wsp.kernels import toolchain

    try:
        path = toolchain.find_nvcc()
        return True, f"{toolchain.nvcc_version(path)} at {path}", ""
    except WspError as e:
        return False, e.problem, e.fix or toolchain.NVCC_FIX


def _cutlass() -> tuple[bool, str, str]:
    from cutlass_wsp.errors import WspError
    from cutlass_wsp.kernels import toolchain

    try:
        root, _, version = toolchain.find_cutlass()
        return True, f"{version} at {root}", ""
    except WspError as e:
        return False, e.problem, e.fix or toolchain.CUTLASS_FIX


CACHE_FIX = "set CUTLASS_WSP_CACHE to a folder you can write to"


def _cache() -> tuple[bool, str, str]:
    from cutlass_wsp.kernels.cache import KernelCache, default_cache_dir
    from cutlass_wsp.storage import folder_problem

    root = default_cache_dir()
    problem = folder_problem(root)
    if problem:
        return False, f"{root} {problem}", CACHE_FIX
    try:
        info = KernelCache().info()
    except OSError as e:
        return False, f"unreadable ({e})", CACHE_FIX
    return True, f"{info['path']} ({info['entries']} kernels, {_human_bytes(info['bytes'])})", ""


CHECKS = (("GPU", _gpu), ("CuPy", _cupy), ("nvcc", _nvcc), ("CUTLASS", _cutlass), ("cache", _cache))


def run(args: argparse.Namespace) -> int:
    missing = 0
    for label, check in CHECKS:
        ok, what, fix = check()
        print(f"{label:<8} {'ok' if ok else 'MISSING':<8} {what}")
        if not ok:
            missing += 1
            print(f"{'':<17} -> {fix}")
    return 0 if missing == 0 else 1
