"""The ctypes mirror of the C ABI and KernelLibrary, against CPU-only libraries built with gcc."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess

import pytest

from cutlass_wsp.errors import KernelError
from cutlass_wsp.kernels.cache import KernelCache
from cutlass_wsp.kernels.description import default_desc
from cutlass_wsp.kernels.emitter import templates_dir
from cutlass_wsp.kernels.library import (ABI_VERSION, CUDA_ERROR_BASE, KernelLibrary, WspArgs, get_kernel,
                                         make_args, status_message)

from test_compile_cache import count, make_fake_toolchain

HEADER = templates_dir() / "wsp_abi.h"
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build test libraries")


def test_abi_version_matches_the_header():
    text = HEADER.read_text()
    assert int(re.search(r"#define WSP_ABI_VERSION (\d+)", text).group(1)) == ABI_VERSION
    assert int(re.search(r"#define WSP_CUDA_ERROR_BASE (\d+)", text).group(1)) == CUDA_ERROR_BASE


@needs_gcc
def test_ctypes_mirror_has_the_c_layout(tmp_path):
    """sizeof and every field offset of wsp_args as gcc lays it out == the ctypes Structure."""
    fields = [f[0] for f in WspArgs._fields_]
    prog = tmp_path / "layout.c"
    prints = "\n".join(f'  printf("{f} %zu\\n", offsetof(wsp_args, {f}));' for f in fields)
    prog.write_text(f'#include <stdio.h>\n#include <stddef.h>\n#include "wsp_abi.h"\nint main(void) {{\n'
                    f'  printf("sizeof %zu\\n", sizeof(wsp_args));\n{prints}\n  return 0;\n}}\n')
    exe = tmp_path / "layout"
    subprocess.run(["gcc", f"-I{HEADER.parent}", "-o", str(exe), str(prog)], check=True)
    c_layout = dict(line.split() for line in subprocess.run([str(exe)], capture_output=True, text=True,
                                                            check=True).stdout.splitlines())
    assert int(c_layout["sizeof"]) == ctypes.sizeof(WspArgs)
    for f in fields:
        assert int(c_layout[f]) == getattr(WspArgs, f).offset, f


@pytest.fixture
def gcc_cache(tmp_path, monkeypatch):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build test libraries")
    log = tmp_path / "compiles.log"
    monkeypatch.setenv("FAKE_NVCC_LOG", str(log))
    monkeypatch.setenv("FAKE_NVCC_MODE", "gcc")
    monkeypatch.delenv("FAKE_NVCC_ABI", raising=False)
    monkeypatch.delenv("FAKE_NVCC_FAIL", raising=False)
    cache = KernelCache(tmp_path / "cache", toolchain=make_fake_toolchain(tmp_path))
    cache.compile_log = log
    return cache


def _args(**kw) -> WspArgs:
    base = dict(M=64, N=64, K=32, L=2, lda=32, ldb=64, ldd=64, batch_stride_A=64 * 32, batch_stride_B=32 * 64,
                batch_stride_D=64 * 64)
    base.update(kw)
    return make_args(**base)


def test_get_kernel_loads_and_calls_the_abi(gcc_cache):
    desc = default_desc("dense", "fp16", "sm80")
    lib = get_kernel(desc, gcc_cache)
    assert isinstance(lib, KernelLibrary) and lib.name == desc.name and lib.desc == desc
    assert lib.can_implement(_args()) and not lib.can_implement(_args(N=12))
    assert lib.workspace_size(_args(L=3)) == 768
    out = (ctypes.c_float * 4)()
    ws = (ctypes.c_uint8 * 512)()
    args = _args(D=ctypes.addressof(out), alpha=2.0, K=40, ldd=72, batch_stride_D=100)
    lib.run(args, ctypes.addressof(ws))
    assert out[0] == pytest.approx(2.0 * 40 + 72 + 50)      # alpha, K, ldd, batch_stride_D crossed intact
    assert get_kernel(desc, gcc_cache) is lib and count(gcc_cache.compile_log) == 1


def test_status_codes_become_readable_kernel_errors(gcc_cache):
    lib = get_kernel(default_desc("dense", "fp16", "sm80"), gcc_cache)
    with pytest.raises(KernelError, match=r"kErrorMisalignedOperand.*N=12.*use alignment 4 .*multiple of 8"):
        lib.check(_args(N=12))
    with pytest.raises(KernelError, match="kErrorInvalidProblem"):
        lib.run(_args(M=0))
    with pytest.raises(KernelError, match="CUDA error 700"):
        lib.run(_args(M=13), 1)
    with pytest.raises(KernelError, match="kErrorWorkspaceNull"):
        lib.run(_args(), None)


def test_wrong_abi_version_is_rebuilt_once_then_refused(gcc_cache, monkeypatch):
    monkeypatch.setenv("FAKE_NVCC_ABI", str(ABI_VERSION + 1))
    with pytest.raises(KernelError, match=f"ABI version {ABI_VERSION + 1}"):
        get_kernel(default_desc("dense", "bf16", "sm80"), gcc_cache)
    assert count(gcc_cache.compile_log) == 2


def test_a_library_that_will_not_load_is_rebuilt(gcc_cache, monkeypatch):
    desc = default_desc("dense", "tf32", "sm80")
    monkeypatch.setenv("FAKE_NVCC_MODE", "blob")       # not an ELF file: dlopen fails
    gcc_cache.get(desc)
    monkeypatch.setenv("FAKE_NVCC_MODE", "gcc")        # the rebuild produces a good one
    lib = get_kernel(desc, gcc_cache)
    assert lib.name == desc.name and count(gcc_cache.compile_log) == 2


@needs_gcc
def test_missing_symbol_is_refused(tmp_path):
    src = tmp_path / "partial.c"
    src.write_text('#include "wsp_abi.h"\nint wsp_abi_version(void) { return WSP_ABI_VERSION; }\n')
    so = tmp_path / "partial.so"
    subprocess.run(["gcc", "-shared", "-fPIC", f"-I{HEADER.parent}", "-o", str(so), str(src)], check=True)
    with pytest.raises(KernelError, match="does not export the wsp C ABI"):
        KernelLibrary(so)


def test_unloadable_path_is_a_kernel_error(tmp_path):
    bad = tmp_path / "bad.so"
    bad.write_bytes(b"not a library")
    with pytest.raises(KernelError, match="could not load"):
        KernelLibrary(bad)


def test_status_message_names():
    assert status_message(0).startswith("kSuccess")
    assert status_message(7).startswith("kErrorInternal")
    assert "CUDA error 2" in status_message(CUDA_ERROR_BASE + 2)
    assert "status 99" in status_message(99)
    with pytest.raises(TypeError):
        make_args(nope=1)
