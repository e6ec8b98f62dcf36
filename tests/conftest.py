"""Shared test setup: GPU tests skip with the reason; compiled kernels share one cache per session."""

from __future__ import annotations

import os

import pytest

from cutlass_wsp.gpu.device import gpu_status


def pytest_collection_modifyitems(config, items):
    ok, why = gpu_status()
    if ok:
        return
    skip = pytest.mark.skip(reason=f"GPU test: {why}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def compile_cache_dir(tmp_path_factory):
    """One compile cache for the whole test session, so each kernel compiles once.
    CUTLASS_WSP_CACHE, when set (CI, device runs), is used instead so builds survive between runs."""
    path = os.environ.get("CUTLASS_WSP_CACHE")
    if path:
        return path
    return str(tmp_path_factory.mktemp("wsp-cache"))


@pytest.fixture(scope="session")
def kernel_cache(compile_cache_dir):
    """A KernelCache on the session's cache dir; compile tests skip (with the reason) without nvcc."""
    from cutlass_wsp.errors import WspError
    from cutlass_wsp.kernels.cache import KernelCache

    cache = KernelCache(compile_cache_dir)
    try:
        cache.toolchain
    except WspError as e:
        pytest.skip(f"no CUDA toolchain: {e}")
    return cache
