"""Toolchain discovery honours CUTLASS_WSP_NVCC, CUDA_HOME/CUDA_PATH, PATH, pip packages, and
CUTLASS_WSP_CUTLASS_DIR; fake nvcc scripts stand in for the compiler."""

from __future__ import annotations

import importlib.metadata
import stat
from pathlib import Path

import pytest

from cutlass_wsp.errors import ToolchainError
from cutlass_wsp.kernels import toolchain


def fake_nvcc(directory: Path, version: str = "12.4.131", banner: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    exe = directory / "nvcc"
    if banner is None:
        banner = (f"nvcc: NVIDIA (R) Cuda compiler driver\nCopyright (c) 2005-2024 NVIDIA Corporation\n"
                  f"Cuda compilation tools, release {version.rsplit('.', 1)[0]}, V{version}")
    # shell builtins only: tests run it with an empty PATH
    exe.write_text("#!/bin/sh\n" + "".join(f"echo '{line}'\n" for line in banner.splitlines()))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No nvcc anywhere unless a test puts one there."""
    for var in ("CUTLASS_WSP_NVCC", "CUDA_HOME", "CUDA_PATH", "CUTLASS_WSP_CUTLASS_DIR"):
        monkeypatch.delenv(var, raising=False)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(toolchain, "_pathfinder_nvcc", lambda: None)
    return monkeypatch


def test_override_wins_over_everything(clean_env, tmp_path):
    chosen = fake_nvcc(tmp_path / "chosen", "12.8.93")
    clean_env.setenv("CUDA_HOME", str(fake_nvcc(tmp_path / "home" / "bin").parent.parent))
    clean_env.setenv("PATH", str(fake_nvcc(tmp_path / "onpath").parent))
    clean_env.setenv("CUTLASS_WSP_NVCC", str(chosen))
    assert toolchain.find_nvcc() == str(chosen)
    assert toolchain.nvcc_version(str(chosen)) == "12.8.93"


def test_override_that_is_not_executable_is_an_error(clean_env, tmp_path):
    bad = tmp_path / "nvcc"
    bad.write_text("not executable")
    clean_env.setenv("CUTLASS_WSP_NVCC", str(bad))
    with pytest.raises(ToolchainError, match="CUTLASS_WSP_NVCC") as info:
        toolchain.find_nvcc()
    assert info.value.fix


@pytest.mark.parametrize("var", ["CUDA_HOME", "CUDA_PATH"])
def test_cuda_home_before_path(clean_env, tmp_path, var):
    home = tmp_path / "cuda"
    fake_nvcc(home / "bin")
    clean_env.setenv("PATH", str(fake_nvcc(tmp_path / "onpath").parent))
    clean_env.setenv(var, str(home))
    assert toolchain.find_nvcc() == str(home / "bin" / "nvcc")


def test_cuda_home_without_nvcc_falls_through_to_path(clean_env, tmp_path):
    clean_env.setenv("CUDA_HOME", str(tmp_path / "nothing-here"))
    on_path = fake_nvcc(tmp_path / "onpath")
    clean_env.setenv("PATH", str(on_path.parent))
    assert toolchain.find_nvcc() == str(on_path)


def test_pip_installed_nvcc_is_the_last_resort(clean_env, tmp_path):
    pip_nvcc = fake_nvcc(tmp_path / "site-packages" / "nvidia" / "cuda_nvcc" / "bin")
    clean_env.setattr(toolchain, "_pathfinder_nvcc", lambda: str(pip_nvcc))
    assert toolchain.find_nvcc() == str(pip_nvcc)


def test_no_nvcc_says_how_to_get_one(clean_env):
    with pytest.raises(ToolchainError, match="nvcc not found") as info:
        toolchain.find_nvcc()
    assert "CUTLASS_WSP_NVCC" in info.value.fix and "nvidia-cuda-nvcc" in info.value.fix


def test_version_from_release_line_only(tmp_path):
    exe = fake_nvcc(tmp_path, banner="Cuda compilation tools, release 11.8")
    assert toolchain.nvcc_version(str(exe)) == "11.8"


def test_unparseable_version_is_an_error(tmp_path):
    exe = fake_nvcc(tmp_path, banner="hello")
    with pytest.raises(ToolchainError, match="did not report a CUDA version"):
        toolchain.nvcc_version(str(exe))


def _fake_cutlass(root: Path, version=(3, 9, 2)) -> Path:
    (root / "include" / "cutlass").mkdir(parents=True)
    (root / "tools" / "util" / "include").mkdir(parents=True)
    (root / "include" / "cutlass" / "cutlass.h").write_text("// fake\n")
    (root / "include" / "cutlass" / "version.h").write_text(
        "#define CUTLASS_MAJOR {}\n#define CUTLASS_MINOR {}\n#define CUTLASS_PATCH {}\n".format(*version))
    return root


def test_cutlass_dir_override(clean_env, tmp_path):
    root = _fake_cutlass(tmp_path / "cutlass")
    clean_env.setenv("CUTLASS_WSP_CUTLASS_DIR", str(root))
    found, includes, version = toolchain.find_cutlass()
    assert found == root and version == "3.9.2"
    assert includes == (str(root / "include"), str(root / "tools" / "util" / "include"))


def test_cutlass_dir_without_headers_is_an_error(clean_env, tmp_path):
    clean_env.setenv("CUTLASS_WSP_CUTLASS_DIR", str(tmp_path))
    with pytest.raises(ToolchainError, match="include/cutlass/cutlass.h"):
        toolchain.find_cutlass()


def test_wheel_headers_are_found(clean_env):
    root, includes, version = toolchain.find_cutlass()
    assert (Path(includes[0]) / "cutlass" / "gemm" / "device" / "gemm_universal.h").is_file()
    assert (Path(includes[1]) / "cutlass" / "util" / "packed_stride.hpp").is_file()
    assert importlib.metadata.version("nvidia-cutlass").startswith(version)


def test_missing_wheel_says_pip_install(clean_env):
    clean_env.setattr(toolchain.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ToolchainError, match="CUTLASS headers not found") as info:
        toolchain.find_cutlass()
    assert "pip install nvidia-cutlass" in info.value.fix


def test_discover_follows_the_environment(clean_env, tmp_path):
    a = fake_nvcc(tmp_path / "a", "12.4.131")
    b = fake_nvcc(tmp_path / "b", "13.0.88")
    clean_env.setenv("CUTLASS_WSP_NVCC", str(a))
    assert toolchain.discover().nvcc_version == "12.4.131"
    clean_env.setenv("CUTLASS_WSP_NVCC", str(b))
    tc = toolchain.discover()
    assert tc.nvcc == str(b) and tc.nvcc_version == "13.0.88"


def test_flags():
    tc = toolchain.Toolchain(nvcc="nvcc", nvcc_version="13.0", cutlass_include=("/c/include", "/c/util"),
                             cutlass_version="4.2.0")
    f90, f80 = tc.flags("sm90"), tc.flags("sm80")
    for f in (f90, f80):
        assert {"-std=c++17", "-O3", "-DNDEBUG", "-shared", "--expt-relaxed-constexpr"} <= set(f)
        assert "-gencode=arch=compute_90a,code=sm_90a" in f and "-I/c/include" in f and "-I/c/util" in f
    assert "-gencode=arch=compute_80,code=sm_80" in f80 and "-gencode=arch=compute_80,code=sm_80" not in f90
    cmd = tc.command("k.cu", "k.so", "sm90")
    assert cmd[0] == "nvcc" and cmd[-3:] == ["-o", "k.so", "k.cu"]
    with pytest.raises(ToolchainError):
        tc.flags("sm70")
