"""Block geometry search for the NHWC output transform: each (tiles, filters) block shape is
rendered, checked against the default kernel's output on fresh data, then timed (L2 flushed) on the
large VGG-16 layers at batch 32, fp16. Run on a GPU: python bench/transform_geometry.py"""

from __future__ import annotations

import dataclasses

from cutlass_wsp.dtypes import get_dtype
from cutlass_wsp.gpu import arrays, transforms
from cutlass_wsp.gpu.ceilings import measure_copy_bandwidth
from cutlass_wsp.gpu.timing import time_gpu

DT, P, B = get_dtype("fp16"), 4, 32
LAYERS = [(64, 224), (128, 112), (256, 56), (512, 28)]      # (n, H): VGG-16's large output maps
CANDIDATES = [(16, 16), (32, 16), (16, 32), (32, 8), (64, 8), (8, 32), (64, 4)]
_default = transforms.output_geometry


def geometry(tt: int, cc: int):
    def make(dt, layout, p):
        g = _default(dt, layout, p)
        if layout != "nhwc" or dt.itemsize != 2:
            return g
        srow = tt + 8                                       # 16 bytes of padding per staged row
        return dataclasses.replace(g, tt=tt, cc=cc, srow=srow,
                                   rs=transforms._rows_per_stage(p, cc * srow * dt.itemsize))
    return make


def main() -> None:
    bw, _ = measure_copy_bandwidth()
    print(f"device copy {bw / 1e9:.0f} GB/s; NHWC output transform, p={P}, fp16, batch {B}")
    print("n@H        " + "  ".join(f"{tt:>3}x{cc:<3}" for tt, cc in CANDIDATES))
    for n, H in LAYERS:
        base = transforms.OutputTransform(P, DT, "nhwc")
        T = B * (H // 2) ** 2
        Y = arrays.random((P * P, n, arrays.npad(T, DT)), DT)
        ref = arrays.to_float32(base(Y, arrays.empty(base.output_shape(B, n, H, H), DT)), DT)
        cells = []
        for tt, cc in CANDIDATES:
            transforms.output_geometry = geometry(tt, cc)
            try:
                tf = transforms.OutputTransform(P, DT, "nhwc")
                out = arrays.poison(arrays.empty(tf.output_shape(B, n, H, H), DT), DT)
                tf(Y, out)
                diff = float(abs(arrays.to_float32(out, DT) - ref).max())
                if diff != diff or diff > 1e-2:
                    cells.append("  WRONG ")
                    continue
                t = time_gpu(lambda: tf(Y, out), budget_s=0.3)
                cells.append(f"{100 * tf.bytes_moved(B, n, H, H) / (t.median_ms * 1e-3) / bw:6.1f}% ")
            except Exception as e:  # noqa: BLE001 -- a geometry the template rejects
                cells.append(f" {type(e).__name__[:7]:>7}")
            finally:
                transforms.output_geometry = _default
        print(f"{n:>3}@{H:<5} " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
