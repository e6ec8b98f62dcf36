"""cuBLAS strided-batched (direct) and cuSPARSE CSR SpMM baselines against float64 references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cutlass_wsp.dtypes import get_dtype
from cutlass_wsp.errors import InputError, Unsupported
from cutlass_wsp.gpu import arrays
from cutlass_wsp.gpu.baselines import CublasBatched, CusparseCsr
from cutlass_wsp.gpu.timing import time_gpu
from cutlass_wsp.gpu.verify import check

cp = pytest.importorskip("cupy")


def _ref(W, X, dt):
    """float64 product of the stored values (what a correct kernel computes, before output rounding)."""
    w = arrays.to_float32(W, dt).astype(cp.float64)
    x = arrays.to_float32(X, dt).astype(cp.float64)
    return cp.matmul(w, x)


@pytest.mark.parametrize("name", ["fp16", "bf16", "tf32", "fp32"])
@pytest.mark.parametrize("L, M, K, T", [(16, 64, 96, 200), (36, 32, 48, 49)])
def test_cublas_matches_reference(name, L, M, K, T):
    dt = get_dtype(name)
    W = arrays.random((L, M, K), dt)
    X = arrays.padded_x(L, K, T, dt)
    Npad = arrays.npad(T, dt)
    assert X.shape == (L, K, Npad) and (T != 49 or name not in ("fp16", "bf16") or Npad == 56)
    Y = arrays.poison(arrays.empty((L, M, Npad), dt), dt)
    CublasBatched(dt).run(W, X, Y)
    cp.cuda.get_current_stream().synchronize()
    ref = _ref(W, X, dt)
    check(Y[..., :T], ref[..., :T], dt, f"cublas_{name}", shape=(L, M, T, K), K=K)
    # X's zero pad columns give zero pad columns in Y (all Npad columns are computed by default)
    if Npad > T:
        assert float(cp.abs(arrays.to_float32(Y[..., T:], dt)).max()) == 0.0


def test_cublas_cols_limits_the_written_columns():
    dt = get_dtype("fp16")
    L, M, K, T = 4, 16, 32, 49
    W, X = arrays.random((L, M, K), dt), arrays.padded_x(L, K, T, dt)
    Y = arrays.poison(arrays.empty((L, M, arrays.npad(T, dt)), dt), dt)
    CublasBatched(dt).run(W, X, Y, cols=T)
    cp.cuda.get_current_stream().synchronize()
    check(Y[..., :T], _ref(W, X, dt)[..., :T], dt, "cublas_fp16_cols", K=K)
    assert bool(cp.isnan(Y[..., T:]).all())  # untouched past `cols`


def test_cublas_rejects_wrong_storage():
    dt = get_dtype("fp16")
    W = cp.zeros((2, 8, 8), cp.float32)
    X = arrays.zeros((2, 8, 8), dt)
    with pytest.raises(InputError, match="float16"):
        CublasBatched(dt).run(W, X, arrays.empty((2, 8, 8), dt))


def test_cublas_time_vgg_512_28_batch32_fp16():
    dt = get_dtype("fp16")
    L, M, K, T = 16, 512, 512, 32 * math.ceil(28 / 2) ** 2  # p = 4, m = 2: T = 6272
    W, X = arrays.random((L, M, K), dt), arrays.padded_x(L, K, T, dt)
    Y = arrays.empty((L, M, X.shape[2]), dt)
    gemm = CublasBatched(dt)
    t = time_gpu(lambda: gemm.run(W, X, Y), budget_s=0.5)
    print(f"\ncuBLAS direct VGG 512->512@28 p=4 batch 32 fp16: median {t.median_ms:.4f} ms "
          f"(IQR {t.iqr_ms:.4f}, {t.reps} reps, {t.method}, host enqueue {t.host_enqueue_ms:.4f} ms)")
    assert 0.02 < t.median_ms < 2.0  # 0.104 ms measured on an H100 (BRIEF.md)
    assert t.q1_ms <= t.median_ms <= t.q3_ms


# --- cuSPARSE ---------------------------------------------------------------------------------------

def _pruned(L, M, K, density, seed, empty_position=None):
    """Element-pruned weights: dense masked values (numpy float32) and per-position CSR arrays."""
    rng = np.random.default_rng(seed)
    mask = rng.random((L, M, K)) < density
    if empty_position is not None:
        mask[empty_position] = False
    dense = np.where(mask, rng.standard_normal((L, M, K)), 0.0).astype(np.float32)
    csr = []
    for l in range(L):
        rows, colidx = np.nonzero(mask[l])  # row-major order = CSR order
        indptr = np.concatenate([[0], np.cumsum(mask[l].sum(axis=1))]).astype(np.int32)
        csr.append((indptr, colidx.astype(np.int32), dense[l][rows, colidx]))
    return dense, csr


@pytest.mark.parametrize("mode", ["per_position", "block_diag"])
@pytest.mark.parametrize("name", ["fp32", "fp16", "bf16"])
def test_cusparse_matches_masked_dense(name, mode):
    dt = get_dtype(name)
    L, M, K, T = 16, 64, 96, 49
    dense, csr = _pruned(L, M, K, 0.1, seed=5, empty_position=3)
    X = arrays.padded_x(L, K, T, dt)
    Y = arrays.poison(arrays.empty((L, M, X.shape[2]), dt), dt)
    try:
        sp = CusparseCsr(dt, csr, cols=K, mode=mode)
        try:
            sp.run(X, Y)
        finally:
            cp.cuda.get_current_stream().synchronize()
    except Unsupported as e:
        assert name != "fp32", f"fp32 must be supported: {e}"
        assert "cuSPARSE" in e.problem and name in e.problem and e.fix
        print(f"\ncuSPARSE {mode} {name}: unsupported ({e})")
        return
    Wq = arrays.to_float32(arrays.from_host(dense, dt), dt).astype(cp.float64)  # same rounding as CSR values
    ref = cp.matmul(Wq, arrays.to_float32(X, dt).astype(cp.float64))
    check(Y[..., :T], ref[..., :T], dt, f"cusparse_{mode}_{name}", shape=(L, M, T, K), K=K)
    assert float(cp.abs(arrays.to_float32(Y[3], dt)).max()) == 0.0  # fully pruned position -> zeros
    # a second output buffer gets its own descriptors; results stay right
    Y2 = arrays.poison(arrays.empty(Y.shape, dt), dt)
    sp.run(X, Y2)
    cp.cuda.get_current_stream().synchronize()
    check(Y2[..., :T], ref[..., :T], dt, f"cusparse_{mode}_{name}_2", K=K)
    sp.close()


def test_cusparse_tf32_is_unsupported():
    _, csr = _pruned(4, 8, 8, 0.5, seed=1)
    with pytest.raises(Unsupported, match="TF32"):
        CusparseCsr("tf32", csr, cols=8)


def test_cusparse_time_is_positive():
    dt = get_dtype("fp32")
    L, M, K, T = 16, 256, 256, 32 * 14 * 14
    _, csr = _pruned(L, M, K, 0.1, seed=2)
    X = arrays.padded_x(L, K, T, dt)
    Y = arrays.empty((L, M, X.shape[2]), dt)
    for mode in ("per_position", "block_diag"):
        with CusparseCsr(dt, csr, cols=K, mode=mode) as sp:
            t = time_gpu(lambda: sp.run(X, Y), budget_s=0.3)
        print(f"\ncuSPARSE CSR 90% fp32 {mode} 256->256@28 p=4 b32: {t.median_ms:.4f} ms ({t.method})")
        assert 0 < t.q1_ms <= t.median_ms <= t.q3_ms
