"""Spatial-Winograd pruning (seed 003): the exact spatial -> Winograd transfer, the structured spatial step,
the importance-weighted Winograd step, and the Pruned-compatible result."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest

from cutlass_wsp.errors import InputError
from cutlass_wsp.gpu.baselines import block_diagonal_csr as baseline_block_diagonal
from cutlass_wsp.pruning import Pruned, kept_count
from cutlass_wsp.spatial_winograd import (PATTERN, SpatialWinogradPruned, prune_spatial, prune_winograd,
                                          spatial_from_winograd, spatial_winograd_prune, support, tap_groups,
                                          transfer)
from cutlass_wsp.weights import he_spatial_filters, he_winograd_weights
from cutlass_wsp.winograd import filter_transform, matrices
from cutlass_wsp.winograd_importance import importance_factors, relative_output_error

ALL_TAP_MASKS = np.array(list(itertools.product([False, True], repeat=9)), dtype=bool).reshape(512, 3, 3)


def _exact_transform(g_int: np.ndarray, m: int) -> np.ndarray:
    """U = G g Gᵀ in Fractions for integer filters g[k, 3, 3] -> object [k, p, p]."""
    G = matrices(m)[1]
    return np.array([G.dot(np.vectorize(Fraction, otypes=[object])(gk)).dot(G.T) for gk in g_int], dtype=object)


def test_support_of_f23_by_hand():
    s = support(2)
    assert s[0, 0].sum() == 1 and s[0, 0, 0, 0]                  # corner of U: tap g[0,0] only
    assert (s[0, 1] == np.array([[1, 1, 1], [0, 0, 0], [0, 0, 0]], bool)).all()  # border: g's row 0
    assert s[1, 1].all() and s[2, 2].all()                       # inner: all 9 taps
    assert s[3, 3].sum() == 1 and s[3, 3, 2, 2]


@pytest.mark.parametrize("m", [2, 4, 6])
def test_transfer_gives_exactly_the_winograd_zeros_it_claims(m):
    # every one of the 512 spatial zero patterns, with generic integer taps (powers of 10^6: no
    # cancellation is possible), transformed in exact rationals
    taps = np.array([10 ** (6 * k) for k in range(9)], dtype=object).reshape(3, 3)
    g = np.where(ALL_TAP_MASKS, taps, 0)
    U = _exact_transform(g, m)                                            # [512, p, p]
    may = transfer(ALL_TAP_MASKS[None], m)                                # [p², 1, 512]
    p = m + 2
    claimed_zero = ~may[:, 0, :].T.reshape(512, p, p)
    assert ((U == 0) == claimed_zero).all()
    # the float transform gives exact 0.0 there too, for float64 and float32 filters
    gf = np.where(ALL_TAP_MASKS, np.random.default_rng(m).standard_normal((512, 3, 3)), 0.0)[None]
    for dt in (np.float64, np.float32):
        Uf = filter_transform(gf.astype(dt), m)
        assert (Uf[~may] == 0).all() and (Uf[may] != 0).all()


def test_tap_groups():
    for m in (2, 4, 6):
        groups = tap_groups(m).reshape(-1, 9)
        assert sorted(groups.sum(1).tolist()) == [1, 1, 1, 1, 3, 3, 3, 3, 9]
        # each group is the support of some Winograd position
        sup = {tuple(r) for r in support(m).reshape(-1, 9)}
        assert all(tuple(r) in sup for r in groups)
    assert tap_groups(4, "kernel").shape == (1, 3, 3) and tap_groups(4, "kernel").all()
    with pytest.raises(InputError, match="structure"):
        tap_groups(4, "rows")


@pytest.mark.parametrize("structure", ["support", "kernel"])
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.63, 0.9])
def test_prune_spatial_meets_the_ratio_with_whole_groups(structure, ratio):
    m = 4
    g = he_spatial_filters((24, 20), seed=7)
    keep = prune_spatial(g, m, ratio, structure=structure)
    n_taps = g.size
    target = n_taps - kept_count(ratio, n_taps)
    pruned = int((~keep).sum())
    assert target <= pruned <= target + 9                                 # one group past the target at most
    groups = tap_groups(m, structure).reshape(-1, 9)
    flat = (~keep).reshape(-1, 9)
    scores = np.sqrt((g.reshape(-1, 9) ** 2) @ groups.T)                   # [kernels, groups]
    inside = (flat[:, None, :] >= groups[None]).all(axis=2)                # group fully pruned
    # the pruned taps of every kernel are exactly the union of its pruned groups...
    union = (inside.astype(int) @ groups.astype(int)) > 0
    assert (union == flat).all()
    # ...and one threshold separates pruned groups from kept ones
    if inside.any() and (~inside).any():
        assert scores[inside].max() <= scores[~inside].min()


def test_prune_spatial_kernel_structure_prunes_the_weakest_kernels():
    g = he_spatial_filters((16, 16), seed=1)
    keep = prune_spatial(g, 2, 0.5, structure="kernel")
    whole = keep.reshape(256, 9)
    assert (whole.all(1) | ~whole.any(1)).all()
    norms = np.sqrt((g.reshape(256, 9) ** 2).sum(1))
    assert norms[~whole.any(1)].max() <= norms[whole.all(1)].min()
    # kernel-level pruning transfers one to one
    assert transfer(keep, 2).mean() == keep.mean()


def test_prune_winograd_keeps_the_largest_importance():
    m = 2
    U = he_winograd_weights((12, 10), p=4, seed=2).astype(np.float64)
    allowed = np.random.default_rng(0).random(U.shape) < 0.8
    keep = prune_winograd(U, m, 0.6, structural=allowed)
    assert keep.sum() == kept_count(0.6, U.size) and not (keep & ~allowed).any()
    score = np.abs(U) * importance_factors(m).reshape(16, 1, 1)
    assert score[keep].min() >= score[allowed & ~keep].max()
    uniform = prune_winograd(U, m, 0.6, structural=allowed, importance="uniform")
    assert np.abs(U)[uniform].min() >= np.abs(U)[allowed & ~uniform].max()
    # fewer allowed entries than the ratio keeps: all allowed are kept
    few = np.zeros(U.shape, bool)
    few[0, 0, :3] = True
    assert (prune_winograd(U, m, 0.1, structural=few) == few).all()
    custom = prune_winograd(U, m, 0.5, importance=np.arange(16.0).reshape(4, 4))
    assert custom.sum() == kept_count(0.5, U.size)


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("ratio", [0.5, 0.63, 0.74])
def test_spatial_winograd_prune(m, ratio):
    g = he_spatial_filters((32, 16), seed=3)
    P = spatial_winograd_prune(g, m, ratio)
    assert isinstance(P, Pruned) and isinstance(P, SpatialWinogradPruned)
    assert P.pattern == PATTERN and P.unit == "weight" and P.m == m
    L = (m + 2) ** 2
    assert P.mask.shape == P.weights.shape == (L, 32, 16)
    assert P.mask.sum() == kept_count(ratio, P.mask.size)                 # Winograd sparsity hits the target
    assert abs(P.spatial_sparsity - ratio) < 9 / g.size + 1e-12
    assert 0 < P.structural_sparsity <= P.achieved_ratio
    assert not (P.mask & ~P.structural).any()                            # structural zeros stay zero
    assert (P.weights[~P.structural] == 0).all()
    np.testing.assert_array_equal(P.weights, filter_transform(np.where(P.spatial_mask, g, 0.0), m).astype(np.float32))
    # CSR form like WWP: the reference from CSR equals the masked product, the block-diagonal CSR builds
    X = np.random.default_rng(1).standard_normal((L, 16, 9))
    np.testing.assert_allclose(P.reference(X), P.dense_reference(X), rtol=1e-12, atol=1e-12)
    indptr, indices, data, shape = P.block_diagonal_csr()
    assert shape == (L * 32, L * 16) and indptr[-1] == P.mask.sum() == len(data)
    assert P.kept_per_position.sum() == P.mask.sum()
    # ... and the cuSPARSE baseline's host side takes the per-position CSR as it is
    bd_ptr, bd_idx, bd_val = baseline_block_diagonal(P.csr, 16)
    dense = np.zeros((L * 32, L * 16))
    dense[np.repeat(np.arange(L * 32), np.diff(bd_ptr)), bd_idx] = bd_val
    blocks = np.zeros((L * 32, L * 16))
    for i in range(L):
        blocks[i * 32:(i + 1) * 32, i * 16:(i + 1) * 16] = P.dense_weights()[i]
    np.testing.assert_array_equal(dense, blocks)
    # proxies: the output error counts both steps; energy_retained is step 2's
    assert 0 < P.energy_retained <= 1 and 0 < P.spatial_energy_retained < 1
    np.testing.assert_allclose(P.output_error, relative_output_error(P.original_weights, P.dense_weights(), m))
    assert P.importance_scores().shape == P.mask.shape


def test_spatial_ratio_zero_is_winograd_pruning_and_kernel_structure_transfers_fully():
    g = he_spatial_filters((16, 16), seed=4)
    P = spatial_winograd_prune(g, 2, 0.6, spatial_ratio=0.0)
    assert P.spatial_sparsity == 0 and P.structural_sparsity == 0
    np.testing.assert_array_equal(P.mask, prune_winograd(filter_transform(g, 2), 2, 0.6))
    K = spatial_winograd_prune(g, 2, 0.6, structure="kernel")
    assert K.structural_sparsity == K.achieved_ratio                      # step 2 had nothing to do
    assert K.output_error == pytest.approx(np.sqrt(1 - K.spatial_energy_retained), rel=1e-6)


def test_spatial_from_winograd_round_trip():
    for p in (4, 6, 8):
        g = he_spatial_filters((8, 6), seed=p)
        W = he_winograd_weights((8, 6), p=p, seed=p)                      # float32 transform of the same g
        np.testing.assert_allclose(spatial_from_winograd(W, p - 2), g, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="not the transform"):
        spatial_from_winograd(np.random.default_rng(0).standard_normal((16, 4, 4)), 2)


def test_he_spatial_filters_are_what_he_winograd_weights_transforms():
    g = he_spatial_filters((10, 7), seed=11)
    np.testing.assert_array_equal(filter_transform(g, 4).astype(np.float32), he_winograd_weights((10, 7), p=6, seed=11))


def test_bad_inputs_are_one_line_input_errors():
    g = he_spatial_filters((4, 4))
    for bad in (dict(ratio=1.0), dict(ratio="x"), dict(ratio=0.5, spatial_ratio=-0.1),
                dict(ratio=0.5, structure="rows"), dict(ratio=0.5, importance="magic"),
                dict(ratio=0.5, importance=np.ones((3, 3)))):
        with pytest.raises(InputError):
            spatial_winograd_prune(g, 2, **bad)
    with pytest.raises(InputError, match="shape"):
        spatial_winograd_prune(np.ones((4, 4, 5, 5)), 2, 0.5)
    with pytest.raises(InputError, match="NaN"):
        spatial_winograd_prune(np.full((2, 2, 3, 3), np.nan), 2, 0.5)
    with pytest.raises(InputError, match="tile size"):
        spatial_winograd_prune(g, 3, 0.5)
    with pytest.raises(InputError):
        transfer(np.ones((2, 2, 3, 3)), 2)                                 # not boolean
    with pytest.raises(InputError):
        prune_winograd(np.ones((16, 2, 2)), 2, 0.5, structural=np.ones((16, 2, 3), bool))
    with pytest.raises(InputError) as info:
        spatial_winograd_prune(g, 2, 2.0)
    assert "\n" not in str(info.value) and info.value.fix
