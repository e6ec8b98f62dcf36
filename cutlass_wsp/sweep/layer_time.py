"""The whole Winograd layer on the GPU: input transform -> the point's GEMM batch -> output transform,
checked against an fp32 GPU pipeline with the same Winograd-domain mask, then timed (`gpu/harness.py`).
cuDNN's dense convolution, the layer-level baseline, is a family of its own (`families/cudnn.py`).

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
from cutlass_wsp.gpu.transforms import LAYER_LAYOUT as LAYOUT


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


def measure_layer(point, dt: DType, W32, ops: LayerOperands, copy_bw: float, timing) -> dict:
    """Layer fields of a result row (see results.LAYER_FIELDS) for a Winograd point.
    `W32`: the masked Winograd-domain weights as the kernel sees them, in fp32 [L, n, c]."""
    from cutlass_wsp.gpu import arrays
    from cutlass_wsp.gpu.harness import Check, time_launch, verify
    from cutlass_wsp.gpu.transforms import InputTransform, OutputTransform, fp32_layer_reference
    from cutlass_wsp.gpu.verify import layer_rtol

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

    err = verify(layer, outputs=out, result=None,
                 reference=lambda: fp32_layer_reference(arrays.to_float32(d, dt), W32, p, B, n, H, Wd),
                 check=Check(dt, f"layer {point.key}", shape=out.shape, K=c, rtol=layer_rtol(dt, p, c)))
    kw = timing.kwargs(graph=False)
    lt, graph_note = None, None
    if timing.use_graph:   # the three launches as one CUDA graph (launch gaps gone), when they can be captured
        try:
            lt = time_launch(layer, **{**kw, "use_graph": True})
        except Unsupported as e:
            graph_note = f"layer timed as separate launches: {e.problem}"
    if lt is None:
        lt = time_launch(layer, **kw)
    tt = time_launch(transforms, **kw)
    tbytes = (tin.bytes_moved(B, c, H, Wd, kept_rows=x_rows)
              + tout.bytes_moved(B, n, H, Wd, kept_rows=kept_rows_per_position(ops.rows)))
    tfloor = 1e3 * tbytes / copy_bw
    fields = dict(layer_ms=lt.median_ms, layer_q1_ms=lt.q1_ms, layer_q3_ms=lt.q3_ms,
                  transform_ms=tt.median_ms, transform_floor_ms=tfloor, layer_rel_error=err, layout=LAYOUT)
    if graph_note:
        fields["reason"] = graph_note
    return fields
