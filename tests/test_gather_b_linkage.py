"""Two gather_b libraries (fp16, bf16) loaded in one process must not share C++ static state.

glibc binds STB_GNU_UNIQUE symbols process-wide even under RTLD_LOCAL. When the template's kernel type
had one fixed name for every dtype, GemmUniversalBase<PerBatchGatherKernel>'s thread_local device state
and gemm_run's static operator were such symbols: the second library loaded reused the first one's
"device initialized" flag, never raised its own kernel's dynamic shared-memory limit, and every launch
over 48 KB failed (kErrorInternal on the H100 for bf16/tf32). Checked on the built ELF files (no GPU)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from cutlass_wsp.errors import WspError
from cutlass_wsp.families.gather import gather_desc
from cutlass_wsp.kernels.cache import KernelCache

pytestmark = pytest.mark.compile

# Same shape as tests/test_compile_families.py, so the fp16 build is shared through the session cache.
DESCS = [gather_desc("fp16", N=3136, K=256), gather_desc("bf16", N=3136, K=256)]


@pytest.fixture(scope="module")
def paths(compile_cache_dir):
    if shutil.which("readelf") is None:
        pytest.skip("readelf (binutils) is not installed")
    cache = KernelCache(compile_cache_dir)
    try:
        cache.toolchain
    except WspError as e:
        pytest.skip(f"no CUDA toolchain: {e}")
    return cache.compile_many(DESCS, jobs=2)


def unique_symbols(path) -> set[str]:
    """Names of the dynamic symbols with binding UNIQUE (bound once per process by the loader)."""
    out = subprocess.run(["readelf", "--dyn-syms", "-W", str(path)], check=True, capture_output=True,
                         text=True).stdout
    names = set()
    for line in out.splitlines():
        cols = line.split()
        if len(cols) >= 8 and cols[4] == "UNIQUE":
            names.add(cols[7])
    return names


def test_gather_b_libraries_share_no_process_wide_state(paths):
    fp16, bf16 = (unique_symbols(p) for p in paths)
    # cuda::std's empty tag objects (in_place, ranges::begin...) are UNIQUE in every CUDA library: harmless.
    shared = {s for s in fp16 & bf16 if not s.startswith("_ZN4cuda3std")}
    assert not shared, f"gather_b libraries would share these objects across dtypes: {sorted(shared)}"


def test_gather_b_kernel_type_is_not_exported(paths):
    for path in paths:
        leaked = [s for s in unique_symbols(path) if "PerBatchGatherKernel" in s and not s.startswith("_ZGV")]
        assert not leaked, f"{path} exports kernel-specific static state: {leaked}"
