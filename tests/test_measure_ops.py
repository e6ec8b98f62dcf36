"""The sweep's measurer with fake ops on the CPU (numpy arrays, a fake timer): a GEMM-batch op is checked
against the masked-dense-weights product and wrapped in the layer pipeline; a whole-layer op (cuDNN, a
fused layer) is checked against its own reference, its time is the layer time, and no transforms are
added around it. Whatever happens, the op is closed."""

from __future__ import annotations

import numpy as np
import pytest

from cutlass_wsp.errors import VerificationError
from cutlass_wsp.families.base import LAYER, Cost, Op
from cutlass_wsp.gpu import harness
from cutlass_wsp.gpu.timing import summarize
from cutlass_wsp.sweep import layer_time, measure
from cutlass_wsp.sweep.plan import SweepSpec, expand


def _point(pattern="dense", impl="cutlass"):
    spec = SweepSpec(layers=("resnet18:12",), batches=(1,), tiles=(4,), dtypes=("fp32",), patterns=(pattern,),
                     implementations={pattern: (impl,)})
    return expand(spec)[0]


class _Ceil:
    gemm_flops, copy_bw_Bps = 1e12, 1e9


@pytest.fixture
def m(monkeypatch):
    timed = []
    monkeypatch.setattr(harness, "time_launch", lambda launch, **kw: (timed.append(kw), summarize([0.5, 0.6, 0.7],
                                                                                                  "fake"))[1])
    mm = object.__new__(measure.Measurer)
    mm.timing, mm.layer_time, mm.arch, mm.cache, mm.tuned = harness.TimingOptions(), False, "sm90", None, None
    mm.workload = measure.Workload(0)
    mm.ceilings = lambda dt: _Ceil()
    mm.timed = timed
    return mm


def _ops_for(ctx, good=True, closed=None):
    """A GEMM op computing W . X of the point's (unpruned) weights, in numpy."""
    W = ctx.pruned.dense_weights().astype(np.float32)
    X = ctx.X
    Y = np.zeros((W.shape[0], W.shape[1], X.shape[2]), np.float32)

    def launch():
        Y[...] = np.matmul(W, X) * (1.0 if good else 1.5)

    return Op(launch, Y, lambda: Y, "fake-gemm", Cost(2e9, 1e6), {"k": 1}, {"nnz": 7}, tuned=True,
              close=(lambda: closed.append(1)) if closed is not None else None)


def _numpy_context(m, point):
    ctx = m.context(point)
    pr = ctx.problem
    ctx.__dict__["X"] = np.random.default_rng(0).standard_normal((pr.L, pr.K, ctx.Npad)).astype(np.float32)
    return ctx


def _serve_numpy_gemm(m, monkeypatch, good: bool, closed: list):
    """The point, its numpy context, and a family building a numpy GEMM op, wired into `m`."""
    pt = _point()
    ctx = _numpy_context(m, pt)
    monkeypatch.setattr(m, "context", lambda point: ctx)
    monkeypatch.setattr(m, "masked_weights32", lambda pruned, dt: pruned.dense_weights().astype(np.float32))
    monkeypatch.setattr(m, "gemm_reference", lambda W, X: np.matmul(W, X))
    fam = type("F", (), {"build": lambda self, c: _ops_for(c, good=good, closed=closed)})()
    monkeypatch.setattr(measure.registry, "serving", lambda pattern, impl: fam)
    return pt, ctx


def test_a_gemm_op_is_checked_against_the_masked_weights_and_its_row_filled(m, monkeypatch):
    closed = []
    pt, ctx = _serve_numpy_gemm(m, monkeypatch, True, closed)
    row = m.measure(pt)
    pr = ctx.problem
    assert (row["L"], row["M"], row["N"], row["K"], row["Npad"]) == (pr.L, pr.M, pr.N, pr.K, ctx.Npad)
    assert row["median_ms"] == 0.6 and row["tuned"] is True and row["kernel"] == "fake-gemm" and row["nnz"] == 7
    assert row["rel_error"] < 1e-5 and row["floor_ms"] == pytest.approx(Cost(2e9, 1e6).floor_ms(1e12, 1e9))
    assert "layer_ms" not in row and closed == [1]
    assert m.timed[0]["use_graph"] is False and m.timed[0]["flush_l2"] is True


def test_a_wrong_gemm_op_fails_the_point_untimed_and_is_closed(m, monkeypatch):
    closed = []
    pt, _ = _serve_numpy_gemm(m, monkeypatch, False, closed)
    with pytest.raises(VerificationError, match="fake-gemm"):
        m.measure(pt)
    assert closed == [1] and not m.timed


def test_a_whole_layer_op_is_its_own_layer_time_with_no_transforms_around_it(m, monkeypatch):
    """What a fused-layer family (or cuDNN) returns: scope "layer", its own reference and check."""
    m.layer_time = True
    monkeypatch.setattr(layer_time, "measure_layer", lambda *a, **k: pytest.fail("transforms added to a layer op"))
    out = np.zeros((1, 7, 7, 512), np.float32)
    ref = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)

    def build(self, ctx):
        assert ctx.point.pattern == "conv"
        return Op(lambda: out.__setitem__(Ellipsis, ref), out, lambda: out, "fused layer", Cost(1e9, 1e6),
                  {"tile": 4}, {"layout": "nhwc"}, reference=lambda: ref,
                  check=harness.Check("fp32", "fused layer", rtol=1e-6), scope=LAYER, graphable=False)

    monkeypatch.setattr(measure.registry, "serving", lambda pattern, impl: type("F", (), {"build": build})())
    m.timing = harness.TimingOptions(use_graph=True)
    row = m.measure(_point("conv", "cudnn"))
    assert row["layer_ms"] == row["median_ms"] == 0.6 and row["layer_q1_ms"] == row["q1_ms"]
    assert row["layer_rel_error"] == row["rel_error"] == 0.0 and row["layout"] == "nhwc"
    assert row["kernel"] == "fused layer" and row["tuned"] is None
    assert m.timed[0]["use_graph"] is False                # not graphable: never captured
