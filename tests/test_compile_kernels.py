"""Real nvcc builds of one dense kernel per arch (sm90 fp16, sm80 fp16) into the session cache; the
libraries must export the C ABI and load with ctypes without a GPU (the CUDA runtime is static)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from cutlass_wsp.errors import KernelError
from cutlass_wsp.gpu.device import gpu_status
from cutlass_wsp.kernels.description import default_desc
from cutlass_wsp.kernels.library import KernelLibrary, load, make_args

pytestmark = pytest.mark.compile

DESCS = {"sm90": default_desc("dense", "fp16", "sm90"), "sm80": default_desc("dense", "fp16", "sm80")}
ABI_FUNCTIONS = ("wsp_abi_version", "wsp_args_size", "wsp_kernel_name", "wsp_can_implement",
                 "wsp_workspace_size", "wsp_run")


@pytest.fixture(scope="module")
def built(kernel_cache):
    paths = kernel_cache.compile_many(DESCS.values(), jobs=2)
    return dict(zip(DESCS, paths))


def _args(**kw):
    """A problem the kernels accept: 16-byte aligned fake pointers (never dereferenced here)."""
    base = dict(M=256, N=3136, K=128, L=16, A=0x10000, B=0x20000, D=0x30000, lda=128, ldb=3136, ldd=3136,
                batch_stride_A=256 * 128, batch_stride_B=128 * 3136, batch_stride_D=256 * 3136,
                sm_count=132, device_id=0)
    base.update(kw)
    return make_args(**base)


@pytest.mark.parametrize("arch", list(DESCS))
def test_library_exports_the_abi(built, arch):
    so = built[arch]
    if shutil.which("nm"):
        out = subprocess.run(["nm", "-D", "--defined-only", str(so)], capture_output=True, text=True).stdout
        exported = {line.split()[-1] for line in out.splitlines() if line.strip()}
        assert set(ABI_FUNCTIONS) <= exported
    if shutil.which("ldd"):
        deps = subprocess.run(["ldd", str(so)], capture_output=True, text=True).stdout
        assert "libcudart" not in deps       # static runtime: loads on machines without the toolkit


@pytest.mark.parametrize("arch", list(DESCS))
def test_library_loads_and_checks_arguments(built, arch):
    desc = DESCS[arch]
    lib = load(built[arch], desc)
    assert isinstance(lib, KernelLibrary) and lib.name == desc.name
    assert lib.can_implement(_args())
    assert lib.can_implement_status(_args(N=3132, ldb=3136, ldd=3136)) == 1      # N % 8 != 0
    assert lib.can_implement_status(_args(A=0x10002)) == 1                      # misaligned pointer
    assert lib.can_implement_status(_args(lda=132)) == 1                        # lda % 8 != 0
    assert lib.can_implement_status(_args(lda=64)) == 4                         # lda < K
    with pytest.raises(KernelError, match="kErrorMisalignedOperand.*use alignment 4 "):
        lib.check(_args(N=100, ldb=100, ldd=100))


@pytest.mark.parametrize("arch", list(DESCS))
def test_build_is_clean_and_cached(kernel_cache, built, arch):
    desc = DESCS[arch]
    assert kernel_cache.lookup(desc) == built[arch]
    manifest = kernel_cache.manifest(desc)
    assert manifest["nvcc_version"] == kernel_cache.toolchain.nvcc_version
    assert "warning" not in manifest["log"].lower(), manifest["log"]        # e.g. C7510 wgmma serialization


@pytest.mark.skipif(gpu_status()[0], reason="launch with fake pointers only where there is no GPU")
def test_run_without_a_gpu_is_a_kernel_error(built):
    lib = load(built["sm80"], DESCS["sm80"])
    with pytest.raises(KernelError):
        lib.run(_args())
