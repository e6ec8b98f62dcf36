"""The whole Winograd layer on the GPU: input transform -> the point's GEMM batch -> output transform,
checked against an fp32 GPU pipeline with the same Winograd-domain mask, then timed; and cuDNN's
dense convolution as the layer-level baseline.

The layer input is NHWC (cuDNN was 1.4-2.5x slower in NCHW on the H100, BRIEF). The fp32 reference
uses the same transforms in fp32 and an fp32 cuBLAS GEMM of the masked weights, so the only
difference it measures is the point's dtype rounding and the kernel itself; the transforms are checked
against the numpy Winograd reference and direct correlation in tests/gpu/test_transforms_gpu.py and
tests/gpu/test_layer_gpu.py. A WSP-C xform point's GEMM reads a compact Xc: its layer runs the compact
input transform (only the kept channels' rows are written), and the reference stays the dense fp32
pipeline with the masked weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cutlass_wsp.dtypes import DType
from cutlass_wsp.errors import InputError, Unsupported

LAYOUT = "nhwc"
# Winograd in low precision loses accuracy as p grows (docs/winograd.md: fp16 F(6,3) 7e-3 against
# direct conv): the layer check allows that much on top of the GEMM tolerance.
_P_FACTOR = {4: 1.0, 6: 2.0, 8: 8.0}


@dataclass
class LayerOperands:
    """What the layer pipeline needs from a prepared GEMM-batch op."""

    X: Any                        # the EC2B input buffer the op reads
    Y: Any                        # its output: dense [L, n, Npad] or compact [L, nmax, Npad]
    rows: np.ndarray | None       # compact output: kept filter of each row, -1 = pad row
    launch: Any                   # the op's launch-only callable
    channel_map: Any = None       # compact input Xc[L, K, Npad] (WSP-C xform): transforms.ChannelMap


def kept_rows_per_position(rows: np.ndarray | None) -> int | None:
    """Rows of Y the compact output transform reads per position (mean over positions); None = all n."""
    if rows is None:
        return None
    return int(round(float((rows >= 0).sum()) / rows.shape[0]))


def input_rows_per_position(ops: LayerOperands, c: int) -> int | None:
    """Rows of X the input transform writes per position: the channel map's kept rows for a compact Xc
    (WSP-C xform), None (all c) for the dense X. A dense X padded past c channels (the first layer's
    c = 3 GEMM) is refused: the transform writes c rows, the GEMM would read more."""
    cmap = ops.channel_map
    if cmap is not None:
        if cmap.c != c or tuple(ops.X.shape[1:2]) != (cmap.K,):
            # a builder bug, not a layer the pipeline cannot serve: fail the point rather than note it
            raise InputError(f"the compact X {tuple(ops.X.shape)} and its channel map (c={cmap.c}, K={cmap.K}) "
                             f"do not fit a layer of c={c}", "build Xc and the map from this layer's pruning")
        return cmap.kept_rows
    if ops.X.shape[1] != c:
        raise Unsupported(f"the GEMM reads a channel-padded X ({ops.X.shape[1]} for c={c})",
                          "layer time is measured for layers whose c is a multiple of 8")
    return None


def layer_rtol(dt: DType, p: int, K: int) -> float:
    from cutlass_wsp.gpu.verify import tolerance

    return 2.0 * tolerance(dt, K) * _P_FACTOR[p]


def _fp32_reference(d, W32, p: int, batch: int, n: int, H: int, Wd: int):
    """out32 = A^T [ (W32 . (B^T d B)) ] A in fp32 on the GPU, NHWC."""
    from cutlass_wsp.gpu import arrays
    from cutlass_wsp.gpu.baselines import CublasBatched
    from cutlass_wsp.gpu.transforms import InputTransform, OutputTransform

    X32 = InputTransform(p, "fp32", LAYOUT)(d)
    Y32 = arrays.empty((W32.shape[0], n, X32.shape[2]), "fp32")
    CublasBatched("fp32").run(W32, X32, Y32)
    tf = OutputTransform(p, "fp32", LAYOUT)
    out32 = arrays.empty(tf.output_shape(batch, n, H, Wd), "fp32")
    return tf(Y32, out32)


def measure_layer(point, dt: DType, W32, ops: LayerOperands, copy_bw: float, timing) -> dict:
    """Layer fields of a result row (see results.LAYER_FIELDS) for a Winograd point.
    `W32`: the masked Winograd-domain weights as the kernel sees them, in fp32 [L, n, c]."""
    import cupy

    from cutlass_wsp.gpu import arrays
    from cutlass_wsp.gpu.timing import time_gpu
    from cutlass_wsp.gpu.transforms import InputTransform, OutputTransform
    from cutlass_wsp.gpu.verify import check

    B, c, n, H, Wd, p = point.batch, point.c, point.n, point.H, point.W, point.p
    x_rows = input_rows_per_position(ops, c)
    cmap = ops.channel_map
    tin = InputTransform(p, dt, LAYOUT, compact=cmap is not None)
    tout = OutputTransform(p, dt, LAYOUT, compact=ops.rows is not None)
    row_map = tout.row_map(ops.rows, n) if ops.rows is not None else None
    d = arrays.random((B, H, Wd, c), dt)                   # fresh input
    out = arrays.empty(tout.output_shape(B, n, H, Wd), dt)

    def transforms() -> None:
        tin(d, ops.X, cmap)
        tout(ops.Y, out, row_map)

    def layer() -> None:
        tin(d, ops.X, cmap)
        ops.launch()
        tout(ops.Y, out, row_map)

    arrays.poison(out, dt)
    layer()
    cupy.cuda.get_current_stream().synchronize()
    ref = _fp32_reference(arrays.to_float32(d, dt), W32, p, B, n, H, Wd)
    err = check(out, ref, dt, f"layer {point.key}", shape=out.shape, K=c, rtol=layer_rtol(dt, p, c))
    del ref
    t = timing
    kw = dict(warmup=t.warmup, min_reps=t.min_reps, max_reps=t.max_reps, budget_s=t.budget_s)
    lt, graph_note = None, None
    if t.use_graph:   # the three launches as one CUDA graph (launch gaps gone), when they can be captured
        try:
            lt = time_gpu(layer, use_graph=True, **kw)
        except Unsupported as e:
            graph_note = f"layer timed as separate launches: {e.problem}"
    if lt is None:
        lt = time_gpu(layer, **kw)
    tt = time_gpu(transforms, **kw)
    tbytes = (tin.bytes_moved(B, c, H, Wd, kept_rows=x_rows)
              + tout.bytes_moved(B, n, H, Wd, kept_rows=kept_rows_per_position(ops.rows)))
    tfloor = 1e3 * tbytes / copy_bw
    fields = dict(layer_ms=lt.median_ms, layer_q1_ms=lt.q1_ms, layer_q3_ms=lt.q3_ms,
                  transform_ms=tt.median_ms, transform_floor_ms=tfloor, layer_rel_error=err, layout=LAYOUT)
    if graph_note:
        fields["reason"] = graph_note
    return fields


def measure_conv(point, dt: DType, ceilings, timing, seed: int = 0) -> dict:
    """cuDNN's dense conv of the layer: verified against the fp32 Winograd pipeline (two independent
    algorithms), then timed. Raises Unsupported when no cuDNN is installed."""
    import cupy

    from cutlass_wsp.gpu import arrays
    from cutlass_wsp.gpu.cudnn import CudnnConv
    from cutlass_wsp.gpu.timing import time_gpu
    from cutlass_wsp.gpu.verify import check
    from cutlass_wsp.winograd import filter_transform

    B, c, n, H, Wd = point.batch, point.c, point.n, point.H, point.W
    conv = CudnnConv(c, n, H, Wd, B, dt, LAYOUT)
    rng = np.random.default_rng(seed)
    g = (rng.standard_normal((n, c, 3, 3)) * np.sqrt(2.0 / (9 * c))).astype(np.float32)
    g_dev = arrays.from_host(np.ascontiguousarray(g.transpose(0, 2, 3, 1)), dt)      # [n, 3, 3, c]
    g_used = arrays.to_host_float32(g_dev, dt).transpose(0, 3, 1, 2)                   # what cuDNN sees
    x = arrays.random(conv.input_shape, dt)
    out = arrays.empty(conv.output_shape, dt)
    launch = conv.launcher(x, g_dev, out)
    arrays.poison(out, dt)
    launch()
    cupy.cuda.get_current_stream().synchronize()
    W32 = cupy.asarray(filter_transform(g_used.astype(np.float64), 2).astype(np.float32))
    ref = _fp32_reference(arrays.to_float32(x, dt), W32, 4, B, n, H, Wd)
    err = check(out, ref, dt, f"cuDNN conv {point.key}", shape=out.shape, K=9 * c,
                rtol=layer_rtol(dt, 4, 9 * c))
    del ref
    t = timing
    tm = time_gpu(launch, warmup=t.warmup, min_reps=t.min_reps, max_reps=t.max_reps, budget_s=t.budget_s)
    flops = conv.flops()
    floor_ms = 1e3 * max(flops / ceilings.gemm_flops, conv.bytes_moved() / ceilings.copy_bw_Bps)
    return dict(flops=flops, kernel=f"cuDNN {conv.method}", kernel_config={"backend": conv.backend,
                "version": conv.version, "layout": LAYOUT},
                median_ms=tm.median_ms, q1_ms=tm.q1_ms, q3_ms=tm.q3_ms, iqr_ms=tm.iqr_ms, min_ms=tm.min_ms,
                reps=tm.reps, method=tm.method, rel_error=err, floor_ms=floor_ms,
                layer_ms=tm.median_ms, layer_q1_ms=tm.q1_ms, layer_q3_ms=tm.q3_ms, layer_rel_error=err,
                layout=LAYOUT)
