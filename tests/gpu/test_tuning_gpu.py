"""Tuning on the GPU: a 3-candidate search over one small shape picks a kernel that verifies and is not
slower than the default beyond noise, and tuned_or_default returns it; the stream-K / split-K kernels
the search offers for few-tile shapes compute the right result."""

from __future__ import annotations

import pytest

from cutlass_wsp.kernels.tuning import TuningStore, tune, tuned_or_default
from cutlass_wsp.problem import BatchProblem

P = BatchProblem(L=16, M=128, N=6272, K=128)     # ResNet-18 128->128@28, p=4, batch 32


@pytest.fixture(scope="module")
def arch():
    from cutlass_wsp.gpu.device import compute_capability
    from cutlass_wsp.kernels.manifest import arch_for_device

    return arch_for_device(compute_capability())


def _run_checked(desc, cache, problem, dtype="fp16", runs=1):
    """Fresh data; `runs` times: poison the output, run, check against fp32 cuBLAS. Returns the launch."""
    import cupy

    from cutlass_wsp.families.dense import DenseBatch
    from cutlass_wsp.gpu import arrays
    from cutlass_wsp.gpu.baselines import CublasBatched
    from cutlass_wsp.gpu.verify import check
    from cutlass_wsp.kernels.library import get_kernel

    L, M, N, K = problem.L, problem.M, problem.N, problem.K
    W = arrays.random((L, M, K), dtype)
    X = arrays.random((L, K, N), dtype)
    Y = arrays.empty((L, M, N), dtype)
    launch = DenseBatch(get_kernel(desc, cache)).prepare(W, X, Y)
    ref = arrays.empty((L, M, N), "fp32")
    CublasBatched("fp32").run(arrays.to_float32(W, dtype), arrays.to_float32(X, dtype), ref)
    for _ in range(runs):
        arrays.poison(Y, dtype)
        launch()
        cupy.cuda.get_current_stream().synchronize()
        check(Y, ref, dtype, desc.name, K=K)
    return launch


def test_tuning_picks_a_verified_kernel_no_slower_than_the_default(compile_cache_dir, tmp_path, arch):
    from cutlass_wsp.gpu.timing import time_gpu
    from cutlass_wsp.kernels.cache import KernelCache

    cache = KernelCache(compile_cache_dir)
    # A private tuning file: a 3-candidate search must not be remembered in the shared cache's.
    store = TuningStore(tmp_path / "tuning.json")
    result = tune(P, "fp16", arch, cache=cache, store=store, limit=3, budget_s=3.0)
    assert len({t.desc for t in result.trials}) == 3
    assert all(t.status == "ok" for t in result.trials), [t.to_dict() for t in result.trials if not t.ok]
    assert result.best is not None and result.recorded and result.default_ms is not None
    assert tuned_or_default(P, "fp16", arch, cache, store=store) == result.best

    # Independently: the winner verifies on fresh data, and timed alternately with the default it is
    # not slower beyond noise.
    best = _run_checked(result.best, cache, P)
    default = _run_checked(result.default, cache, P)
    times = {"best": [], "default": []}
    for _ in range(3):
        for name, launch in (("best", best), ("default", default)):
            times[name].append(time_gpu(launch, budget_s=0.3, flush_l2=True).median_ms)
    best_ms, default_ms = sorted(times["best"])[1], sorted(times["default"])[1]
    assert best_ms <= 1.10 * default_ms + 0.002, (result.best.name, best_ms, default_ms)


@pytest.mark.parametrize("problem", [BatchProblem(36, 512, 128, 512),     # ResNet-18 512->512@7, p=6
                                     BatchProblem(16, 256, 1568, 256)])   # ResNet-18 256->256@14, p=4
def test_stream_k_and_split_k_kernels_verify(problem, compile_cache_dir, arch):
    from cutlass_wsp.kernels.cache import KernelCache
    from cutlass_wsp.kernels.description import default_desc

    if arch != "sm90":
        pytest.skip("the tile-scheduler knob is sm90-only")
    cache = KernelCache(compile_cache_dir)
    descs = [default_desc("dense", "fp16", "sm90", tile=(256, 128, 64),
                          extra=(("scheduler", "streamk"), ("splits", 2))),
             default_desc("dense", "fp16", "sm90", tile=(256, 128, 32), extra=(("scheduler", "streamk"),))]
    cache.compile_many(descs, jobs=2)
    for d in descs:
        # twice on the same buffers: every launch with a workspace re-initializes it
        _run_checked(d, cache, problem, runs=2)
