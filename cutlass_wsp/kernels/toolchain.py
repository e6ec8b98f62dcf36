"""Find nvcc and the CUTLASS headers, and say how to build a kernel with them.

nvcc: $CUTLASS_WSP_NVCC, then $CUDA_HOME/bin/nvcc, $CUDA_PATH/bin/nvcc, then PATH, then a pip-installed
CUDA compiler (cuda.pathfinder). CUTLASS: $CUTLASS_WSP_CUTLASS_DIR (a CUTLASS checkout root), else the
nvidia-cutlass wheel (`cutlass_library/source`).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cutlass_wsp.errors import ToolchainError

NVCC_FIX = ("install the CUDA toolkit (or `pip install nvidia-cuda-nvcc`), "
            "or point CUTLASS_WSP_NVCC at nvcc")
CUTLASS_FIX = "pip install nvidia-cutlass, or set CUTLASS_WSP_CUTLASS_DIR to a CUTLASS checkout"

# -gencode per kernel arch. sm90 kernels use wgmma/TMA: only sm_90a runs them. sm80 (2.x) kernels are
# built for Hopper, the target, and for sm_80 SASS (A100 and, binary-compatible, sm86/sm89); see
# docs/kernels.md for the compile-time cost of the second target.
GENCODE = {
    "sm90": ["-gencode=arch=compute_90a,code=sm_90a"],
    "sm80": ["-gencode=arch=compute_90a,code=sm_90a", "-gencode=arch=compute_80,code=sm_80"],
}
BASE_FLAGS = [
    "-std=c++17", "-O3", "-DNDEBUG",          # without NDEBUG nvcc serialises wgmma (warning C7510)
    "-Xcompiler", "-fPIC", "-shared",
    "--expt-relaxed-constexpr",
    "-cudart", "static",                      # the .so loads without libcudart on the library path
    # Keep each library's C++ statics its own: GCC otherwise marks template statics STB_GNU_UNIQUE and
    # glibc shares them across RTLD_LOCAL libraries, so a second library with the same CUTLASS type
    # skipped its own init (the gather_b bf16/tf32 launch failures on the H100).
    "-Xcompiler", "-fno-gnu-unique",
]


@dataclass(frozen=True)
class Toolchain:
    nvcc: str
    nvcc_version: str                 # e.g. "13.0.88"
    cutlass_include: tuple[str, ...]  # include dirs: cutlass/include, cutlass/tools/util/include
    cutlass_version: str              # e.g. "4.2.0"
    cutlass_root: str = ""
    extra_flags: tuple[str, ...] = field(default=())

    def flags(self, arch: str) -> list[str]:
        """nvcc flags for a kernel of `arch` (without -o and the source file)."""
        if arch not in GENCODE:
            raise ToolchainError(f"no nvcc targets for arch {arch!r}", f"use one of {', '.join(GENCODE)}")
        includes = [f"-I{p}" for p in self.cutlass_include]
        return [*BASE_FLAGS, *GENCODE[arch], *includes, *self.extra_flags]

    def command(self, source: str | os.PathLike, output: str | os.PathLike, arch: str) -> list[str]:
        return [self.nvcc, *self.flags(arch), "-o", str(output), str(source)]


# ------------------------------------------------------------------------------------------ nvcc
def _pathfinder_nvcc() -> str | None:
    try:
        from cuda import pathfinder  # type: ignore[import-not-found]
    except Exception:
        return None
    try:
        return pathfinder.find_nvidia_binary_utility("nvcc")
    except Exception:
        return None


def find_nvcc() -> str:
    """Path of nvcc, by the order in the module docstring. ToolchainError when none is found."""
    override = os.environ.get("CUTLASS_WSP_NVCC")
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise ToolchainError(f"CUTLASS_WSP_NVCC={override} is not an executable file",
                                 "point it at nvcc, or unset it to search CUDA_HOME and PATH")
        return override
    for var in ("CUDA_HOME", "CUDA_PATH"):
        root = os.environ.get(var)
        if root:
            cand = os.path.join(root, "bin", "nvcc")
            if os.path.isfile(cand) and os.access(cand, os.X_OK):
                return cand
    on_path = shutil.which("nvcc")
    if on_path:
        return on_path
    found = _pathfinder_nvcc()
    if found:
        return found
    raise ToolchainError("nvcc not found (CUTLASS_WSP_NVCC, CUDA_HOME, CUDA_PATH, PATH, pip packages)", NVCC_FIX)


def nvcc_version(nvcc: str) -> str:
    """'13.0.88' parsed from `nvcc --version` (its 'V13.0.88' token, else 'release 13.0')."""
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise ToolchainError(f"could not run {nvcc} --version ({e})", NVCC_FIX) from None
    text = out.stdout + out.stderr
    m = re.search(r"\bV(\d+\.\d+(?:\.\d+)?)", text) or re.search(r"release (\d+\.\d+)", text)
    if out.returncode != 0 or not m:
        raise ToolchainError(f"{nvcc} --version did not report a CUDA version: {text.strip()[:200]!r}", NVCC_FIX)
    return m.group(1)


# --------------------------------------------------------------------------------------- CUTLASS
def _cutlass_root() -> Path:
    override = os.environ.get("CUTLASS_WSP_CUTLASS_DIR")
    if override:
        root = Path(override)
        if not (root / "include" / "cutlass" / "cutlass.h").is_file():
            raise ToolchainError(f"CUTLASS_WSP_CUTLASS_DIR={override} has no include/cutlass/cutlass.h",
                                 "point it at the root of a CUTLASS checkout, or unset it to use the wheel")
        return root
    try:
        spec = importlib.util.find_spec("cutlass_library")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ToolchainError("CUTLASS headers not found (no cutlass_library package)", CUTLASS_FIX)
    root = Path(list(spec.submodule_search_locations)[0]) / "source"
    if not (root / "include" / "cutlass" / "cutlass.h").is_file():
        raise ToolchainError(f"the cutlass_library package at {root.parent} ships no C++ headers", CUTLASS_FIX)
    return root


def cutlass_version(root: Path) -> str:
    """'4.2.0' from include/cutlass/version.h, else the nvidia-cutlass wheel's metadata, else 'unknown'."""
    header = root / "include" / "cutlass" / "version.h"
    try:
        text = header.read_text()
        parts = [re.search(rf"#define\s+CUTLASS_{k}\s+(\d+)", text) for k in ("MAJOR", "MINOR", "PATCH")]
        if all(parts):
            return ".".join(p.group(1) for p in parts)  # type: ignore[union-attr]
    except OSError:
        pass
    try:
        from importlib.metadata import version

        return version("nvidia-cutlass")
    except Exception:
        return "unknown"


def find_cutlass() -> tuple[Path, tuple[str, ...], str]:
    """(root, include dirs, version)."""
    root = _cutlass_root()
    includes = (str(root / "include"), str(root / "tools" / "util" / "include"))
    return root, includes, cutlass_version(root)


@functools.lru_cache(maxsize=None)
def _discover(env_key: tuple) -> Toolchain:
    nvcc = find_nvcc()
    root, includes, version = find_cutlass()
    return Toolchain(nvcc=nvcc, nvcc_version=nvcc_version(nvcc), cutlass_include=includes,
                     cutlass_version=version, cutlass_root=str(root))


def discover() -> Toolchain:
    """The toolchain for this environment (memoised per value of the variables that steer discovery)."""
    key = tuple(os.environ.get(v, "") for v in
                ("CUTLASS_WSP_NVCC", "CUDA_HOME", "CUDA_PATH", "PATH", "CUTLASS_WSP_CUTLASS_DIR"))
    return _discover(key)
