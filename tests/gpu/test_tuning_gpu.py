"""Tuning on the GPU: a 3-candidate search over one small shape picks a kernel that verifies and is not
slower than the default beyond noise, and a run's TunedChoices returns it; the stream-K / split-K kernels
the search offers for few-tile shapes compute the right result. Every tunable kernel family of the
registry with a bench point (today gather_b, fused WSP-C, and wsp_r_grouped, unbalanced WSP-R): a
3-candidate search records a verified winner that the sweep's measurer then runs (verified, row marked
tuned), and every candidate of the menus builds and verifies."""

from __future__ import annotations

import pytest

from cutlass_wsp.families import registry
from cutlass_wsp.kernels import search
from cutlass_wsp.kernels.store import TunedChoices, TuningStore
from cutlass_wsp.problem import BatchProblem, GatherTuneProblem, GroupedTuneProblem

P = BatchProblem(L=16, M=128, N=6272, K=128)     # ResNet-18 128->128@28, p=4, batch 32
BENCHED = [name for name, k in registry.tunable().items() if k.bench_point is not None]


def tune(problem, dtype, arch, **kw):
    return search.tune(problem, dtype, arch, families=registry.tunable(), **kw)


def choices(cache, store) -> TunedChoices:
    """What a run on this GPU reads from `store` (once)."""
    return TunedChoices.load(cache, store=store, checks=registry.checks())


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
    assert choices(cache, store).lookup("dense", P, "fp16", arch) == result.best

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


# ------------------------------------------------------------------- the pruned families' kernels
def _bench_point(kernel_family: str):
    """A small layer (c = n = 128, 112x112, batch 1, p = 4: T = 3136) at the kernel family's bench point."""
    from cutlass_wsp.sweep.plan import Point

    pattern, impl, balance = registry.kernel_family(kernel_family).bench_point
    ratio = 0.5 if balance == "balanced" else 0.7
    return Point("test", ("test.conv",), 128, 128, 112, 112, 1, 4, "fp16", pattern, impl, ratio, balance)


@pytest.mark.parametrize("family", BENCHED)
def test_family_tuning_verifies_records_and_the_sweep_reuses_the_winner(family, compile_cache_dir, tmp_path, arch):
    from cutlass_wsp.kernels.cache import KernelCache
    from cutlass_wsp.sweep.measure import Measurer, Workload, plan
    from cutlass_wsp.sweep.runner import TimingOptions

    cache = KernelCache(compile_cache_dir)
    store = TuningStore(tmp_path / "tuning.json")          # private: a 3-candidate search is not remembered
    point = _bench_point(family)
    found = plan(point, Workload(0), arch)
    assert found.kernel == family and found.tuned is False
    result = tune(found.problem, "fp16", arch, cache=cache, store=store, family=family, limit=3, budget_s=2.0)
    assert len({t.desc for t in result.trials}) == 3
    assert all(t.status == "ok" for t in result.trials), [t.to_dict() for t in result.trials if not t.ok]
    assert result.best is not None and result.recorded and result.default_ms is not None
    assert result.best.family == family and f"family={family}" in result.key
    tuned = choices(cache, store)
    assert tuned.lookup(family, found.problem, "fp16", arch) == result.best

    # Reused: the sweep's measurer, given this run's choices, runs the winner and verifies the point.
    m = Measurer(TimingOptions(budget_s=0.01, min_reps=3, max_reps=5, warmup=1), cache=cache, layer_time=False,
                 tuned=tuned)
    assert m.plan(point).descs == (result.best,) and m.plan(point).tuned
    row = m.measure(point)
    assert row["tuned"] is True and result.best.name in row["kernel"] and row["rel_error"] is not None


def _fits_this_gpu(desc) -> bool:
    """sm80 kernels with deep pipelines need the opt-in shared memory of an A100/H100 (sm86/89: 99 KB)."""
    import cupy

    optin = cupy.cuda.Device().attributes["MaxSharedMemoryPerBlockOptin"]
    return desc.arch != "sm80" or desc.sm80_stages() * desc.stage_bytes() <= optin


# Problems that reach every knob of a menu (the registry's other tunable families: their own bench point's
# problem at ratio 0.5 / 0.7).
MENU_PROBLEMS = {
    # ResNet-18 layer4 under WSP-C at 0.5: every gather knob (256-row, deep stages, swizzle 2/4, tile K 64,
    # the few-waves 256x64 tile)
    "gather_b": GatherTuneProblem(BatchProblem(16, 512, 512, 256), 512),
    # unequal groups from 1 to 512 rows: 64/128/256-row tiles, tile K 128, 2x1 clusters over groups too
    # short for them, the few-waves 128x64 tiles
    "wsp_r_grouped": GroupedTuneProblem((1, 250, 256, 512, 500, 512, 480, 512) * 2, 512, 512),
}


def _menu_problem(family: str):
    if family in MENU_PROBLEMS:
        return MENU_PROBLEMS[family]
    from cutlass_wsp.sweep.measure import Workload, plan

    return plan(_bench_point(family), Workload(0), "sm90").problem


@pytest.mark.parametrize("family", BENCHED)
def test_every_candidate_of_the_family_menus_builds_and_verifies(family, compile_cache_dir, arch):
    from cutlass_wsp.kernels.cache import KernelCache
    from cutlass_wsp.kernels.search import compile_candidates

    problem = _menu_problem(family)
    cache = KernelCache(compile_cache_dir)
    descs = [d for d in registry.candidates(problem, "fp16", arch, family=family) if _fits_this_gpu(d)]
    assert len(descs) >= (6 if family in MENU_PROBLEMS else 2)
    built, failed = compile_candidates(descs, cache)
    assert not failed, failed
    measure = registry.kernel_family(family).measure("fp16", cache)
    for d in descs:
        for _ in range(2):                                  # fresh operands each time
            t = measure(problem, d, 0.05)
            assert t.status == "ok" and t.rel_error is not None and t.median_ms > 0, (d.name, t.to_dict())
