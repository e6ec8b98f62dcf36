"""The toy family on the GPU: its kernel (compiled here only) computes exactly what the dense kernel of
the same configuration computes, and a sweep point of it verifies and gets a layer time."""

from __future__ import annotations


def test_scaled_dense_equals_dense_bit_for_bit(compile_cache_dir):
    import cupy

    from cutlass_wsp.families.dense import DENSE_KERNEL, DenseBatch
    from cutlass_wsp.families.scaled import SCALE, SCALED_KERNEL, ScaledBatch
    from cutlass_wsp.gpu import arrays
    from cutlass_wsp.gpu.device import compute_capability
    from cutlass_wsp.kernels.cache import KernelCache
    from cutlass_wsp.kernels.library import get_kernel
    from cutlass_wsp.kernels.manifest import arch_for_device
    from cutlass_wsp.problem import BatchProblem

    cache, arch = KernelCache(compile_cache_dir), arch_for_device(compute_capability())
    p = BatchProblem(16, 128, 784, 128)
    import numpy as np

    rng = np.random.default_rng(0)       # |w| >= 1/4: w / SCALE stays a normal fp16 number, so exact
    w = rng.uniform(0.25, 2.0, (16, 128, 128)) * rng.choice([-1.0, 1.0], (16, 128, 128))
    W = arrays.from_host(w.astype(np.float32), "fp16")
    X = arrays.padded_x(16, 128, 784, "fp16", seed=1)
    Y_dense, Y_scaled = arrays.empty((16, 128, 784), "fp16"), arrays.empty((16, 128, 784), "fp16")
    DenseBatch(get_kernel(DENSE_KERNEL.default(p, "fp16", arch), cache)).run(W, X, Y_dense)
    Ws = (W.astype(cupy.float32) / SCALE).astype(cupy.float16)      # exact: a power-of-two scale
    ScaledBatch(get_kernel(SCALED_KERNEL.default(p, "fp16", arch), cache)).run(Ws, X, Y_scaled)
    cupy.cuda.get_current_stream().synchronize()
    assert bool(cupy.all(Y_dense.view(cupy.uint16) == Y_scaled.view(cupy.uint16)))


def test_a_scaled_sweep_point_verifies_with_its_layer(compile_cache_dir):
    from cutlass_wsp.kernels.cache import KernelCache
    from cutlass_wsp.sweep.measure import Measurer
    from cutlass_wsp.commands.sweep_options import from_args
    from cutlass_wsp.sweep.plan import expand
    from cutlass_wsp.sweep.runner import TimingOptions

    (pt,) = expand(from_args(["--net", "resnet18:12", "--pattern", "dense", "--impl", "dense=cutlass-scaled"]))
    m = Measurer(TimingOptions(budget_s=0.01, min_reps=3, max_reps=5, warmup=1), cache=KernelCache(compile_cache_dir))
    row = m.measure(pt)
    assert row["kernel"].startswith("wsp_scaled_dense_") and row["kernel_config"]["scale"] == 4.0
    assert row["layer_ms"] > 0 and row["rel_error"] is not None and row["tuned"] is None
