"""cuDNN dense 3x3 conv baseline against the float64 direct convolution of cutlass_wsp.winograd, on
CuPy's current stream; skips with the 'unavailable' reason when neither torch nor the cuDNN frontend
is installed."""

from __future__ import annotations

import numpy as np
import pytest

from cutlass_wsp import winograd as wg
from cutlass_wsp.errors import InputError
from cutlass_wsp.gpu import arrays
from cutlass_wsp.gpu.cudnn import CudnnConv, available
from cutlass_wsp.gpu.verify import check

cp = pytest.importorskip("cupy")


@pytest.fixture(scope="module", autouse=True)
def _cudnn():
    ok, why = available()
    if not ok:
        pytest.skip(why)


def _nchw_values(a, dt, layout, weight=False) -> np.ndarray:
    """float64 host copy of the stored values, in NCHW ([n, c, 3, 3] for weights)."""
    v = arrays.to_host_float32(a, dt).astype(np.float64)
    return v if layout == "nchw" else v.transpose(0, 3, 1, 2)


def _case(name, layout, shape=(2, 5, 7, 9, 11), seed=0):
    B, c, n, H, W = shape
    conv = CudnnConv(c, n, H, W, B, name, layout)
    x = arrays.random(conv.input_shape, name, seed=seed + 1)
    w = arrays.random(conv.weight_shape, name, seed=seed + 2, scale=0.3)
    ref = wg.direct_conv2d(_nchw_values(x, name, layout), _nchw_values(w, name, layout))
    return conv, x, w, ref


def _got(out, layout):
    return out if layout == "nchw" else out.transpose(0, 3, 1, 2)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("name", ["fp16", "bf16", "fp32", "tf32"])
def test_cudnn_matches_direct_conv(name, layout):
    """fp32 must stay under fp32's tolerance (1e-5): TF32 tensor cores there would fail it."""
    if name not in ("fp16", "bf16") and available()[1].startswith("cudnn-frontend"):
        pytest.skip("the cuDNN frontend path serves fp16/bf16 only")
    conv, x, w, ref = _case(name, layout)
    out = arrays.poison(arrays.empty(conv.output_shape, name), name)
    assert conv.run(x, w, out) is out
    cp.cuda.get_current_stream().synchronize()
    check(_got(out, layout), ref, name, f"cudnn {conv.method} {name} {layout}", shape=out.shape, K=5 * 9)


def test_cudnn_runs_on_cupy_current_stream():
    conv, x, w, ref = _case("fp16", "nhwc", shape=(4, 32, 48, 28, 28), seed=7)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        out = arrays.poison(arrays.empty(conv.output_shape, "fp16"), "fp16")
        launch = conv.launcher(x, w, out)
        for _ in range(3):
            launch()
        copy = out.copy()  # ordered after the conv only if the conv ran on this stream
        if conv.backend == "torch":
            assert conv._impl._stream().cuda_stream == stream.ptr
    stream.synchronize()
    check(_got(copy, "nhwc"), ref, "fp16", "cudnn on a CuPy stream", K=32 * 9)


def test_cudnn_validates_operands():
    conv, x, w, _ = _case("fp16", "nchw")
    out = arrays.empty(conv.output_shape, "fp16")
    with pytest.raises(InputError, match="expected"):
        conv.run(x.reshape(x.shape[0], x.shape[1], -1), w, out)
    with pytest.raises(InputError, match="dtype float32"):
        conv.run(x.astype(cp.float32), w, out)
    with pytest.raises(InputError, match="not a CuPy array"):
        conv.run(cp.asnumpy(x), w, out)


def test_a_conv_point_is_a_whole_layer_op_of_the_cudnn_family():
    """The sweep's conv point goes through the registry's cudnn family: a whole-layer op checked against
    the fp32 Winograd pipeline, its time the layer time."""
    from cutlass_wsp.families import registry
    from cutlass_wsp.sweep.measure import Measurer
    from cutlass_wsp.sweep.plan import SweepSpec, expand
    from cutlass_wsp.sweep.runner import TimingOptions

    (pt,) = expand(SweepSpec(layers=("resnet18:12",), batches=(2,), tiles=(4,), dtypes=("fp16",), patterns=("conv",)))
    assert registry.serving(pt.pattern, pt.impl).name == "cudnn"
    row = Measurer(TimingOptions(budget_s=0.01, min_reps=3, max_reps=5, warmup=1)).measure(pt)
    assert row["kernel"].startswith("cuDNN") and row["layer_ms"] == row["median_ms"] > 0
    assert row["layer_rel_error"] == row["rel_error"] is not None and row["layout"] == "nhwc"
    assert row["tuned"] is None and row["floor_ms"] > 0
