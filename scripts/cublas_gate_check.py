"""Why our cuBLAS times can be lower than the BRIEF's probe on small shapes: the probe's
cupyx.profiler.benchmark records events around a Python call, so the host launch latency lands
inside them; time_gpu holds the GPU with a spin kernel (the gate) while the host launches.
Prints the same GEMM batch timed four ways. Run on a GPU: python scripts/cublas_gate_check.py"""

import numpy as np

from cutlass_wsp.gpu import arrays
from cutlass_wsp.gpu.baselines import CublasBatched
from cutlass_wsp.gpu.timing import time_gpu

print("shape            gate+flush  no-gate+flush  no-gate,no-flush  cupyx.benchmark (us)")
for c, n, H in ((64, 64, 224), (512, 512, 28), (512, 512, 7)):
    T = 32 * (-(-H // 2)) ** 2
    W = arrays.random((16, n, c), "fp16")
    X = arrays.padded_x(16, c, T, "fp16")
    Y = arrays.empty((16, n, X.shape[2]), "fp16")
    g = CublasBatched("fp16")
    run = lambda: g.run(W, X, Y)  # noqa: E731
    a = time_gpu(run, budget_s=0.5).median_ms
    b = time_gpu(run, budget_s=0.5, gate=False).median_ms
    d = time_gpu(run, budget_s=0.5, gate=False, flush_l2=False).median_ms
    from cupyx.profiler import benchmark

    e = float(np.median(benchmark(run, n_warmup=3, n_repeat=20).gpu_times[0])) * 1e3
    print(f"{c}->{n}@{H:<4}      {a * 1e3:9.1f}  {b * 1e3:13.1f}  {d * 1e3:16.1f}  {e * 1e3:12.1f}")
