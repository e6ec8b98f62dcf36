"""cuDNN's dense 3x3 convolution (no kernel of ours): the whole-layer bar every Winograd layer is
measured against. A whole-layer op (`Op.scope = "layer"`): verified against the fp32 Winograd pipeline
(two independent algorithms, `gpu/transforms.fp32_layer_reference`), and its time is the layer time.
Through PyTorch or the cuDNN frontend (`gpu/cudnn.py`); Unsupported when neither is installed."""

from __future__ import annotations

import numpy as np

from cutlass_wsp.families.base import LAYER, Cost, Family, Op, PointContext, Serves


class CudnnFamily(Family):
    name = "cudnn"
    scope = LAYER
    description = "cuDNN convolution: the whole layer, cuDNN's fastest algorithm for the shape"
    order = 100
    serves = (Serves("conv", "cudnn", description="cuDNN convolution (through PyTorch or the cuDNN frontend): "
                                                  "its fastest algorithm for the shape"),)

    def build(self, ctx: PointContext) -> Op:
        import cupy

        from cutlass_wsp.gpu import arrays
        from cutlass_wsp.gpu.cudnn import CudnnConv
        from cutlass_wsp.gpu.harness import Check
        from cutlass_wsp.gpu.transforms import LAYER_LAYOUT, fp32_layer_reference
        from cutlass_wsp.gpu.verify import layer_rtol
        from cutlass_wsp.winograd import filter_transform

        pt, dt = ctx.point, ctx.dt
        B, c, n, H, Wd = pt.batch, pt.c, pt.n, pt.H, pt.W
        conv = CudnnConv(c, n, H, Wd, B, dt, LAYER_LAYOUT)
        rng = np.random.default_rng(ctx.seed)
        g = (rng.standard_normal((n, c, 3, 3)) * np.sqrt(2.0 / (9 * c))).astype(np.float32)
        g_dev = arrays.from_host(np.ascontiguousarray(g.transpose(0, 2, 3, 1)), dt)      # [n, 3, 3, c]
        g_used = arrays.to_host_float32(g_dev, dt).transpose(0, 3, 1, 2)                   # what cuDNN sees
        x = arrays.random(conv.input_shape, dt)
        out = arrays.empty(conv.output_shape, dt)

        def reference():
            W32 = cupy.asarray(filter_transform(g_used.astype(np.float64), 2).astype(np.float32))
            return fp32_layer_reference(arrays.to_float32(x, dt), W32, 4, B, n, H, Wd)

        return Op(conv.launcher(x, g_dev, out), out, lambda: out, f"cuDNN {conv.method}",
                  Cost(conv.flops(), conv.bytes_moved()),
                  {"backend": conv.backend, "version": conv.version, "layout": LAYER_LAYOUT},
                  {"layout": LAYER_LAYOUT}, reference=reference,
                  check=Check(dt, f"cuDNN conv {pt.key}", shape=out.shape, K=9 * c, rtol=layer_rtol(dt, 4, 9 * c)),
                  scope=LAYER, graphable=False)


FAMILY = CudnnFamily()
