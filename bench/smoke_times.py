"""Smoke timings for a person to read, not a test (they were two GPU tests that printed and asserted
nothing): cuDNN's dense conv on two VGG-16 layers at batch 32, fp16 NHWC, next to BRIEF's probe3 times
on an H100; and the Winograd input and output transforms (VGG 64->64@224, batch 32, p = 4, fp16, both
layouts) in GB/s and % of a measured device copy (the target: >= 80% of the copy for NHWC on large
layers, docs/transforms.md). Outputs are not checked here: tests/gpu/test_cudnn_gpu.py and
tests/gpu/test_transforms_gpu.py verify both against references. Run on a GPU:

    python bench/smoke_times.py
"""

from __future__ import annotations

import sys

# (c = n, H, probe3 ms on an H100): VGG-16 conv4_2-like 512->512@28 and conv1_2-like 64->64@224
CUDNN_LAYERS = ((512, 28, 0.171), (64, 224, 0.276))
TRANSFORM_SHAPE = (32, 64, 224, 224)      # (batch, c, H, W)
LAYOUTS = ("nchw", "nhwc")


def cudnn_lines() -> list[str]:
    from cutlass_wsp.gpu import arrays
    from cutlass_wsp.gpu.cudnn import CudnnConv, available
    from cutlass_wsp.gpu.timing import time_gpu

    ok, why = available()
    if not ok:
        return [f"cuDNN not timed: {why}"]
    lines = []
    for c, H, probe_ms in CUDNN_LAYERS:
        conv = CudnnConv(c, c, H, H, 32, "fp16", "nhwc")
        x = arrays.random(conv.input_shape, "fp16", seed=1)
        w = arrays.random(conv.weight_shape, "fp16", seed=2, scale=0.05)
        out = arrays.empty(conv.output_shape, "fp16")
        t = time_gpu(conv.launcher(x, w, out), warmup=5, min_reps=10, max_reps=50, budget_s=2.0)
        tflops = conv.flops() / (t.median_ms * 1e-3) / 1e12
        lines.append(f"{c}->{c}@{H}: {t.median_ms:.3f} ms ({tflops:.0f} TFLOP/s; probe3 {probe_ms} ms) "
                     f"via {conv.method}")
        del x, w, out
    return lines


def transform_lines() -> list[str]:
    from cutlass_wsp.dtypes import get_dtype
    from cutlass_wsp.gpu import arrays
    from cutlass_wsp.gpu.ceilings import measure_copy_bandwidth
    from cutlass_wsp.gpu.timing import time_gpu
    from cutlass_wsp.gpu.transforms import InputTransform, OutputTransform

    dt, p, (B, c, H, W) = get_dtype("fp16"), 4, TRANSFORM_SHAPE
    copy_bw, _ = measure_copy_bandwidth()
    lines = [f"device copy {copy_bw / 1e9:.0f} GB/s (read + write)"]
    for layout in LAYOUTS:
        it = InputTransform(p, dt, layout)
        d = arrays.random((B, c, H, W) if layout == "nchw" else (B, H, W, c), dt, seed=1)
        X = arrays.empty(it.x_shape(B, c, H, W), dt)
        t = time_gpu(lambda: it(d, X), warmup=3, min_reps=10, max_reps=50, budget_s=2.0)
        bw = it.bytes_moved(B, c, H, W) / (t.median_ms * 1e-3)
        lines.append(f"input  {layout}: {t.median_ms:.3f} ms  {bw / 1e9:.0f} GB/s  {100 * bw / copy_bw:.0f}% of copy")
        ot = OutputTransform(p, dt, layout)
        out = arrays.empty(ot.output_shape(B, c, H, W), dt)
        t = time_gpu(lambda: ot(X, out), warmup=3, min_reps=10, max_reps=50, budget_s=2.0)
        bw = ot.bytes_moved(B, c, H, W) / (t.median_ms * 1e-3)
        lines.append(f"output {layout}: {t.median_ms:.3f} ms  {bw / 1e9:.0f} GB/s  {100 * bw / copy_bw:.0f}% of copy")
        del d, X, out
    return lines


def main() -> int:
    from cutlass_wsp.errors import WspError
    from cutlass_wsp.gpu.device import require_gpu

    try:
        require_gpu()
        print("[cuDNN fp16 NHWC batch 32]\n  " + "\n  ".join(cudnn_lines()))
        b, c, h, _ = TRANSFORM_SHAPE
        print(f"[transforms bandwidth, VGG {c}->{c}@{h} b{b} p=4 fp16]\n  " + "\n  ".join(transform_lines()))
    except WspError as e:
        print(f"smoke_times: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
