"""Issue 14's points on the GPU: 2:4 through cuSPARSELt (the ctypes strided-batched binding and torch's
binding), the cuSPARSE remainder added on top of another launch (beta = 1), and the sweep's measurement
of every new point (2:4, hybrid, WWP/CSR on spatial-Winograd masks): verified against the masked dense
weights, GEMM batch and whole layer. No kernel of ours is compiled here but BCBP's gather kernel, which
the families tests build already."""

from __future__ import annotations

import numpy as np
import pytest

from cutlass_wsp.dtypes import get_dtype
from cutlass_wsp.errors import InputError, Unsupported
from cutlass_wsp.gpu import arrays
from cutlass_wsp.gpu.verify import check
from cutlass_wsp.semi_structured import prune_2to4

cp = pytest.importorskip("cupy")


def _ref(W, X, dt):
    """float64 product of the stored values."""
    return cp.matmul(arrays.to_float32(W, dt).astype(cp.float64), arrays.to_float32(X, dt).astype(cp.float64))


def _operands(L, M, K, T, name, seed=0):
    dt = get_dtype(name)
    W = np.random.default_rng(seed).standard_normal((L, M, K)).astype(np.float32)
    S = prune_2to4(W)
    Wd = arrays.from_host(np.ascontiguousarray(S.dense_weights()), dt)
    X = arrays.padded_x(L, K, T, dt, seed=seed + 1)
    Y = arrays.poison(arrays.empty((L, M, X.shape[2]), dt), dt)
    return dt, Wd, X, Y


def _make(impl, Wd, X, Y, name):
    if impl == "cusparselt":
        from cutlass_wsp.gpu.cusparselt import CusparseLtBatched

        return CusparseLtBatched(Wd, X, Y, dtype=name)
    from cutlass_wsp.gpu.torch_cslt import TorchCslt

    return TorchCslt(Wd, X, Y, dtype=name)


@pytest.mark.parametrize("impl", ["cusparselt", "torch-cslt"])
@pytest.mark.parametrize("name", ["fp16", "bf16"])
@pytest.mark.parametrize("L, M, K, T", [(16, 64, 64, 256), (16, 128, 192, 512)])
def test_two_to_four_matches_the_masked_dense_product(impl, name, L, M, K, T):
    dt, Wd, X, Y = _operands(L, M, K, T, name)
    lib = _make(impl, Wd, X, Y, name)
    try:
        lib.run(X, Y)
        cp.cuda.get_current_stream().synchronize()
        err = check(Y[..., :T], _ref(Wd, X, dt)[..., :T], dt, f"2:4 {impl} {name}", shape=(L, M, T, K), K=K)
        assert err > 0
        lib.run(X, Y)                                   # a second run on the same buffers: same answer
        cp.cuda.get_current_stream().synchronize()
        check(Y[..., :T], _ref(Wd, X, dt)[..., :T], dt, f"2:4 {impl} {name} again", K=K)
    finally:
        lib.close()


@pytest.mark.parametrize("impl", ["cusparselt", "torch-cslt"])
def test_an_awkward_shape_is_right_or_unsupported_in_one_line(impl):
    """N = 200 (a multiple of 8, not 16) and K = 40: either the library runs it correctly or the point
    is refused as Unsupported, never a traceback."""
    dt, Wd, X, Y = _operands(16, 64, 40, 200, "fp16", seed=5)
    try:
        lib = _make(impl, Wd, X, Y, "fp16")
    except Unsupported as e:
        assert "\n" not in str(e)
        return
    try:
        lib.run(X, Y)
        cp.cuda.get_current_stream().synchronize()
        check(Y[..., :200], _ref(Wd, X, dt)[..., :200], dt, f"2:4 {impl} N=200", K=40)
    finally:
        lib.close()


def test_cusparselt_refuses_weights_that_are_not_two_to_four():
    from cutlass_wsp.gpu.cusparselt import CusparseLtBatched

    dt = get_dtype("fp16")
    W = arrays.from_host(np.random.default_rng(1).standard_normal((16, 64, 64)).astype(np.float32), dt)
    X = arrays.padded_x(16, 64, 256, dt)
    Y = arrays.empty((16, 64, 256), dt)
    with pytest.raises(InputError, match="not 2:4"):
        CusparseLtBatched(W, X, Y, dtype="fp16")


def test_cusparse_accumulate_adds_into_what_is_there():
    from cutlass_wsp.element_masks import element_pruned
    from cutlass_wsp.gpu.baselines import CusparseCsr

    dt = get_dtype("fp16")
    rng = np.random.default_rng(3)
    W = rng.standard_normal((16, 64, 48)).astype(np.float32)
    mask = rng.random(W.shape) < 0.2
    mask[4] = False                                   # a position without nonzeros keeps what is there
    P = element_pruned(W, mask, pattern="wwp", ratio=0.8, criterion="test")
    X = arrays.padded_x(16, 48, 100, dt, seed=4)
    Y0 = arrays.random((16, 64, X.shape[2]), dt)
    for mode in CusparseCsr.MODES:
        Y = Y0.copy()
        sp = CusparseCsr(dt, P.csr, cols=48, mode=mode, accumulate=True)
        sp.run(X, Y)
        cp.cuda.get_current_stream().synchronize()
        Wd = arrays.from_host(P.dense_weights(), dt)
        ref = _ref(Wd, X, dt) + arrays.to_float32(Y0, dt).astype(cp.float64)
        check(Y[..., :100], ref[..., :100], dt, f"csr accumulate {mode}", K=48)
        assert bool(cp.all(Y[4] == Y0[4]))
        sp.close()


SEED_POINTS = [("2:4", "cusparselt", None), ("2:4", "torch-cslt", None),
               ("hybrid", "bcbp+cusparse-per-position", 0.74), ("hybrid", "bcbp+cusparse-block-diag", 0.74),
               ("spatial-winograd", "cusparse-per-position", 0.74), ("spatial-winograd", "cusparse-block-diag", 0.74)]


@pytest.fixture(scope="module")
def measurer(compile_cache_dir):
    from cutlass_wsp.kernels.cache import KernelCache
    from cutlass_wsp.sweep.measure import Measurer
    from cutlass_wsp.sweep.runner import TimingOptions

    return Measurer(TimingOptions(budget_s=0.01, min_reps=3, max_reps=5, warmup=1), layer_time=True,
                    cache=KernelCache(compile_cache_dir))


@pytest.mark.parametrize("pattern, impl, ratio", SEED_POINTS, ids=[f"{p}-{i}" for p, i, _ in SEED_POINTS])
def test_each_new_point_verifies_its_gemm_batch_and_layer(pattern, impl, ratio, measurer):
    """resnet18 layer4 (512->512 @7x7, batch 32): the sweep's measurement verifies the GEMM batch against the
    masked dense weights and the layer against the fp32 pipeline (a VerificationError fails the test)."""
    from cutlass_wsp.sweep.plan import SweepSpec, expand

    spec = SweepSpec(layers=("resnet18:12",), batches=(32,), tiles=(4,), dtypes=("fp16",), patterns=(pattern,),
                     ratios=(ratio,) if ratio else (), implementations={pattern: (impl,)})
    (pt,) = expand(spec)
    fields = measurer.measure(pt)
    assert fields["median_ms"] > 0 and fields["layer_ms"] > 0 and "reason" not in fields, fields.get("reason")
    assert fields["rel_error"] < 0.01 and fields["layer_rel_error"] is not None
    if pattern == "2:4":
        assert fields["kept_fraction"] == 0.5
    if pattern == "hybrid":                           # both launches ran: blocks and a CSR remainder
        split = fields["kernel_config"]["split"]
        assert split["block_nnz"] > 0 and split["remainder_nnz"] > 0 and "gather_b" in fields["kernel"]
    from cutlass_wsp.sweep.results import make_row

    make_row(pt, "ok", **fields)                      # every field is one the results schema has
