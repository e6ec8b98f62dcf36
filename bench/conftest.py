"""GPU regression benchmarks: `pytest bench` (not collected by a plain `pytest`: testpaths is tests).

Without a usable GPU every benchmark is skipped with the reason. With one, each benchmark verifies its
implementation against an fp32 cuBLAS reference on a poisoned output, then times it with
cutlass_wsp.gpu.timing.time_gpu; pytest-benchmark stores those GPU times (gpu_bench.py says how).
docs/regression-runs.md: saving a baseline and gating on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from gpu_bench import record, use_gpu_clock
from gpu_bench import machine_info as gpu_machine_info

HERE = Path(__file__).resolve().parent

# time_gpu settings: enough repetitions for a stable median on sub-millisecond launches
TIMING = dict(warmup=5, min_reps=50, max_reps=1000, budget_s=1.0, flush_l2=True)


def _in_bench(item) -> bool:
    return HERE in Path(str(item.fspath)).resolve().parents


def pytest_collection_modifyitems(config, items):
    from cutlass_wsp.gpu.device import gpu_status

    ok, why = gpu_status()
    for item in items:
        if not _in_bench(item):
            continue
        if not ok:
            item.add_marker(pytest.mark.skip(reason=f"GPU benchmark: {why}"))
        if "benchmark" in getattr(item, "fixturenames", ()):
            use_gpu_clock(item)   # GPU time, never the host clock


def pytest_benchmark_update_machine_info(config, machine_info: dict) -> None:
    """Name the GPU and the software stack in every saved run (compared runs warn when they differ)."""
    machine_info["gpu"] = gpu_machine_info()


class GpuBench:
    """Verify, then time, then record one launch callable (see `__call__`)."""

    def __init__(self, benchmark: Any):
        self.benchmark = benchmark

    def __call__(self, launch: Callable[[], None], *, out: Any, reference: Callable[[], Any], T: int,
                 dtype: str, K: int, what: str, info: dict | None = None) -> float:
        """gpu/harness.py: `out` poisoned, `launch` run once, its first T columns checked against
        `reference()` (raises VerificationError: nothing timed or stored), then timed with time_gpu; the
        timing goes to pytest-benchmark. Returns the relative error."""
        from cutlass_wsp.gpu.harness import Check, bench
        from cutlass_wsp.gpu.info import gpu_info
        from cutlass_wsp.gpu.verify import tolerance

        measured = bench(launch, outputs=out, result=lambda: out[..., :T], reference=reference,
                         check=Check(dtype, what, K=K), **TIMING)
        timing, err = measured.timing, measured.rel_error
        clocks = gpu_info()
        record(self.benchmark, timing, {
            "what": what, "rel_error": err, "tolerance": tolerance(dtype, K),
            "sm_clock_mhz": clocks.get("sm_clock_mhz"), "mem_clock_mhz": clocks.get("mem_clock_mhz"),
            **(info or {})})
        return err


@pytest.fixture
def gpu_bench(benchmark) -> GpuBench:
    return GpuBench(benchmark)


@pytest.fixture(autouse=True)
def _free_gpu_memory():
    """Each benchmark starts with CuPy's pool empty, so one's buffers never crowd the next."""
    yield
    import sys

    cupy = sys.modules.get("cupy")
    if cupy is not None:
        try:
            cupy.get_default_memory_pool().free_all_blocks()
        except Exception:   # no device: nothing was allocated
            pass
