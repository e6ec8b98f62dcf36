"""The whole Winograd layer on the GPU: transforms + GEMM batch + output transform, against direct
correlation (dense) and, through the sweep's measurement, for every pattern at batch 1 and 32."""

from __future__ import annotations

import numpy as np
import pytest

cp = pytest.importorskip("cupy")


@pytest.mark.parametrize("p", [4, 6])
@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
def test_dense_pipeline_matches_direct_correlation(p, dtype):
    from cutlass_wsp.families.dense import DenseBatch
    from cutlass_wsp.gpu import arrays
    from cutlass_wsp.gpu.transforms import InputTransform, OutputTransform
    from cutlass_wsp.gpu.verify import check
    from cutlass_wsp.problem import BatchProblem
    from cutlass_wsp.gpu.verify import layer_rtol
    from cutlass_wsp.winograd import direct_conv2d, filter_transform

    kdt = "tf32" if dtype == "fp32" else dtype          # the GEMM kernel of fp32 storage is tf32
    B, c, n, H, W = 2, 16, 24, 13, 11
    rng = np.random.default_rng(7)
    d = rng.standard_normal((B, c, H, W)).astype(np.float32)
    g = (rng.standard_normal((n, c, 3, 3)) * np.sqrt(2 / (9 * c))).astype(np.float32)
    d_dev = arrays.from_host(np.ascontiguousarray(d.transpose(0, 2, 3, 1)), kdt)     # NHWC
    Wd = arrays.from_host(filter_transform(g.astype(np.float64), p - 2).astype(np.float32), kdt)
    X = InputTransform(p, kdt, "nhwc")(d_dev)
    Y = arrays.empty((p * p, n, X.shape[2]), kdt)
    DenseBatch.for_problem(BatchProblem(p * p, n, X.shape[2], c), kdt).run(Wd, X, Y)
    tout = OutputTransform(p, kdt, "nhwc")
    out = arrays.poison(arrays.empty(tout.output_shape(B, n, H, W), kdt), kdt)
    tout(Y, out)
    ref = direct_conv2d(arrays.to_host_float32(d_dev, kdt).transpose(0, 3, 1, 2).astype(np.float64),
                        g.astype(np.float64)).transpose(0, 2, 3, 1)
    err = check(arrays.to_host_float32(out, kdt), ref, kdt, "dense layer", rtol=layer_rtol(
        __import__("cutlass_wsp.dtypes", fromlist=["x"]).get_dtype(kdt), p, c))
    assert err > 0      # a real computation, not a copy of the reference


def _points(batch: int):
    from cutlass_wsp.sweep.plan import PATTERNS, SweepSpec, expand

    pats = tuple(p for p, info in PATTERNS.items() if info.uses_tile)     # every Winograd pattern
    impls = {p: tuple(PATTERNS[p].implementations) for p in pats}           # every family serving it
    spec = SweepSpec(layers=("resnet18:12",), batches=(batch,), tiles=(4,), dtypes=("fp16",),
                     patterns=pats, ratios=(0.7,), balances=("balanced", "unbalanced"), implementations=impls)
    return expand(spec)


@pytest.mark.parametrize("batch", [1, 32])
def test_every_pattern_gives_a_verified_layer(batch):
    """Each point's layer output matched the fp32 pipeline (else measure raises VerificationError)."""
    from cutlass_wsp.sweep.measure import Measurer
    from cutlass_wsp.sweep.runner import TimingOptions

    m = Measurer(TimingOptions(budget_s=0.01, min_reps=3, max_reps=5, warmup=1), layer_time=True)
    checked = {}
    for pt in _points(batch):
        fields = m.measure(pt)
        assert fields["layer_ms"] > 0 and fields["layer_rel_error"] is not None, pt.key
        assert "reason" not in fields, f"{pt.key}: {fields['reason']}"
        checked[(pt.pattern, pt.impl, pt.balance)] = fields
    assert {"dense", "fp", "wsp-r", "wsp-c", "wsp-c-fused", "wwp", "bcbp"} <= {k[0] for k in checked}
    # WSP-C xform: the layer ran the compact input transform, which writes only the kept rows of X, so
    # its transform floor is below the two-pass layer's (same output transform, dense X written)
    for balance in ("balanced", "unbalanced"):
        xform = checked[("wsp-c-fused", "cutlass-xform", balance)]
        assert xform["kernel_config"]["mode"] == "xform"
        assert xform["K"] == 512 and xform["kept_fraction"] < 0.5
        two_pass = checked[("wsp-c", "cutlass" if balance == "balanced" else "cutlass-padded", balance)]
        # 30 % of X's rows written: ~0.76 of the bytes at batch 1 (the int32 map weighs), ~0.7 at batch 32
        assert xform["transform_floor_ms"] < 0.85 * two_pass["transform_floor_ms"]


def test_layer_as_one_cuda_graph():
    """With --graph the layer's three launches (input transform, CUTLASS GEMM batch, output
    transform) are captured into one CUDA graph and replayed; no fallback note on the row."""
    from cutlass_wsp.sweep.measure import Measurer
    from cutlass_wsp.sweep.plan import SweepSpec, expand
    from cutlass_wsp.sweep.runner import TimingOptions

    spec = SweepSpec(layers=("resnet18:12",), batches=(32,), tiles=(4,), dtypes=("fp16",),
                     patterns=("wsp-r",), ratios=(0.7,), balances=("balanced",),
                     implementations={"wsp-r": ("cutlass",)})
    m = Measurer(TimingOptions(budget_s=0.05, min_reps=3, max_reps=10, warmup=1, use_graph=True),
                 layer_time=True)
    (pt,) = expand(spec)
    fields = m.measure(pt)
    assert fields["method"].startswith("graph") and fields["layer_ms"] > 0
    assert "reason" not in fields, fields.get("reason")


def test_prepared_launchers_follow_the_current_stream():
    """A launcher prepared without a stream launches on CuPy's current stream *when called*: inside a
    CUDA-graph capture it is captured (a prepared launch bound to the old stream would run eagerly
    and leave the graph empty)."""
    from cutlass_wsp.families.dense import DenseBatch
    from cutlass_wsp.gpu import arrays
    from cutlass_wsp.problem import BatchProblem

    W, X = arrays.random((16, 64, 64), "fp16"), arrays.padded_x(16, 64, 196, "fp16")
    Y = arrays.empty((16, 64, X.shape[2]), "fp16")
    launch = DenseBatch.for_problem(BatchProblem(16, 64, X.shape[2], 64), "fp16").prepare(W, X, Y)
    cp.cuda.get_current_stream().synchronize()
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        s.begin_capture()
        launch()
        graph = s.end_capture()
    arrays.poison(Y, "fp16")
    cp.cuda.get_current_stream().synchronize()
    graph.launch(s)
    s.synchronize()
    ref = cp.matmul(W.astype(cp.float32), X.astype(cp.float32))
    assert not bool(cp.isnan(Y.astype(cp.float32)).any())     # the replay wrote Y
    assert float(cp.abs(Y.astype(cp.float32) - ref).max()) < 0.1
