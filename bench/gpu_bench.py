"""Plumbing of the GPU regression benchmarks (bench/): GPU times into pytest-benchmark, machine info.

pytest-benchmark times a callable between two calls of its timer, on the host. A GPU launch returns
before the GPU has done anything, so that would time Python, not the kernel. Here every benchmark is
verified and then timed ONCE by the toolkit's own `cutlass_wsp.gpu.timing.time_gpu` (CUDA events,
L2 flushed between repetitions, a gate kernel so host enqueue time is not timed: docs/measurement.md).
pytest-benchmark then records those repetitions: its timer is `gpu_event_clock`, a clock that only
moves by GPU time, and `benchmark.pedantic` runs one round per timed repetition, each round moving the
clock by that repetition's CUDA-event time. The stored min/median/mean/IQR are therefore exactly the
per-launch GPU times a sweep row would hold, and `--benchmark-compare-fail` gates on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

_gpu_seconds = [0.0]   # the clock's reading; advanced only by replayed GPU repetitions

# provenance() fields that identify the machine and software; clocks are left out on purpose:
# they change from run to run and pytest-benchmark warns when machine_info differs from the baseline.
MACHINE_FIELDS = {"name": "gpu_name", "compute_capability": "compute_capability", "sm_count": "sm_count",
                  "memory_bytes": "memory_bytes", "driver": "driver_version", "cuda_driver": "cuda_driver_version",
                  "cuda_runtime": "cuda_runtime_version", "cupy": "cupy", "cutlass": "cutlass_version",
                  "nvidia_cutlass_wheel": "nvidia_cutlass_wheel", "nvcc": "nvcc_version",
                  "cutlass_wsp": "cutlass_wsp", "gpu_error": "gpu_error"}


def gpu_event_clock() -> float:
    """pytest-benchmark timer (seconds) that advances only by replayed GPU repetitions."""
    return _gpu_seconds[0]


def use_gpu_clock(item: Any) -> None:
    """Make `item`'s benchmark fixture use gpu_event_clock: its closest `benchmark` marker, kept
    (group, ...), gains timer=gpu_event_clock and becomes the closest one."""
    import pytest

    mark = item.get_closest_marker("benchmark")
    kwargs = dict(mark.kwargs) if mark else {}
    kwargs["timer"] = gpu_event_clock
    item.add_marker(pytest.mark.benchmark(**kwargs), append=False)


def replay_rounds(samples_ms: Iterable[float]):
    """(rounds, step): calling `step` `rounds` times moves gpu_event_clock by each sample in turn."""
    samples = [float(s) for s in samples_ms]
    if not samples:
        raise ValueError("no GPU samples to record")
    it = iter(samples)

    def one_repetition() -> None:
        _gpu_seconds[0] += next(it) / 1e3

    return len(samples), one_repetition


def record(benchmark: Any, timing: Any, info: Mapping[str, Any] | None = None) -> None:
    """Store `timing` (a gpu.timing.Timing) in pytest-benchmark: its samples as the rounds, its summary
    and `info` in extra_info."""
    timer = getattr(benchmark, "_timer", gpu_event_clock)
    if timer is not gpu_event_clock:   # the CPU clock would time the replay loop: refuse, never mislead
        raise RuntimeError(f"benchmark timer is {timer!r}, not gpu_event_clock: bench/conftest.py sets it "
                           "with a benchmark marker; run these benchmarks with `pytest bench`")
    benchmark.extra_info.update(dict(info or {}))
    benchmark.extra_info.update(
        time_source="cutlass_wsp.gpu.timing.time_gpu (CUDA events)", method=timing.method, reps=timing.reps,
        median_ms=timing.median_ms, q1_ms=timing.q1_ms, q3_ms=timing.q3_ms, min_ms=timing.min_ms,
        host_enqueue_ms=timing.host_enqueue_ms, launch_gap_risk=timing.launch_gap_risk)
    rounds, step = replay_rounds(timing.samples_ms)
    benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=0)


def machine_info() -> dict[str, Any]:
    """GPU and software versions for pytest-benchmark's machine_info (None where unreadable)."""
    from cutlass_wsp.gpu.info import provenance

    prov = provenance()
    return {key: prov.get(src) for key, src in MACHINE_FIELDS.items()}
