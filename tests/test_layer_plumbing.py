"""Layer-time plumbing without a GPU: tolerances by tile size, and a layer the pipeline cannot serve
becomes a note on an ok row instead of failing the point."""

from __future__ import annotations

import pytest

from cutlass_wsp.dtypes import get_dtype
from cutlass_wsp.errors import Unsupported, VerificationError
from cutlass_wsp.sweep import layer_time, measure


def test_layer_tolerance_grows_with_tile_size():
    dt = get_dtype("fp16")
    t4, t6, t8 = (layer_time.layer_rtol(dt, p, 256) for p in (4, 6, 8))
    assert t4 < t6 < t8
    assert t6 >= 7.2e-3      # docs/winograd.md: fp16 F(4x4) end-to-end error must pass


def _bare_measurer():
    m = object.__new__(measure.Measurer)    # no GPU needed for the method under test
    m.timing = None
    return m


class _Ceil:
    copy_bw_Bps = 3e12


def test_unsupported_layer_is_a_note(monkeypatch):
    def refuse(*a, **k):
        raise Unsupported("the GEMM reads a channel-padded X", "fix")

    monkeypatch.setattr(layer_time, "measure_layer", refuse)
    op = measure.Op(launch=lambda: None, out=None, dense_out=lambda: None, kernel="k", cost=None, x=object())
    fields = _bare_measurer()._layer_fields(None, get_dtype("fp16"), None, op, _Ceil())
    assert fields == {"reason": "layer not timed: the GEMM reads a channel-padded X (fix)"}


def test_wrong_layer_output_fails_the_point(monkeypatch):
    def wrong(*a, **k):
        raise VerificationError("layer x: relative error 3e-1 > 1e-2")

    monkeypatch.setattr(layer_time, "measure_layer", wrong)
    op = measure.Op(launch=lambda: None, out=None, dense_out=lambda: None, kernel="k", cost=None, x=object())
    with pytest.raises(VerificationError):
        _bare_measurer()._layer_fields(None, get_dtype("fp16"), None, op, _Ceil())


def test_every_default_point_has_an_implementation():
    from cutlass_wsp.sweep.plan import default_spec, expand

    missing = {(p.pattern, p.impl) for p in expand(default_spec())
               if p.pattern != "conv" and (p.pattern, p.impl) not in measure.BUILDERS}
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
    """--tune searches the problem each point's dense kernel runs: pruned families run it on their
    compacted shapes (WSP-R: M = kept rows), gather/cuSPARSE points run none."""
    from cutlass_wsp.sweep.plan import SweepSpec, expand

    m = object.__new__(measure.Measurer)
    m.arch, m.seed, m._weights, m._pruned = "sm90", 0, {}, {}
    spec = SweepSpec(layers=("resnet18:12",), batches=(32,), tiles=(4,), dtypes=("fp16",),
                     patterns=("dense", "wsp-r", "wsp-c-fused", "wwp"), ratios=(0.7,),
                     balances=("balanced",), implementations={"dense": ("cutlass",), "wsp-r": ("cutlass",)})
    got = {(p.pattern, p.impl): m._dense_problem_of(p) for p in expand(spec)}
    dense = got[("dense", "cutlass")]
    assert (dense.L, dense.M, dense.K, dense.N) == (16, 512, 512, 512)
    wsp_r = got[("wsp-r", "cutlass")]
    assert (wsp_r.M, wsp_r.K, wsp_r.N) == (round(0.3 * 512), 512, 512)
    assert got[("wsp-c-fused", "cutlass")] is None
    assert all(v is None for (pat, _), v in got.items() if pat == "wwp")
