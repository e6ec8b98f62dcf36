"""Timing statistics and the timing loop, driven on the CPU by a fake clock and fake GPU backend."""

from __future__ import annotations

import contextlib
import itertools

import pytest

from cutlass_wsp.errors import InputError
from cutlass_wsp.gpu.timing import run_reps, summarize, time_gpu


def test_summarize_odd_count():
    t = summarize([5.0, 1.0, 4.0, 2.0, 3.0], "events")
    assert (t.median_ms, t.q1_ms, t.q3_ms, t.iqr_ms) == (3.0, 2.0, 4.0, 2.0)
    assert (t.min_ms, t.mean_ms, t.reps, t.method) == (1.0, 3.0, 5, "events")
    assert t.samples_ms == [5.0, 1.0, 4.0, 2.0, 3.0]  # raw order kept


def test_summarize_even_count_interpolates_quartiles():
    t = summarize([4.0, 1.0, 3.0, 2.0])
    assert t.median_ms == pytest.approx(2.5)
    assert t.q1_ms == pytest.approx(1.75)
    assert t.q3_ms == pytest.approx(3.25)
    assert t.iqr_ms == pytest.approx(1.5)


def test_summarize_outlier_moves_mean_not_median():
    t = summarize([1.0] * 9 + [100.0])
    assert t.median_ms == 1.0 and t.q3_ms == 1.0
    assert t.mean_ms == pytest.approx(10.9)


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [-1.0]])
def test_summarize_rejects_bad_samples(bad):
    with pytest.raises(ValueError):
        summarize(bad)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_run_reps_stops_at_budget():
    clock = FakeClock()

    def launch(i):
        clock.now += 0.1
        return 1.0

    samples = run_reps(launch, warmup=2, min_reps=1, max_reps=100, budget_s=0.35, clock=clock)
    # warm-up takes 0.2 s before the budget starts; 4 samples reach 0.4 s >= 0.35 s
    assert len(samples) == 4


def test_run_reps_respects_min_reps_over_budget():
    clock = FakeClock()

    def launch(i):
        clock.now += 10.0
        return 1.0

    assert len(run_reps(launch, warmup=0, min_reps=7, max_reps=100, budget_s=1.0, clock=clock)) == 7


def test_run_reps_caps_at_max_reps():
    calls = []
    samples = run_reps(lambda i: calls.append(i) or 2.0, warmup=3, min_reps=1, max_reps=5, budget_s=1e9,
                       clock=FakeClock())
    assert samples == [2.0] * 5
    assert calls == list(range(8))  # 3 warm-up, then 5 timed, indices continue


class FakeBackend:
    """Stands in for CUDA: records what the loop enqueues; the 'GPU' takes `gpu_ms` per sample."""

    has_gate = True

    def __init__(self, clock: FakeClock, gpu_ms):
        self.clock = clock
        self.gpu_ms = iter(gpu_ms)
        self.log: list = []
        self.modes: list = []

    def activate(self):
        return contextlib.nullcontext()

    def flush_l2(self, rep, mode="dirty"):
        self.log.append("flush")
        self.modes.append(mode)

    def gate(self, us):
        self.log.append(("gate", us))

    def mark_start(self):
        self.log.append("start")

    def mark_end(self):
        self.log.append("end")

    def elapsed_ms(self):
        ms = next(self.gpu_ms)
        self.clock.now += ms / 1e3
        return ms

    def capture(self, body):
        self.log.append("capture")
        body()
        return lambda: self.log.append("replay")

    def synchronize(self):
        pass


def _fn(clock, calls, enqueue_s=0.0):
    def fn(*args):
        calls.append(args)
        clock.now += enqueue_s
    return fn


def test_time_gpu_flush_gate_and_stats():
    clock, calls = FakeClock(), []
    be = FakeBackend(clock, itertools.cycle([1.0, 3.0, 2.0]))
    t = time_gpu(_fn(clock, calls, enqueue_s=1e-4), warmup=3, min_reps=6, max_reps=6, budget_s=0,
                 backend=be, clock=clock)
    assert t.reps == 6 and t.method == "events+l2clean+gate"
    # 2 gate-sizing reps consumed 1.0 and 3.0; timed samples continue the cycle 2,1,3,2,1,3
    assert t.samples_ms == [2.0, 1.0, 3.0, 2.0, 1.0, 3.0]
    assert t.median_ms == 2.0
    assert len(calls) == 3 + 2 + 6  # eager warm-up, gate sizing, timed
    # one flush before every timed or sizing repetition, none during eager warm-up
    assert be.log.count("flush") == 8 and be.log.count("start") == 8
    gates = [e[1] for e in be.log if isinstance(e, tuple)]
    assert len(gates) == 6 and gates[0] == pytest.approx(2 * 100 + 20)  # 2x the 0.1 ms enqueue + 20 us
    # the gate sits between the flush and the start event
    first = be.log.index(("gate", gates[0]))
    assert be.log[first - 1] == "flush" and be.log[first + 1] == "start"
    assert t.host_enqueue_ms == pytest.approx(0.1)
    assert t.launch_gap_risk is False


def test_time_gpu_flags_enqueue_longer_than_gate():
    clock, calls = FakeClock(), []
    slow = iter([1e-4, 1e-4] + [5e-3] * 100)  # enqueue jumps from 0.1 ms to 5 ms after sizing

    def fn():
        calls.append(())
        clock.now += next(slow) if len(calls) > 1 else 0.0

    be = FakeBackend(clock, itertools.repeat(1.0))
    t = time_gpu(fn, warmup=1, min_reps=3, max_reps=3, budget_s=0, backend=be, clock=clock)
    assert t.launch_gap_risk is True


def test_time_gpu_rotation_cycles_sets_and_skips_flush():
    clock, calls = FakeClock(), []
    be = FakeBackend(clock, itertools.repeat(1.0))
    sets = [("a",), ("b",), ("c",)]
    t = time_gpu(_fn(clock, calls), warmup=0, min_reps=5, max_reps=5, budget_s=0, rotate=sets,
                 gate=False, backend=be, clock=clock)
    assert "flush" not in be.log
    assert t.method == "events+rotate3"
    assert calls == [("a",)] + [("a",), ("b",), ("c",), ("a",), ("b",)]  # 1 eager warm-up, then cycle


def test_time_gpu_graph_divides_by_batch():
    clock, calls = FakeClock(), []
    be = FakeBackend(clock, itertools.repeat(40.0))
    t = time_gpu(_fn(clock, calls), warmup=2, min_reps=4, max_reps=4, budget_s=0, use_graph=True,
                 graph_batch=8, gate=False, backend=be, clock=clock)
    assert be.log.count("capture") == 1
    assert len(calls) == 2 + 8  # eager warm-up, then the captured batch
    assert be.log.count("replay") == 1 + 4  # one untimed warm-up replay, then one per sample
    assert t.median_ms == pytest.approx(5.0) and t.method == "graph8+l2clean"


def test_time_gpu_without_flush_says_warm():
    clock = FakeClock()
    be = FakeBackend(clock, itertools.repeat(1.0))
    t = time_gpu(_fn(clock, []), min_reps=2, max_reps=2, budget_s=0, flush_l2=False, gate=False,
                 backend=be, clock=clock)
    assert t.method == "events+warm" and "flush" not in be.log


@pytest.mark.parametrize("mode, tag", [("clean", "l2clean"), ("dirty", "l2flush")])
def test_time_gpu_flush_mode_reaches_the_backend_and_the_method(mode, tag):
    clock = FakeClock()
    be = FakeBackend(clock, itertools.repeat(1.0))
    t = time_gpu(_fn(clock, []), min_reps=3, max_reps=3, budget_s=0, gate=False, flush_mode=mode,
                 backend=be, clock=clock)
    assert be.modes == [mode] * 3 and t.method == f"events+{tag}"


def test_time_gpu_default_flush_mode_is_the_module_setting(monkeypatch):
    from cutlass_wsp.gpu import timing

    monkeypatch.setattr(timing, "FLUSH_MODE", "clean")
    be = FakeBackend(FakeClock(), itertools.repeat(1.0))
    t = time_gpu(_fn(be.clock, []), min_reps=2, max_reps=2, budget_s=0, gate=False, backend=be, clock=be.clock)
    assert be.modes == ["clean", "clean"] and t.method.endswith("+l2clean")


@pytest.mark.parametrize("kw", [dict(min_reps=0), dict(min_reps=5, max_reps=4), dict(budget_s=-1),
                                dict(rotate=[]), dict(graph_batch=0), dict(flush_mode="lukewarm")])
def test_time_gpu_rejects_bad_settings(kw):
    with pytest.raises(InputError):
        time_gpu(lambda: None, backend=FakeBackend(FakeClock(), []), **kw)
