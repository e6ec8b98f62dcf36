"""time_gpu, graphs, ceilings and provenance on a real GPU."""

from __future__ import annotations

import pytest

from cutlass_wsp.gpu import arrays
from cutlass_wsp.gpu.ceilings import measure_ceilings
from cutlass_wsp.gpu.info import provenance
from cutlass_wsp.gpu.timing import l2_bytes, time_gpu

cp = pytest.importorskip("cupy")


def _scale(n):
    a = cp.ones(n, cp.float32)
    b = cp.empty_like(a)
    return lambda: cp.multiply(a, 2.0, out=b)


def test_time_gpu_sane_and_ordered():
    small = time_gpu(_scale(1 << 20), budget_s=0.2)
    big = time_gpu(_scale(1 << 27), budget_s=0.2)  # 512 MiB read + write
    for t in (small, big):
        assert t.median_ms > 0 and t.reps >= 10
        assert t.q1_ms <= t.median_ms <= t.q3_ms and t.min_ms <= t.q1_ms
        assert t.method == "events+l2clean+gate"
        assert t.host_enqueue_ms is not None and t.host_enqueue_ms > 0
    assert big.median_ms > 20 * small.median_ms  # 128x the bytes
    # 1 GiB moved at most at 5 TB/s
    assert big.median_ms > (2 * 4 * (1 << 27)) / 5e12 * 1e3
    print(f"\nscale 4 MiB: {small.median_ms * 1e3:.1f} us, 512 MiB: {big.median_ms:.3f} ms, "
          f"enqueue {small.host_enqueue_ms * 1e3:.1f} us, gap risk {small.launch_gap_risk}")


def test_both_flushes_leave_l2_cold():
    """16 MiB read back by a reduction fits in L2: warm it is served from L2, after either flush
    from DRAM. The dirty flush also leaves up to an L2 of dirty lines for the read to write back."""
    a = cp.ones(1 << 22, cp.float32)
    out = cp.empty((), cp.float32)
    read = lambda: cp.sum(a, out=out)                          # noqa: E731
    warm = time_gpu(read, budget_s=0.2, flush_l2=False)
    clean = time_gpu(read, budget_s=0.2, flush_mode="clean")
    dirty = time_gpu(read, budget_s=0.2, flush_mode="dirty")
    assert clean.method.endswith("+l2clean+gate") and dirty.method.endswith("+l2flush+gate")
    assert float(out) == a.size
    print(f"\n16 MiB sum: warm {warm.median_ms * 1e3:.1f} us, clean {clean.median_ms * 1e3:.1f} us, "
          f"dirty {dirty.median_ms * 1e3:.1f} us")
    assert clean.median_ms > 1.15 * warm.median_ms and dirty.median_ms > 1.15 * warm.median_ms


def test_l2_size_read():
    assert 1 << 20 <= l2_bytes() <= 1 << 30


def test_graph_replays_the_captured_launches():
    counter = cp.zeros(1, cp.int64)
    t = time_gpu(lambda: cp.add(counter, 1, out=counter), warmup=3, min_reps=5, max_reps=5,
                 use_graph=True, graph_batch=16)
    cp.cuda.Device().synchronize()
    assert t.method.startswith("graph16") and t.median_ms > 0 and t.reps == 5
    replayed = int(counter.get()[0]) - 3  # minus the eager warm-up launches
    assert replayed % 16 == 0 and replayed // 16 >= 5  # whole batches, at least one per sample


def test_graph_of_a_cutlass_kernel_with_rotation():
    from cutlass_wsp.families.dense import DenseBatch
    from cutlass_wsp.problem import BatchProblem

    dt = arrays.as_dtype("fp16")
    sets = []
    for _ in range(3):
        W, X = arrays.random((16, 64, 64), dt), arrays.padded_x(16, 64, 196, dt)
        sets.append((W, X, arrays.empty((16, 64, X.shape[2]), dt)))
    dense = DenseBatch.for_problem(BatchProblem(16, 64, sets[0][1].shape[2], 64), "fp16")
    eager = time_gpu(dense.run, rotate=sets, budget_s=0.2)
    graph = time_gpu(dense.run, rotate=sets, use_graph=True, graph_batch=9, budget_s=0.2)
    assert eager.method == "events+rotate3+gate" and graph.method == "graph9+rotate3+gate"
    assert 0 < graph.median_ms and 0 < eager.median_ms
    # the graph ran the GEMMs: every output holds W . X
    for W, X, Y in sets:
        ref = cp.matmul(W.astype(cp.float32), X.astype(cp.float32))
        assert float(cp.abs(Y.astype(cp.float32) - ref).max()) < 0.1


def test_graph_capture_of_cublas_is_refused_clearly():
    """CuPy's cuBLAS wrappers raise inside stream capture: that is reported as Unsupported, and the
    stream is left usable (capture ended)."""
    from cutlass_wsp.errors import Unsupported
    from cutlass_wsp.gpu.baselines import CublasBatched

    dt = arrays.as_dtype("fp16")
    W, X = arrays.random((16, 64, 64), dt), arrays.padded_x(16, 64, 196, dt)
    Y = arrays.empty((16, 64, X.shape[2]), dt)
    gemm = CublasBatched(dt)
    with pytest.raises(Unsupported, match="graph"):
        time_gpu(lambda: gemm.run(W, X, Y), use_graph=True, graph_batch=4, budget_s=0.1)
    t = time_gpu(lambda: gemm.run(W, X, Y), budget_s=0.1)   # still works eagerly afterwards
    assert t.median_ms > 0


def test_ceilings_are_physical_and_cached():
    c16 = measure_ceilings("fp16")
    c32 = measure_ceilings("fp32")
    print(f"\ncopy {c16.copy_bw_Bps / 1e12:.2f} TB/s, fp16 {c16.gemm_flops / 1e12:.0f} TFLOP/s, "
          f"fp32 {c32.gemm_flops / 1e12:.1f} TFLOP/s")
    assert 1e11 < c16.copy_bw_Bps < 5e12
    assert 1e13 < c16.gemm_flops < 2e15
    assert 1e12 < c32.gemm_flops < c16.gemm_flops
    assert c32.copy_bw_Bps == c16.copy_bw_Bps  # one copy measurement per process
    assert measure_ceilings("fp16") is c16


def test_provenance_reads_the_gpu():
    p = provenance()
    assert p["gpu_error"] is None, p["gpu_error"]
    assert p["gpu_name"] and p["sm_count"] > 0 and p["compute_capability"] >= 70
    assert p["l2_bytes"] == l2_bytes() and p["memory_bytes"] > 1 << 30
    assert p["cuda_runtime_version"] and p["cupy"]
