"""gpu/harness.py, the one verify-then-time path, on numpy arrays with a fake timing backend: poison,
one run, the check, and only then the timing."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from cutlass_wsp.errors import VerificationError
from cutlass_wsp.gpu.harness import Check, TimingOptions, bench, verify


@pytest.fixture
def ref():
    return np.random.default_rng(0).standard_normal((4, 16, 24))


class _Backend:
    has_gate = False

    def __init__(self):
        self.timed = 0

    def activate(self):
        return contextlib.nullcontext()

    def flush_l2(self, rep, mode="dirty"):
        pass

    def gate(self, us):
        pass

    def mark_start(self):
        pass

    def mark_end(self):
        self.timed += 1

    def elapsed_ms(self):
        return 1.0

    def synchronize(self):
        pass


def _kernel(ref, out, factor, cols=None):
    runs = []

    def run():
        runs.append(1)
        if cols is None:
            out[...] = ref * factor
        else:
            out[..., :cols] = ref[..., :cols] * factor
    return run, runs


def test_a_wrong_kernel_is_never_timed(ref):
    out = np.zeros(ref.shape, np.float32)
    run, runs = _kernel(ref, out, 2.0)
    be = _Backend()
    with pytest.raises(VerificationError, match="bad: relative error 1.0e\\+00"):
        bench(run, outputs=out, reference=lambda: ref, check=Check("fp32", "bad"), backend=be, min_reps=3,
              max_reps=3)
    assert runs == [1] and be.timed == 0  # ran once to verify, never timed


def test_outputs_are_poisoned_before_the_run(ref):
    out = ref.astype(np.float32)  # already holds the right answer: only poison can expose the skip
    run, _ = _kernel(ref, out, 1.0, cols=20)
    with pytest.raises(VerificationError, match="never written"):
        bench(run, outputs=out, reference=ref, check=Check("fp32", "k"), backend=_Backend())
    # comparing only the valid columns passes: pad columns are not results
    m = bench(run, outputs=out, result=lambda: out[..., :20], reference=lambda: ref[..., :20],
              check=Check("fp32", "k"), backend=_Backend(), min_reps=3, max_reps=3, budget_s=0)
    assert m.rel_error < 1e-6 and m.timing.reps == 3 and np.isnan(out[..., 20:]).all()


def test_every_output_is_poisoned(ref):
    """A launch with two outputs (e.g. a two-pass op's intermediate and result): both start as NaN."""
    a, b = np.zeros(ref.shape, np.float32), np.zeros(3, np.float32)
    seen = {}

    def run():
        seen["b"] = b.copy()
        a[...] = ref

    assert verify(run, outputs=[a, b], result=lambda: a, reference=ref, check=Check("fp32", "k")) < 1e-6
    assert np.isnan(seen["b"]).all()


def test_the_reference_is_computed_after_the_run(ref):
    out = np.zeros(ref.shape, np.float32)
    order = []
    run, _ = _kernel(ref, out, 1.0)

    def reference():
        order.append("reference")
        return ref

    verify(lambda: (order.append("run"), run()), outputs=out, result=None, reference=reference,
           check=Check("fp32", "k"))
    assert order == ["run", "reference"]


def test_a_result_in_parts_is_checked_part_by_part(ref):
    """Grouped GEMMs: each group's rows against its reference rows, its own check, the worst error wins."""
    out = np.zeros(ref.shape, np.float32)
    run, _ = _kernel(ref, out, 1.0)
    parts = lambda: [out[0], out[1:]]                          # noqa: E731
    refs = [ref[0], ref[1:]]
    err = verify(run, outputs=out, result=parts, reference=refs,
                 check=[Check("fp32", "group 0"), Check("fp32", "group 1")])
    assert err < 1e-6
    bad = lambda: [out[0], out[1:] * 2]                        # noqa: E731
    with pytest.raises(VerificationError, match="^group 1: relative error"):
        verify(run, outputs=out, result=bad, reference=refs, check=[Check("fp32", "group 0"), Check("fp32", "group 1")])
    with pytest.raises(ValueError, match="2 result parts, 1 reference parts"):
        verify(run, outputs=out, result=parts, reference=refs[:1], check=Check("fp32", "k"))


def test_a_check_carries_its_tolerance(ref):
    out = np.zeros(ref.shape, np.float32)
    run, _ = _kernel(ref, out, 1.001)                        # 1e-3 off: wrong for fp32, fine with rtol 1e-2
    with pytest.raises(VerificationError):
        verify(run, outputs=out, result=None, reference=ref, check=Check("fp32", "k"))
    assert verify(run, outputs=out, result=None, reference=ref, check=Check("fp32", "k", rtol=1e-2)) < 1e-2


def test_timing_options_give_time_gpu_its_arguments():
    t = TimingOptions(budget_s=0.5, use_graph=True)
    assert t.kwargs() == dict(warmup=3, min_reps=10, max_reps=200, budget_s=0.5, flush_l2=True, use_graph=True)
    assert t.kwargs(graph=False, budget_s=0.1)["use_graph"] is False
    assert TimingOptions(extra={"flush_mode": "dirty"}).kwargs()["flush_mode"] == "dirty"
