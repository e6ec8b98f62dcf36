"""Layer-time plumbing without a GPU: tolerances by tile size, and a layer the pipeline cannot serve
becomes a note on an ok row instead of failing the point."""

from __future__ import annotations

import pytest

from cutlass_wsp.dtypes import get_dtype
from cutlass_wsp.errors import InputError, Unsupported, VerificationError
from cutlass_wsp.families import registry
from cutlass_wsp.families.base import Op, gemm_input
from cutlass_wsp.gpu.verify import layer_rtol
from cutlass_wsp.sweep import layer_time, measure


def test_layer_tolerance_grows_with_tile_size():
    dt = get_dtype("fp16")
    t4, t6, t8 = (layer_rtol(dt, p, 256) for p in (4, 6, 8))
    assert t4 < t6 < t8
    assert t6 >= 7.2e-3      # docs/winograd.md: fp16 F(4x4) end-to-end error must pass


def _bare_measurer():
    m = object.__new__(measure.Measurer)    # no GPU needed for the methods under test
    m.timing = None
    m.arch, m.seed, m.cache, m.tuned = "sm90", 0, None, None
    m.workload = measure.Workload(0)
    return m


class _Ceil:
    copy_bw_Bps = 3e12


def test_unsupported_layer_is_a_note(monkeypatch):
    def refuse(*a, **k):
        raise Unsupported("the GEMM reads a channel-padded X", "fix")

    monkeypatch.setattr(layer_time, "measure_layer", refuse)
    op = Op(launch=lambda: None, out=None, result=lambda: None, kernel="k", cost=None, x=object())
    fields = _bare_measurer()._layer_fields(None, get_dtype("fp16"), None, op, _Ceil())
    assert fields == {"reason": "layer not timed: the GEMM reads a channel-padded X (fix)"}


def test_wrong_layer_output_fails_the_point(monkeypatch):
    def wrong(*a, **k):
        raise VerificationError("layer x: relative error 3e-1 > 1e-2")

    monkeypatch.setattr(layer_time, "measure_layer", wrong)
    op = Op(launch=lambda: None, out=None, result=lambda: None, kernel="k", cost=None, x=object())
    with pytest.raises(VerificationError):
        _bare_measurer()._layer_fields(None, get_dtype("fp16"), None, op, _Ceil())


def test_every_default_point_has_an_implementation():
    from cutlass_wsp.sweep.plan import default_spec, expand

    missing = set()
    for p in expand(default_spec()):
        try:
            registry.serving(p.pattern, p.impl)
        except Unsupported:
            missing.add((p.pattern, p.impl))
    assert not missing


def test_transform_floor_counts_kept_rows_per_position():
    """The output transform's bytes take rows *per position*: a compact output of 16 positions
    keeping 3, 3 and 2 rows (padded with -1) reads 8/3 rows per position on average."""
    import numpy as np

    rows = np.array([[0, 5, 7], [1, 2, 4], [6, 3, -1]], dtype=np.int32)
    assert layer_time.kept_rows_per_position(rows) == 3   # round(8 / 3)
    assert layer_time.kept_rows_per_position(None) is None
    balanced = np.tile(np.arange(19, dtype=np.int32), (16, 1))
    assert layer_time.kept_rows_per_position(balanced) == 19


def test_tuning_covers_the_dense_kernel_of_every_family():
    """Tuning searches the problem each point's dense kernel runs: pruned families run it on their
    compacted shapes (WSP-R: M = kept rows), gather/cuSPARSE points run none."""
    from cutlass_wsp.sweep.plan import SweepSpec, expand

    m = _bare_measurer()
    spec = SweepSpec(layers=("resnet18:12",), batches=(32,), tiles=(4,), dtypes=("fp16",),
                     patterns=("dense", "wsp-r", "wsp-c-fused", "wwp"), ratios=(0.7,),
                     balances=("balanced",), implementations={"dense": ("cutlass",), "wsp-r": ("cutlass",)})

    def dense_problem(pt):
        plan = m.plan(pt)
        return plan.problem if plan is not None and plan.kernel == "dense" else None

    got = {(p.pattern, p.impl): dense_problem(p) for p in expand(spec)}
    dense = got[("dense", "cutlass")]
    assert (dense.L, dense.M, dense.K, dense.N) == (16, 512, 512, 512)
    wsp_r = got[("wsp-r", "cutlass")]
    assert (wsp_r.M, wsp_r.K, wsp_r.N) == (round(0.3 * 512), 512, 512)
    assert got[("wsp-c-fused", "cutlass")] is None
    xform = got[("wsp-c-fused", "cutlass-xform")]          # the dense kernel on the compact Xc
    kept = max(len(c) for c in m.pruned(next(p for p in expand(spec) if p.impl == "cutlass-xform")).cols)
    assert (xform.L, xform.M, xform.N, xform.K) == (16, 512, 512, -(-kept // 8) * 8)
    assert xform.K < 512
    assert all(v is None for (pat, _), v in got.items() if pat == "wwp")


# ------------------------------------------------------------------------------ WSP-C xform wiring
def _xform_point(balance="unbalanced"):
    from cutlass_wsp.sweep.plan import SweepSpec, expand

    spec = SweepSpec(layers=("resnet18:12",), batches=(32,), tiles=(4,), dtypes=("fp16",),
                     patterns=("wsp-c-fused",), ratios=(0.7,), balances=(balance,),
                     implementations={"wsp-c-fused": ("cutlass-xform",)})
    (pt,) = expand(spec)
    return pt


def test_xform_point_runs_the_dense_kernel_on_the_compact_input():
    """cutlass-xform: WSP-C's family serves it (so compile-ahead names its kernel), in xform mode: a dense
    kernel on Xc[L, K, Npad], the same dense problem as two-pass."""
    from cutlass_wsp.families.wsp_c import WspC

    m = _bare_measurer()
    pt = _xform_point()
    fam_entry = registry.serving(pt.pattern, pt.impl)
    assert fam_entry.name == "wsp_c"
    fam = fam_entry.instance(m.context(pt))
    assert isinstance(fam, WspC) and fam.mode == "xform" and not fam.tuned
    assert fam.desc.family == "dense" and fam.input_shape == (16, fam.K, 512)
    two_pass = WspC(m.pruned(pt), "fp16", 512, arch="sm90", mode="two_pass")
    assert list(m.plan(pt).descs) == [fam.desc] == [two_pass.desc]   # same dense problem


class _FakeXformFamily:
    mode = "xform"

    def __init__(self):
        self.calls = []

    def compact_input(self, X):
        self.calls.append(("compact_input", X))
        return "Xc"

    def channel_map(self):
        self.calls.append(("channel_map",))
        return "map"


def test_xform_builder_feeds_the_compact_input_and_its_map():
    """The op reads Xc built once from the point's X (outside the timed launch) and carries the channel
    map for the layer pipeline; other families read X itself and have no map."""
    fam = _FakeXformFamily()
    assert gemm_input(fam, "X") == ("Xc", "map")
    assert fam.calls == [("compact_input", "X"), ("channel_map",)]

    class TwoPass:
        mode = "two_pass"

    assert gemm_input(TwoPass(), "X") == ("X", None)
    assert gemm_input(object(), "X") == ("X", None)


def test_layer_fields_pass_the_channel_map(monkeypatch):
    seen = {}

    def capture(point, dt, W32, ops, copy_bw, timing):
        seen["ops"] = ops
        return {"layer_ms": 1.0}

    monkeypatch.setattr(layer_time, "measure_layer", capture)
    op = Op(launch=lambda: None, out=None, result=lambda: None, kernel="k", cost=None, x="Xc", channel_map="map")
    assert _bare_measurer()._layer_fields(None, get_dtype("fp16"), None, op, _Ceil()) == {"layer_ms": 1.0}
    assert (seen["ops"].X, seen["ops"].channel_map) == ("Xc", "map")


class _X:
    def __init__(self, *shape):
        self.shape = shape


def _cmap(c, K, counts):
    from cutlass_wsp.gpu.transforms import ChannelMap

    return ChannelMap(xrow=None, positions=len(counts), c=c, K=K, counts=tuple(counts))


def test_input_rows_compact_and_dense():
    """The transform floor counts the rows the input transform writes: kept channels per position for a
    compact Xc, all c for the dense X; a channel-padded dense X is a note, a map that does not fit Xc an error."""
    ops = layer_time.LayerOperands(X=_X(16, 24, 64), Y=None, rows=None, launch=None,
                                   channel_map=_cmap(64, 24, [20] * 8 + [16] * 8))
    assert layer_time.input_rows_per_position(ops, 64) == 18          # 18 rows per position on average
    dense = layer_time.LayerOperands(X=_X(16, 64, 64), Y=None, rows=None, launch=None)
    assert layer_time.input_rows_per_position(dense, 64) is None
    with pytest.raises(Unsupported, match="channel-padded X"):
        layer_time.input_rows_per_position(layer_time.LayerOperands(_X(16, 8, 64), None, None, None), 3)
    with pytest.raises(InputError, match="do not fit"):
        layer_time.input_rows_per_position(
            layer_time.LayerOperands(_X(16, 32, 64), None, None, None, channel_map=_cmap(64, 24, [20] * 16)), 64)
    with pytest.raises(InputError, match="do not fit"):
        layer_time.input_rows_per_position(
            layer_time.LayerOperands(_X(16, 24, 64), None, None, None, channel_map=_cmap(48, 24, [20] * 16)), 64)
