"""Host-side logic of the pruned families (no GPU): layouts, index maps, global gather indices and
padding, checked by simulating each kernel's launch in numpy and comparing with Pruned.reference;
validation errors before anything is launched; kernel choice per dtype x arch."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cutlass_wsp.errors import InputError, Unsupported
from cutlass_wsp.families import bcbp, fp, gather, wsp_c, wsp_r
from cutlass_wsp.kernels.description import default_desc
from cutlass_wsp.pruning import prune

L, N_FILTERS, C = 16, 64, 48
T = 20


@pytest.fixture(scope="module")
def W():
    return np.random.default_rng(1).standard_normal((L, N_FILTERS, C))


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(2).standard_normal((L, C, T))


def _pruned(W, pattern, ratio=0.7, balance="balanced", **kw):
    return prune(W, pattern, ratio, balance=balance, **kw)


# ---------------------------------------------------------------------------------------- WSP-R
@pytest.mark.parametrize("balance", ["balanced", "unbalanced", "spread"])
def test_row_layout_index_map_and_padding(W, balance):
    P = _pruned(W, "wsp-r", 0.6, balance, **({"spread": 0.2} if balance == "spread" else {}))
    lay = wsp_r.row_layout(P)
    assert lay.M == int(P.kept_per_position.max())
    assert (lay.counts == P.kept_per_position).all()
    idx = lay.row_index()
    padded = lay.padded_weights()
    for i in range(L):
        k = len(P.rows[i])
        assert (idx[i, :k] == P.rows[i]).all() and (idx[i, k:] == -1).all()
        assert np.array_equal(padded[i, :k], P.compact_weights[i]) and not padded[i, k:].any()
    packed, offsets = lay.packed_weights(), lay.row_offsets()
    for i in range(L):
        assert np.array_equal(packed[offsets[i]: offsets[i] + len(P.rows[i])], P.compact_weights[i])


@pytest.mark.parametrize("balance", ["balanced", "unbalanced"])
def test_padded_batch_then_scatter_equals_reference(W, X, balance):
    """What 'batched'/'padded' launch (one dense batch, M = max n_i), scattered, is the pruned product."""
    P = _pruned(W, "wsp-r", 0.7, balance)
    lay = wsp_r.row_layout(P)
    Yc = np.matmul(lay.padded_weights(), X)                        # [L, M, T]: the dense kernel's output
    Y = wsp_r.scatter_rows(Yc, lay.row_index(), N_FILTERS)
    np.testing.assert_allclose(Y, P.reference(X), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(Y, P.dense_reference(X), rtol=1e-12, atol=1e-12)


def test_grouped_output_rows_beyond_n_i_are_never_read(W, X):
    """Grouped writes only the first n_i rows of Yc[i]; the rest stay poisoned and must not leak."""
    P = _pruned(W, "wsp-r", 0.7, "unbalanced")
    assert not P.is_balanced
    lay = wsp_r.row_layout(P)
    Yc = np.full((L, lay.M, T), np.nan)
    packed, offsets = lay.packed_weights(), lay.row_offsets()
    for i, n_i in enumerate(lay.counts):                           # one group per position
        Yc[i, :n_i] = packed[offsets[i]: offsets[i] + n_i] @ X[i]
    Y = wsp_r.scatter_rows(Yc, lay.row_index(), N_FILTERS)
    assert np.isfinite(Y).all()
    np.testing.assert_allclose(Y, P.reference(X), rtol=1e-12, atol=1e-12)


def test_scatter_rejects_a_mismatched_index():
    with pytest.raises(InputError, match="row index"):
        wsp_r.scatter_rows(np.zeros((L, 4, 8)), np.zeros((L, 5), dtype=np.int32), 8)


def test_wsp_r_modes_and_kernels(W):
    bal = _pruned(W, "wsp-r", 0.7)
    unbal = _pruned(W, "wsp-r", 0.7, "unbalanced")
    assert wsp_r.WspR(bal, "fp16", 24, arch="sm90").mode == "batched"
    auto = wsp_r.WspR(unbal, "fp16", 24, arch="sm90")
    assert auto.mode == "grouped" and auto.desc.family == "wsp_r_grouped" and auto.desc.arch == "sm90"
    padded = wsp_r.WspR(unbal, "bf16", 24, arch="sm90", mode="padded")
    assert padded.desc.family == "dense" and padded.problem.M == int(unbal.kept_per_position.max())
    assert padded.problem.K == C and padded.problem.N == 24
    with pytest.raises(InputError, match="batched.*equal kept rows"):
        wsp_r.WspR(unbal, "fp16", 24, arch="sm90", mode="batched")
    with pytest.raises(InputError, match="unknown WSP-R mode"):
        wsp_r.WspR(bal, "fp16", 24, arch="sm90", mode="fast")
    with pytest.raises(Unsupported, match="unknown kernel arch"):
        wsp_r.WspR(bal, "fp16", 24, arch="sm75")


@pytest.mark.parametrize("dtype,arch,want_arch", [("fp16", "sm90", "sm90"), ("bf16", "sm90", "sm90"),
                                                   ("tf32", "sm90", "sm80"), ("fp16", "sm80", "sm80"),
                                                   ("tf32", "sm80", "sm80")])
def test_grouped_kernel_per_dtype_and_arch(dtype, arch, want_arch):
    d = wsp_r.grouped_desc(dtype, arch, N=3136, K=256)
    assert (d.family, d.dtype, d.arch) == ("wsp_r_grouped", dtype, want_arch)
    assert d.alignment_bytes == 16


def test_grouped_kernel_falls_back_to_sm80_below_16_bytes():
    d = wsp_r.grouped_desc("fp16", "sm90", N=3136, K=36)           # K = 36: 8-byte accesses at most
    assert d.arch == "sm80" and d.alignment == 4


def test_grouped_desc_refuses_what_the_templates_cannot_build():
    with pytest.raises(Unsupported, match="tf32"):
        wsp_r.check_grouped_desc(default_desc("wsp_r_grouped", "tf32", "sm90"))
    with pytest.raises(Unsupported, match="cpasync_ws"):
        wsp_r.check_grouped_desc(default_desc("wsp_r_grouped", "fp16", "sm90", kernel_schedule="cpasync_ws"))
    with pytest.raises(Unsupported, match="swizzle"):
        wsp_r.check_grouped_desc(default_desc("wsp_r_grouped", "fp16", "sm80", swizzle=2))
    ok = default_desc("wsp_r_grouped", "fp16", "sm90", tile=(64, 128, 64), kernel_schedule="tma_ws_pingpong")
    assert wsp_r.check_grouped_desc(ok) is ok


def test_wsp_r_rejects_a_kernel_of_another_family(W):
    P = _pruned(W, "wsp-r", 0.7, "unbalanced")
    with pytest.raises(InputError, match="wsp_r_grouped"):
        wsp_r.WspR(P, "fp16", 24, arch="sm90", desc=default_desc("dense", "fp16", "sm90"))
    with pytest.raises(InputError, match="fp16"):
        wsp_r.WspR(P, "fp16", 24, arch="sm90", desc=default_desc("wsp_r_grouped", "bf16", "sm90"))


# ------------------------------------------------------------------------------------------- FP
def test_fp_is_one_batch_with_the_kept_filters(W, X):
    P = _pruned(W, "fp", 0.5)
    f = fp.Fp(P, "fp16", 24, arch="sm90")
    kept = len(P.rows[0])
    assert f.mode == "batched" and f.M == kept and f.problem.M == kept and f.desc.family == "dense"
    assert np.array_equal(f.filters, P.rows[0]) and (f.row_index == P.rows[0]).all()
    Yc = np.matmul(f.layout.padded_weights(), X)
    np.testing.assert_allclose(wsp_r.scatter_rows(Yc, f.row_index, N_FILTERS), P.reference(X), rtol=1e-12)


def test_fp_refuses_per_position_rows(W):
    P = _pruned(W, "wsp-r", 0.5)
    with pytest.raises(InputError, match="FP runs pruning pattern fp"):
        fp.Fp(P, "fp16", 24, arch="sm90")
    fake = dataclasses.replace(P, pattern="fp")                      # rows differ between positions
    with pytest.raises(InputError, match="different filters in position"):
        fp.Fp(fake, "fp16", 24, arch="sm90")


# ----------------------------------------------------------------------------------------- WSP-C
@pytest.mark.parametrize("balance", ["balanced", "unbalanced"])
@pytest.mark.parametrize("alignment", [8, 4])
def test_wsp_c_global_index_and_zero_padding(W, X, balance, alignment):
    """The fused kernel, simulated: batch i multiplies the padded weights by rows idx[i] of X_flat."""
    P = _pruned(W, "wsp-c", 0.7, balance)
    lay = wsp_c.column_layout(P)
    K = lay.K(alignment)
    assert K % alignment == 0 and K >= P.kept_per_position.max() and K - P.kept_per_position.max() < alignment
    idx, Wp = lay.global_index(K), lay.padded_weights(K)
    assert idx.dtype == np.int32 and idx.shape == (L, K) and Wp.shape == (L, N_FILTERS, K)
    X_flat = X.reshape(L * C, T)
    for i in range(L):
        k = len(P.cols[i])
        assert (idx[i, :k] == i * C + P.cols[i]).all()             # global rows of X_i's kept channels
        assert (idx[i, k:] == idx[i, k - 1]).all()                 # pads repeat a valid row ...
        assert not Wp[i, :, k:].any()                              # ... and meet zero weights
        assert (idx[i] // C == i).all()
    Y = np.stack([Wp[i] @ X_flat[idx[i]] for i in range(L)])
    np.testing.assert_allclose(Y, P.reference(X), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(Y, P.dense_reference(X), rtol=1e-12, atol=1e-12)


def test_wsp_c_two_pass_gathers_then_runs_a_dense_batch(W, X):
    P = _pruned(W, "wsp-c", 0.5, "unbalanced")
    f = wsp_c.WspC(P, "fp16", 24, arch="sm90", mode="two_pass")
    assert f.desc.family == "dense" and f.problem.K == f.K and f.K % 8 == 0
    Xg = X.reshape(L * C, T)[f.index.reshape(-1)].reshape(L, f.K, T)   # what RowGather writes
    Y = np.matmul(f.layout.padded_weights(f.K), Xg)
    np.testing.assert_allclose(Y, P.reference(X), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype,align", [("fp16", 8), ("bf16", 8), ("tf32", 4)])
def test_wsp_c_fused_kernel_and_problem(W, dtype, align):
    P = _pruned(W, "wsp-c", 0.7)
    f = wsp_c.WspC(P, dtype, 40, arch="sm90")
    assert f.mode == "fused" and f.desc.family == "gather_b" and f.desc.arch == "sm80"
    assert f.desc.alignment == align and f.K % align == 0
    g = f.gather_problem
    assert (g.batches, g.M, g.N, g.K) == (L, N_FILTERS, 40, f.K)
    assert g.a_batch_stride == N_FILTERS * f.K and g.d_batch_stride == N_FILTERS * 40


@pytest.mark.parametrize("balance", ["balanced", "unbalanced"])
def test_wsp_c_xform_runs_the_dense_kernel_on_what_the_transform_writes(W, X, balance):
    """xform: the compact input transform writes X_i[c] to row channel_map[i, c] of Xc (pad rows stay
    the zeros Xc was allocated with); the dense batch Wc . Xc is the pruned product."""
    from cutlass_wsp.gpu.transforms import InputTransform

    P = _pruned(W, "wsp-c", 0.6, balance)
    f = wsp_c.WspC(P, "fp16", 24, arch="sm90", mode="xform")
    assert f.desc.family == "dense" and f.problem == wsp_c.WspC(P, "fp16", 24, arch="sm90", mode="two_pass").problem
    assert f.input_shape == (L, f.K, 24) and f.K == -(-int(P.kept_per_position.max()) // 8) * 8 < C
    xrow = InputTransform.channel_rows(f.layout.cols, C, f.K)
    Xc = np.zeros((L, f.K, T))
    for i, ch in zip(*np.nonzero(xrow >= 0)):                      # what the compact transform stores
        Xc[i, xrow[i, ch]] = X[i, ch]
    assert ((xrow >= 0).sum(axis=1) == P.kept_per_position).all()
    Y = np.matmul(f.layout.padded_weights(f.K), Xc)
    np.testing.assert_allclose(Y, P.reference(X), rtol=1e-12, atol=1e-12)
    # compact_input's gather (the GEMM-batch benchmark's Xc): kept rows identical, pad rows finite copies
    Xg = X.reshape(L * C, T)[f.index.reshape(-1)].reshape(L, f.K, T)
    for i in range(L):
        k = len(P.cols[i])
        assert np.array_equal(Xg[i, :k], Xc[i, :k])
    np.testing.assert_allclose(np.matmul(f.layout.padded_weights(f.K), Xg), Y, rtol=1e-12, atol=1e-12)


def test_wsp_c_xform_checks_before_setup_and_takes_dense_kernels_only(W):
    P = _pruned(W, "wsp-c", 0.5)
    f = wsp_c.WspC(P, "bf16", 24, arch="sm80", mode="xform")
    assert f.desc.arch == "sm80" and f.desc.dtype == "bf16" and f.kernel_descs == [f.desc]
    with pytest.raises(InputError, match="not set up"):
        f.prepare(None, None)
    with pytest.raises(InputError, match="not set up"):
        f.compact_input(None)
    with pytest.raises(InputError, match="WSP-C xform runs a bf16 'dense' kernel"):
        wsp_c.WspC(P, "bf16", 24, arch="sm80", mode="xform", desc=gather.gather_desc("bf16", N=24, K=24))
    assert "xform" in wsp_c.MODES


# ------------------------------------------------------------------------------------------ BCBP
@pytest.mark.parametrize("tile_rows", [32, 16, 8])
def test_bcbp_batches_cover_the_row_tiles(W, X, tile_rows):
    """The fused launch, simulated: batch b = i*n_tiles + j writes D at b*t*N of a dense Y[L, n, N]."""
    P = _pruned(W, "bcbp", 0.7, tile_rows=tile_rows)
    f = bcbp.Bcbp(P, "fp16", T, arch="sm90")
    lay, K, g = f.layout, f.K, f.gather_problem
    nt = N_FILTERS // tile_rows
    assert (lay.t, lay.n_tiles, g.batches, g.M) == (tile_rows, nt, L * nt, tile_rows)
    assert g.a_batch_stride == tile_rows * K and g.d_batch_stride == tile_rows * T
    idx, A = lay.global_index(K), lay.padded_weights(K)
    X_flat = X.reshape(L * C, T)
    D = np.full(L * N_FILTERS * T, np.nan)
    for b in range(g.batches):
        i, j = divmod(b, nt)
        assert (idx[b, : lay.k] == i * C + P.tile_cols[i, j]).all()
        start = b * g.d_batch_stride
        assert start == (i * N_FILTERS + j * tile_rows) * T        # = row j*t of Y_i
        D[start: start + tile_rows * T] = (A[b] @ X_flat[idx[b]]).reshape(-1)
    np.testing.assert_allclose(D.reshape(L, N_FILTERS, T), P.reference(X), rtol=1e-12, atol=1e-12)


def test_bcbp_tile_m_follows_the_row_tile(W):
    assert bcbp.Bcbp(_pruned(W, "bcbp", 0.5, tile_rows=32), "fp16", 24, arch="sm90").desc.tile[0] == 32
    assert bcbp.Bcbp(_pruned(W, "bcbp", 0.5, tile_rows=64), "tf32", 24, arch="sm80").desc.tile[0] == 64
    assert [gather.tile_m_for_rows(r) for r in (1, 32, 33, 64, 65, 128, 512)] == [32, 32, 64, 64, 128, 128, 128]


# ------------------------------------------------------------------------------------ validation
def _rows_pruned(W):
    return _pruned(W, "wsp-r", 0.5)


@pytest.mark.parametrize("bad,match", [
    (lambda r: r[::-1].copy(), "not strictly ascending"),
    (lambda r: np.concatenate([r[:1], r[:1], r[1:]]), "not strictly ascending"),
    (lambda r: np.append(r, N_FILTERS), r"outside \[0, 64\)"),
    (lambda r: np.append(-1, r), r"outside \[0, 64\)"),
    (lambda r: r[:0], "keeps no rows"),
    (lambda r: r.astype(np.float64), "1-D integer"),
    (lambda r: r.reshape(1, -1), "1-D integer"),
])
def test_bad_row_indices_are_input_errors(W, bad, match):
    P = _rows_pruned(W)
    rows = list(P.rows)
    rows[3] = bad(rows[3])
    with pytest.raises(InputError, match=match):
        wsp_r.WspR(dataclasses.replace(P, rows=rows), "fp16", 24, arch="sm90", mode="padded")


def test_bad_column_indices_are_input_errors(W):
    P = _pruned(W, "wsp-c", 0.5)
    cols = list(P.cols)
    cols[0] = np.append(cols[0], C + 5)
    with pytest.raises(InputError, match=r"cols\[0\].*outside \[0, 48\)"):
        wsp_c.WspC(dataclasses.replace(P, cols=cols), "fp16", 24, arch="sm90")
    with pytest.raises(InputError, match="15 index arrays for 16"):
        wsp_c.WspC(dataclasses.replace(P, cols=P.cols[:-1]), "fp16", 24, arch="sm90")


def test_mask_of_the_wrong_shape_or_content_is_an_input_error(W):
    P = _rows_pruned(W)
    with pytest.raises(InputError, match="does not match weights"):
        wsp_r.WspR(dataclasses.replace(P, mask=P.mask[:, :-1]), "fp16", 24, arch="sm90")
    mask = P.mask.copy()
    mask[2, P.rows[2][0], 5] = False
    with pytest.raises(InputError, match="mask disagrees with the kept rows at position 2"):
        wsp_r.WspR(dataclasses.replace(P, mask=mask), "fp16", 24, arch="sm90")


def test_compact_weights_must_match_the_indices(W):
    P = _rows_pruned(W)
    cw = list(P.compact_weights)
    cw[1] = cw[1][:-1]
    with pytest.raises(InputError, match=r"compact_weights\[1\]"):
        wsp_r.WspR(dataclasses.replace(P, compact_weights=cw), "fp16", 24, arch="sm90")


def test_ratio_leaving_nothing_is_an_input_error(W):
    with pytest.raises(InputError, match="leaves no"):
        prune(W, "wsp-c", 0.999)
    P = _pruned(W, "bcbp", 0.5)
    empty = dataclasses.replace(P, tile_cols=P.tile_cols[:, :, :0])
    with pytest.raises(InputError, match="keeps no column segments"):
        bcbp.Bcbp(empty, "fp16", 24, arch="sm90")


def test_bcbp_layout_errors(W):
    P = _pruned(W, "bcbp", 0.5)
    with pytest.raises(InputError, match="tile_rows=5 does not divide"):
        bcbp.Bcbp(dataclasses.replace(P, tile_rows=5), "fp16", 24, arch="sm90")
    with pytest.raises(InputError, match="tile_cols has shape"):
        bcbp.Bcbp(dataclasses.replace(P, tile_cols=P.tile_cols[:, :1]), "fp16", 24, arch="sm90")
    tc = P.tile_cols.copy()
    tc[0, 1] = tc[0, 1][::-1]
    with pytest.raises(InputError, match=r"tile_cols\[0, 1\] is not strictly ascending"):
        bcbp.Bcbp(dataclasses.replace(P, tile_cols=tc), "fp16", 24, arch="sm90")


def test_wrong_pattern_is_an_input_error(W):
    P = _pruned(W, "wsp-c", 0.5)
    with pytest.raises(InputError, match="WSP-R runs pruning pattern wsp-r"):
        wsp_r.WspR(P, "fp16", 24, arch="sm90")
    with pytest.raises(InputError, match="BCBP runs pruning pattern bcbp"):
        bcbp.Bcbp(P, "fp16", 24, arch="sm90")
    with pytest.raises(InputError, match="WSP-C runs pruning pattern wsp-c"):
        wsp_c.WspC(_rows_pruned(W), "fp16", 24, arch="sm90")
    with pytest.raises(InputError, match="unknown WSP-C mode"):
        wsp_c.WspC(P, "fp16", 24, arch="sm90", mode="fast")


def test_run_before_setup_is_an_input_error(W):
    f = wsp_c.WspC(_pruned(W, "wsp-c", 0.5), "fp16", 24, arch="sm90")
    with pytest.raises(InputError, match="not set up"):
        f.prepare(None, None)


# --------------------------------------------------------------------------------- gather helpers
def test_padded_global_index_and_overflow():
    idx = gather.padded_global_index([np.array([1, 4]), np.array([0])], [0, 10], 4)
    assert idx.tolist() == [[1, 4, 4, 4], [10, 10, 10, 10]]
    with pytest.raises(InputError, match="more than K"):
        gather.padded_global_index([np.arange(5)], [0], 4)
    with pytest.raises(Unsupported, match="int32"):
        gather.padded_global_index([np.array([0])], [2**31], 1)


@pytest.mark.parametrize("row_bytes,ptrs,want", [(64, (0, 256), 16), (24, (0, 256), 8), (20, (0, 0), 4),
                                                 (6, (0, 0), 2), (64, (8, 256), 8)])
def test_row_gather_vector_width(row_bytes, ptrs, want):
    assert gather.gather_vector_bytes(row_bytes, *ptrs) == want


def _strided_visits(extent: int, workers: int) -> np.ndarray:
    """How often a grid-stride loop `for (v = w; v < extent; v += workers)` over all w visits each v."""
    visits = np.zeros(extent, dtype=np.int64)
    for start in range(0, extent, workers):                 # one pass of all workers per stride
        visits[start: start + workers] += 1
    return visits


@pytest.mark.parametrize("rows,vecs", [(1, 1), (3, 1000), (1024, 50176), (70000, 3), (2, 17_000_000)])
def test_row_gather_grid_visits_every_vector_of_every_row_once(rows, vecs):
    gx, gy = gather.gather_grid(rows, vecs)
    assert 1 <= gy <= gather.MAX_GRID_Y and 1 <= gx <= 2**31 - 1
    assert (_strided_visits(rows, gy) == 1).all()
    assert (_strided_visits(vecs, gx * gather.GATHER_THREADS) == 1).all()


@pytest.mark.parametrize("N,K,want", [(3136, 256, 8), (3140, 256, 4), (3136, 36, 4), (98, 256, 2)])
def test_gather_desc_alignment_from_shape(N, K, want):
    d = gather.gather_desc("fp16", N=N, K=K)
    assert d.family == "gather_b" and d.arch == "sm80" and d.alignment == want


# ------------------------------------------------------------------ launch arguments (fake arrays)
class _Fake:
    """Just what the argument builders read from a CuPy array: address, shape, dtype, device."""

    def __init__(self, ptr: int, shape: tuple[int, ...], dtype=np.float16):
        from types import SimpleNamespace

        self.data = SimpleNamespace(ptr=ptr)
        self.shape, self.size, self.dtype = shape, int(np.prod(shape)), np.dtype(dtype)
        self.device = SimpleNamespace(id=0)


def test_bcbp_gather_launch_arguments(W, monkeypatch):
    from types import SimpleNamespace

    monkeypatch.setattr(gather, "sm_count", lambda dev: 132)
    f = bcbp.Bcbp(_pruned(W, "bcbp", 0.7, tile_rows=16), "fp16", 24, arch="sm90")
    kernel = SimpleNamespace(desc=f.desc, name=f.desc.name)
    A, idx = _Fake(0x100000, (f.layout.batches, 16, f.K)), _Fake(0x200000, (f.index.size,), np.int32)
    gemm = gather.GatherGemm(kernel, f.gather_problem, A, idx, x_rows=L * C)
    X, Y = _Fake(0x300000, (L, C, 24)), _Fake(0x400000, (L, N_FILTERS, 24))
    a = gemm.arguments(X, Y)
    assert (a.M, a.N, a.K, a.L) == (16, 24, f.K, L * (N_FILTERS // 16))
    assert (a.A, a.B, a.D, a.gather_index) == (0x100000, 0x300000, 0x400000, 0x200000)
    assert (a.lda, a.ldb, a.ldd) == (f.K, 24, 24)
    assert (a.batch_stride_A, a.batch_stride_B, a.batch_stride_D) == (16 * f.K, 0, 16 * 24)
    assert a.index_stride == f.K and a.sm_count == 132 and (a.alpha, a.beta) == (1.0, 0.0)
    with pytest.raises(InputError, match="output has"):
        gemm.arguments(X, _Fake(0x400000, (L, N_FILTERS - 1, 24)))
    with pytest.raises(InputError, match="X has shape"):
        gemm.arguments(_Fake(0x300000, (L, C, 32)), Y)


def test_grouped_pointer_tables(W):
    P = _pruned(W, "wsp-r", 0.7, "unbalanced")
    lay = wsp_r.row_layout(P)
    rows = object.__new__(wsp_r.GroupedRows)         # the table arithmetic only, no device uploads
    rows.L, rows.K, rows.M, rows.N = L, C, lay.M, 40
    rows.offsets = lay.row_offsets()
    rows.weights = _Fake(0x10000, (int(lay.counts.sum()), C))
    X, Yc = _Fake(0x800000, (L, C, 40)), _Fake(0x900000, (L, lay.M, 40))
    pa, pb, pd = rows.pointer_tables(X, Yc)
    before = np.concatenate([[0], np.cumsum(P.kept_per_position)[:-1]])
    for i in range(L):
        assert int(pa[i]) == 0x10000 + int(before[i]) * C * 2          # W_i's first row in the packed block
        assert int(pb[i]) == 0x800000 + i * C * 40 * 2                 # X[i]
        assert int(pd[i]) == 0x900000 + i * lay.M * 40 * 2             # Yc[i]
