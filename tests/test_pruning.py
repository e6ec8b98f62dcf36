"""Pruning patterns: masks, kept counts, criteria, compact forms and their references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cutlass_wsp.errors import InputError, Unsupported
from cutlass_wsp.pruning import (BALANCES, PATTERN_BALANCES, PATTERNS, default_tile_rows, kept_count, prune,
                                 spread_ratios)
from cutlass_wsp.weights import he_winograd_weights

N, C, T = 64, 48, 37


@pytest.fixture(scope="module")
def W():
    return he_winograd_weights((N, C), p=4, seed=1)


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(2).standard_normal((16, C, T))


COMBOS = [(pat, bal) for pat in PATTERNS for bal in PATTERN_BALANCES[pat]]


def _prune(W, pattern, balance, ratio=0.7, **kw):
    if pattern == "dense":
        ratio = 0.0
    if balance == "spread":
        kw.setdefault("spread", 0.2)
    return prune(W, pattern, ratio, balance=balance, **kw)


def _units_mask(P):
    """kept-unit mask [L, units] recomputed from the element mask, per pattern."""
    m = P.mask
    if P.pattern in ("fp", "wsp-r", "wsp-rb"):
        return m.any(axis=2)
    if P.pattern == "wsp-c":
        return m.any(axis=1)
    if P.pattern == "wsp-cb":
        L, _, c = m.shape
        return m.any(axis=1).reshape(L, c // 16, 16).any(axis=2)
    if P.pattern == "bcbp":
        L, n, c = m.shape
        return m.reshape(L, n // P.tile_rows, P.tile_rows, c).any(axis=2).reshape(L, -1)
    return m.reshape(m.shape[0], -1)


# ---------------------------------------------------------------------------------------------
# Compact form == masked dense, for every pattern × balance
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pattern,balance", COMBOS)
@pytest.mark.parametrize("criterion", ["l2", "random"])
def test_reference_from_compact_equals_masked_dense(W, X, pattern, balance, criterion):
    P = _prune(W, pattern, balance, criterion=criterion, seed=3)
    masked = np.matmul((W * P.mask).astype(np.float64), X)
    np.testing.assert_allclose(P.reference(X), masked, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(P.reference(X, np.float32), masked, rtol=1e-4, atol=1e-4)
    assert P.reference(X, np.float32).dtype == np.float32
    np.testing.assert_array_equal(P.dense_weights(), np.where(P.mask, W, 0))
    if pattern != "dense":
        # rows of pruned filters are exactly zero (not just small) in the reference output
        assert (P.reference(X)[~P.mask.any(axis=2)] == 0).all()


@pytest.mark.parametrize("pattern,balance", COMBOS)
def test_mask_units_are_whole_and_counts_match(W, pattern, balance):
    P = _prune(W, pattern, balance)
    um = _units_mask(P)
    # the element mask is the union of whole units: expanding the unit mask gives it back
    L, n, c = P.mask.shape
    if pattern in ("fp", "wsp-r", "wsp-rb"):
        expanded = np.repeat(um[:, :, None], c, axis=2)
    elif pattern == "wsp-c":
        expanded = np.repeat(um[:, None, :], n, axis=1)
    elif pattern == "wsp-cb":
        expanded = np.repeat(np.repeat(um, 16, axis=1)[:, None, :], n, axis=1)
    elif pattern == "bcbp":
        t = P.tile_rows
        expanded = np.repeat(um.reshape(L, n // t, 1, c), t, axis=2).reshape(L, n, c)
    else:
        expanded = um.reshape(L, n, c)
    np.testing.assert_array_equal(expanded, P.mask)
    assert um.sum(axis=1).tolist() == P.kept_per_position.tolist()
    assert P.mask.sum() == sum(len(w.ravel()) for w in P.compact_weights)
    assert P.units_per_position == um.shape[1]


@pytest.mark.parametrize("pattern,balance", [c for c in COMBOS if c[0] != "dense"])
@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.7, 0.93])
def test_achieved_ratio_within_one_unit(W, pattern, balance, ratio):
    if pattern == "wsp-cb" and kept_count(ratio, C // 16) < 1:     # 3 blocks of 16 channels: 0.93 leaves none
        with pytest.raises(InputError, match="leaves no 16-channel block of 3"):
            _prune(W, pattern, balance, ratio=ratio)
        return
    P = _prune(W, pattern, balance, ratio=ratio)
    u, L = P.units_per_position, P.L
    if pattern == "bcbp":   # the count rule applies per row tile: c column segments each
        per_tile = _units_mask(P).reshape(L, -1, P.c).sum(axis=2)
        assert np.all(np.abs(per_tile - (1 - ratio) * P.c) <= 0.5 + 1e-9)
        assert abs(P.achieved_ratio - ratio) <= 1 / P.c
        return
    if pattern == "wsp-rb":  # the count rule applies per (position, filter block)
        per_block = _units_mask(P).reshape(L, -1, P.block).sum(axis=2)
        assert np.all(np.abs(per_block - (1 - ratio) * P.block) <= 0.5 + 1e-9)
        assert abs(P.achieved_ratio - ratio) <= 1 / P.block
        return
    kept_total = P.kept_per_position.sum()
    if balance == "unbalanced":
        assert abs(kept_total - (1 - ratio) * L * u) <= 1    # one global count
    else:
        assert np.all(np.abs(P.kept_per_position.mean() - (1 - ratio) * u) <= 1)
    if balance == "balanced":
        assert np.all(np.abs(P.kept_per_position - (1 - ratio) * u) <= 0.5 + 1e-9)
    assert abs(P.achieved_ratio - ratio) <= 1 / u + 1e-12
    assert P.achieved_ratio == pytest.approx(1 - P.mask.sum() / P.mask.size)


def test_kept_count_rounds_half_up():
    assert kept_count(0.3, 5) == 4          # 3.5 (3.4999999999999996 in floats) rounds up
    assert kept_count(0.7, 64) == 19        # 19.2
    assert kept_count(0.0, 7) == 7
    assert kept_count(0.95, 8) == 0         # 0.4: nothing left -> prune() refuses


# ---------------------------------------------------------------------------------------------
# Balance
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pattern", ["fp", "wsp-r", "wsp-c", "wwp", "bcbp"])
def test_balanced_equal_counts_per_position(W, pattern):
    P = prune(W, pattern, 0.6)
    nnz = P.nnz_per_position
    assert (nnz == nnz[0]).all() and P.is_balanced
    assert P.stacked_weights().shape[0] == 16


@pytest.mark.parametrize("pattern", ["wsp-r", "wsp-c", "wwp"])
@pytest.mark.parametrize("p", [4, 6])
def test_unbalanced_he_weights_prune_positions_unevenly(pattern, p):
    W = he_winograd_weights((N, C), p=p, seed=5)
    P = prune(W, pattern, 0.7, balance="unbalanced")
    assert len(set(P.kept_per_position.tolist())) > 1
    assert not P.is_balanced
    assert P.kept_per_position.min() >= 1
    with pytest.raises(Unsupported, match="kept counts differ"):
        P.stacked_weights()


def test_unbalanced_is_one_global_threshold(W):
    P = prune(W, "wsp-r", 0.7, balance="unbalanced")
    norms = np.linalg.norm(W.astype(np.float64), axis=2)
    keep = P.mask.any(axis=2)
    best = np.zeros_like(keep)
    best[np.arange(16), norms.argmax(axis=1)] = True
    # one threshold over all p² matrices, apart from each W_i's best row, which is always kept
    assert norms[keep & ~best].min() >= norms[~keep].max()
    assert keep[best].all()
    # He weights: inner positions are ~3/4 the corners' size, so at 70% some W_i fall entirely under
    # the threshold and keep only their reserved best row
    weak = keep.sum(axis=1) == 1
    assert (norms[weak].max(axis=1) < norms[~keep].max()).any()
    assert keep.sum() == kept_count(0.7, 16 * N)


def test_spread_counts(W):
    for s in (0.0, 0.1, 0.3):
        P = prune(W, "wsp-r", 0.5, balance="spread", spread=s, seed=7)
        ratios = P.ratio_per_position
        assert P.kept_per_position.sum() == 16 * kept_count(0.5, N)   # mean kept at r
        assert P.kept_per_position.min() >= 1 and P.kept_per_position.max() <= N
        assert ratios.max() - ratios.min() <= 2 * s + 2 / N
        if s == 0.0:
            assert P.is_balanced
        else:
            assert ratios.max() - ratios.min() >= 2 * s - 2 / N   # evenly spaced over [r - s, r + s]
    a = prune(W, "wsp-c", 0.5, balance="spread", spread=0.2, seed=1).kept_per_position
    b = prune(W, "wsp-c", 0.5, balance="spread", spread=0.2, seed=2).kept_per_position
    assert sorted(a.tolist()) == sorted(b.tolist()) and a.tolist() != b.tolist()  # seed moves positions


def test_spread_ratios_clipped_mean_kept():
    rng = np.random.default_rng(0)
    r = spread_ratios(0.9, 0.3, 16, 10, rng)           # r + s would exceed 1 - 1/units
    assert r.max() <= 0.9 + 1e-12 and r.min() >= 0
    assert r.mean() == pytest.approx(0.9, abs=1e-9)
    r2 = spread_ratios(0.2, 0.3, 16, 64, np.random.default_rng(0))  # r - s < 0 is clipped
    assert r2.min() >= 0 and r2.mean() == pytest.approx(0.2, abs=1e-9)


# ---------------------------------------------------------------------------------------------
# Criterion
# ---------------------------------------------------------------------------------------------

def _small_with_planted(shape, planted, seed=0):
    W = np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 0.01
    for idx in planted:
        W[idx] = 10.0
    return W


def test_l2_keeps_planted_rows_wsp_r():
    big = {0: [3, 17, 40], 5: [0, 63], 15: [62]}
    W = _small_with_planted((16, N, C), [(i, r) for i, rows in big.items() for r in rows])
    P = prune(W, "wsp-r", 0.9)                          # keeps 6 of 64 rows per W_i
    for i, rows in big.items():
        assert set(rows) <= set(P.rows[i].tolist())
    # and it keeps the largest-norm rows: every kept row outweighs every pruned row
    norms = np.linalg.norm(W.astype(np.float64), axis=2)
    for i in range(16):
        kept = P.mask[i].any(axis=1)
        assert norms[i, kept].min() >= norms[i, ~kept].max()


def test_l2_keeps_planted_columns_wsp_c():
    W = _small_with_planted((16, N, C), [(2, slice(None), 7), (2, slice(None), 30), (9, slice(None), 1)])
    P = prune(W, "wsp-c", 0.9)
    assert {7, 30} <= set(P.cols[2].tolist()) and 1 in P.cols[9]


def test_l2_keeps_planted_filters_fp_same_rows_everywhere():
    W = _small_with_planted((16, N, C), [(slice(None), 11), (slice(None), 50)])
    P = prune(W, "fp", 0.9)
    for rows in P.rows:
        assert rows.tolist() == P.rows[0].tolist()
    assert {11, 50} <= set(P.rows[0].tolist())
    assert (P.mask == P.mask[0]).all()                  # identical mask in every position


def test_l2_keeps_planted_weights_wwp_and_segments_bcbp():
    W = _small_with_planted((16, N, C), [(4, 5, 6), (4, 60, 47)])
    P = prune(W, "wwp", 0.99)
    assert P.mask[4, 5, 6] and P.mask[4, 60, 47]
    W2 = _small_with_planted((16, N, C), [(3, slice(32, 64), 20)])   # one full segment of tile 1
    B = prune(W2, "bcbp", 0.9, tile_rows=32)
    assert 20 in B.tile_cols[3, 1]
    assert B.mask[3, 32:, 20].all()


def test_random_criterion_is_seeded(W):
    a = prune(W, "wsp-r", 0.5, criterion="random", seed=4)
    b = prune(W, "wsp-r", 0.5, criterion="random", seed=4)
    c = prune(W, "wsp-r", 0.5, criterion="random", seed=5)
    l2 = prune(W, "wsp-r", 0.5)
    assert (a.mask == b.mask).all() and not (a.mask == c.mask).all() and not (a.mask == l2.mask).all()
    assert a.is_balanced


# ---------------------------------------------------------------------------------------------
# Compact forms
# ---------------------------------------------------------------------------------------------

def test_wsp_r_and_c_compact_forms(W):
    R = prune(W, "wsp-r", 0.5)
    for i in range(16):
        assert R.rows[i].dtype == np.int32 and (np.diff(R.rows[i]) > 0).all()
        np.testing.assert_array_equal(R.compact_weights[i], W[i, R.rows[i]])
    assert R.stacked_indices().shape == (16, kept_count(0.5, N))
    Cc = prune(W, "wsp-c", 0.5, balance="unbalanced")
    for i in range(16):
        np.testing.assert_array_equal(Cc.compact_weights[i], W[i][:, Cc.cols[i]])
        assert Cc.compact_weights[i].flags.c_contiguous
    with pytest.raises(Unsupported):
        Cc.stacked_indices()


def test_csr_round_trip(W, X):
    P = prune(W, "wwp", 0.8, balance="unbalanced")
    rebuilt = np.zeros_like(W)
    for i, (indptr, indices, data) in enumerate(P.csr):
        assert indptr.dtype == indices.dtype == np.int32
        assert indptr[0] == 0 and indptr[-1] == len(indices) == len(data) == P.kept_per_position[i]
        for row in range(N):
            cols = indices[indptr[row]:indptr[row + 1]]
            assert (np.diff(cols) > 0).all()
            rebuilt[i, row, cols] = data[indptr[row]:indptr[row + 1]]
    np.testing.assert_array_equal(rebuilt, P.dense_weights())
    indptr, indices, data, shape = P.block_diagonal_csr()
    assert shape == (16 * N, 16 * C) and indptr[-1] == P.mask.sum()
    big = np.zeros(shape)
    rows = np.repeat(np.arange(shape[0]), np.diff(indptr))
    big[rows, indices] = data
    Y = (big @ X.reshape(16 * C, T)).reshape(16, N, T)
    np.testing.assert_allclose(Y, P.reference(X), rtol=1e-12, atol=1e-12)


def test_bcbp_tiles(W):
    P = prune(W, "bcbp", 0.7, tile_rows=16)
    k = kept_count(0.7, C)
    assert P.tile_cols.shape == (16, N // 16, k) and P.tile_rows == 16
    tile_counts = P.mask.reshape(16, N // 16, 16, C).any(axis=2).sum(axis=2)
    assert (tile_counts == k).all()                     # the same kept count in every tile
    assert (P.mask.reshape(16, N // 16, 16, C).all(axis=2) == P.mask.reshape(16, N // 16, 16, C).any(axis=2)).all()
    # tiles pick different columns (that is the point of BCBP over WSP-C)
    assert any(set(P.tile_cols[0, 0].tolist()) != set(P.tile_cols[0, j].tolist()) for j in range(1, N // 16))
    assert P.compact_weights[0].shape == (N // 16, 16, k)


def test_bcbp_default_tile_rows():
    assert default_tile_rows(64) == 32 and default_tile_rows(48) == 16
    assert default_tile_rows(3) == 3 and default_tile_rows(100) == 4
    W = he_winograd_weights((48, 8), p=4)
    assert prune(W, "bcbp", 0.5).tile_rows == 16


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, float("nan"), "abc", None])
def test_bad_ratio(W, ratio):
    with pytest.raises(InputError, match=r"\[0, 1\)"):
        prune(W, "wsp-r", ratio)


@pytest.mark.parametrize("shape", [(16, 8), (9, 4, 4), (16, 0, 4), (2, 16, 4, 4)])
def test_bad_weight_shape(shape):
    with pytest.raises(InputError, match="L = p² = 16, 36 or 64"):
        prune(np.ones(shape), "wsp-r", 0.5)


def test_unknown_names_list_accepted(W):
    with pytest.raises(InputError) as e:
        prune(W, "wsp-x", 0.5)
    assert all(p in str(e.value) for p in PATTERNS)
    with pytest.raises(InputError) as e:
        prune(W, "wsp-r", 0.5, balance="even")
    assert all(b in str(e.value) for b in BALANCES)
    with pytest.raises(InputError, match="l2, random"):
        prune(W, "wsp-r", 0.5, criterion="l1")


@pytest.mark.parametrize("kwargs,expect", [
    (dict(pattern="fp", ratio=0.5, balance="unbalanced"), "fp cannot be unbalanced"),
    (dict(pattern="bcbp", ratio=0.5, balance="spread", spread=0.1), "bcbp cannot be spread"),
    (dict(pattern="dense", ratio=0.5), "dense keeps every weight"),
    (dict(pattern="wsp-r", ratio=0.5, tile_rows=8), "tile_rows applies to bcbp only"),
    (dict(pattern="bcbp", ratio=0.5, tile_rows=24), "does not divide n=64"),
    (dict(pattern="wsp-r", ratio=0.5, spread=0.1), "use balance='spread'"),
    (dict(pattern="wsp-r", ratio=0.5, balance="spread", spread=-1), "spread -1"),
    (dict(pattern="wsp-r", ratio=0.995), "leaves no row of 64"),
    (dict(pattern="wsp-c", ratio=0.995, balance="unbalanced"), "leaves no column"),
])
def test_bad_combinations(W, kwargs, expect):
    kw = dict(kwargs)
    with pytest.raises(InputError, match=expect):
        prune(W, kw.pop("pattern"), kw.pop("ratio"), **kw)


def test_nan_weights_and_bad_reference_input(W):
    bad = W.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        prune(bad, "wsp-r", 0.5)
    P = prune(W, "wsp-r", 0.5)
    with pytest.raises(InputError, match=r"X\[L=16, c=48, T\]"):
        P.reference(np.ones((16, C + 1, 4)))
    with pytest.raises(InputError, match="float64 or numpy.float32"):
        P.reference(np.ones((16, C, 4)), np.float16)
    with pytest.raises(Unsupported, match="no CSR form"):
        P.block_diagonal_csr()


def test_p6_and_p8_weights(X):
    for p in (6, 8):
        W = he_winograd_weights((N, C), p=p)
        Xp = np.random.default_rng(0).standard_normal((p * p, C, 5))
        P = prune(W, "wsp-c", 0.6, balance="unbalanced")
        assert P.p == p and P.L == p * p
        np.testing.assert_allclose(P.reference(Xp), P.dense_reference(Xp), rtol=1e-12, atol=1e-12)
        assert math.isclose(P.achieved_ratio, 0.6, abs_tol=1 / C)


@pytest.mark.parametrize("ratio,block", [(0.75, 16), (0.5, 32), (0.7, 20)])
def test_wsp_rb_keeps_the_same_count_in_every_position_and_filter_block(W, ratio, block):
    """The fused kernel's balanced unit: every (position, block of `block` filters) keeps
    kept_count(ratio, block) rows, the strongest ones (group LASSO) of that block."""
    from cutlass_wsp.pruning import kept_count, prune

    P = prune(W, "wsp-rb", ratio, block=block)
    L, n, _ = W.shape
    keep = P.mask.any(axis=2)
    k = kept_count(ratio, block)
    norms = np.sqrt((W.astype(np.float64) ** 2).sum(axis=2))
    for b0 in range(0, n, block):
        part = keep[:, b0:b0 + block]
        assert (part.sum(axis=1) == min(k, part.shape[1])).all()
        # no kept row is weaker than a pruned row of the same (position, block)
        kept_min = np.where(part, norms[:, b0:b0 + block], np.inf).min(axis=1)
        pruned_max = np.where(~part, norms[:, b0:b0 + block], -np.inf).max(axis=1)
        assert (kept_min >= pruned_max).all()
    assert 0 < P.energy_retained < 1
    with pytest.raises(InputError):
        prune(W, "wsp-r", ratio, block=block)


@pytest.mark.parametrize("ratio", [0.5, 0.7, 0.75, 0.9])
def test_wsp_cb_keeps_whole_16_channel_blocks_the_same_count_in_every_position(ratio):
    """The fused kernel's chunk as the unit: every position keeps kept_count(ratio, c / 16) whole blocks of 16 input
    channels (all n rows of them), the strongest ones (group LASSO); the compact form is WSP-C's."""
    W = he_winograd_weights((N, 128), p=4, seed=6)                   # 8 blocks of 16 channels
    P = prune(W, "wsp-cb", ratio)
    L, n, c = W.shape
    k = kept_count(ratio, c // 16)
    blocks = P.mask.reshape(L, n, c // 16, 16)
    assert (blocks.all(axis=(1, 3)) == blocks.any(axis=(1, 3))).all()   # whole blocks, every row
    keep = blocks.any(axis=(1, 3))                                   # [L, blocks]
    assert (keep.sum(axis=1) == k).all() and P.is_balanced and P.kept_per_position.tolist() == [k] * L
    assert P.units_per_position == c // 16 and P.unit == "column block"
    assert P.achieved_ratio == pytest.approx(1 - k / (c // 16))
    norms = np.sqrt((W.astype(np.float64).reshape(L, n, c // 16, 16) ** 2).sum(axis=(1, 3)))
    kept_min = np.where(keep, norms, np.inf).min(axis=1)
    pruned_max = np.where(~keep, norms, -np.inf).max(axis=1)
    assert (kept_min >= pruned_max).all()
    for i in range(L):
        assert P.cols[i].tolist() == [b * 16 + j for b in np.flatnonzero(keep[i]) for j in range(16)]
        np.testing.assert_array_equal(P.compact_weights[i], W[i][:, P.cols[i]])
    assert P.stacked_indices().shape == (L, 16 * k)
    assert 0 < P.energy_retained < 1


def test_wsp_cb_keeps_a_planted_block_and_refuses_what_it_cannot_prune():
    W = _small_with_planted((16, N, 64), [(5, slice(None), 37)])     # channel 37: block 2 of position 5
    P = prune(W, "wsp-cb", 0.75)                                     # 1 of 4 blocks per position
    assert P.cols[5].tolist() == list(range(32, 48))
    with pytest.raises(InputError, match="c=40 is not a multiple of 16"):
        prune(he_winograd_weights((N, 40), p=4), "wsp-cb", 0.5)
    with pytest.raises(InputError, match="leaves no 16-channel block of 4"):
        prune(W, "wsp-cb", 0.9)
    with pytest.raises(InputError, match="wsp-cb cannot be unbalanced"):
        prune(W, "wsp-cb", 0.5, balance="unbalanced")
    with pytest.raises(InputError, match="block applies to wsp-rb only"):
        prune(W, "wsp-cb", 0.5, block=32)


def test_wsp_rb_default_block_is_the_fused_kernels_widest_block_that_fits_32_rows():
    """The default block follows the fused kernel's filter blocks (families/fused.py, wide filter blocks): the widest
    of WSP_RB_BLOCKS whose kept count fits 32 rows, no wider than the layer; an explicit block wins."""
    from cutlass_wsp.pruning import WSP_RB_BLOCKS, wsp_rb_block

    W = he_winograd_weights((512, 16), p=4, seed=2)
    assert [prune(W, "wsp-rb", r).block for r in (0.5, 0.7, 0.9)] == [64, 96, 320]
    assert prune(W, "wsp-rb", 0.7, block=32).block == 32
    small = he_winograd_weights((48, 16), p=4, seed=2)
    assert prune(small, "wsp-rb", 0.9).block == 48                      # the menu's 64, capped by the layer
    assert wsp_rb_block(0.2, 512) == 32                                   # 64 would keep 51 rows
    for r in (0.5, 0.6, 0.7, 0.8, 0.9):
        b = wsp_rb_block(r, 1024)
        assert b in WSP_RB_BLOCKS and kept_count(r, b) <= 32
        assert b == WSP_RB_BLOCKS[-1] or kept_count(r, WSP_RB_BLOCKS[WSP_RB_BLOCKS.index(b) + 1]) > 32
    with pytest.raises(InputError, match="output channels"):
        wsp_rb_block(0.5, 0)
