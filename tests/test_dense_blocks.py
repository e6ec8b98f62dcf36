"""Dense-block extraction (seed 004): blocks + CSR remainder reproduce the masked GEMM exactly; the block
part is a BCBP layout the gather family accepts; re-pruning drops only remainder weights, least
important first, within the energy budget."""

from __future__ import annotations

import numpy as np
import pytest

from cutlass_wsp.dense_blocks import DenseBlocks, extract_dense_blocks, reprune
from cutlass_wsp.errors import InputError
from cutlass_wsp.families.bcbp import tile_layout
from cutlass_wsp.pruning import prune
from cutlass_wsp.spatial_winograd import spatial_winograd_prune
from cutlass_wsp.weights import he_spatial_filters, he_winograd_weights

L, N, C, T = 16, 64, 40, 23


def _dyadic_problem(seed: int, density: float):
    """Weights and inputs that are small multiples of 2^-4 / integers: every sum of products is exact in
    float64, whatever order it is added in, so 'equal' means bit-equal."""
    rng = np.random.default_rng(seed)
    W = rng.integers(-64, 65, size=(L, N, C)).astype(np.float64) / 16
    X = rng.integers(-8, 9, size=(L, C, T)).astype(np.float64)
    # a mask with structure: some columns of some tiles fully kept, the rest random
    mask = rng.random((L, N, C)) < density
    mask[:, :32, :7] = True
    mask[3, 32:, 10:30] = True
    return W, X, mask


@pytest.mark.parametrize("min_density", [1.0, 0.75, 0.5, 0.1])
@pytest.mark.parametrize("tile_rows", [None, 16, 64])
def test_blocks_plus_remainder_reproduce_the_masked_gemm_exactly(min_density, tile_rows):
    W, X, mask = _dyadic_problem(1, 0.45)
    B = extract_dense_blocks(W, mask, tile_rows=tile_rows, min_density=min_density)
    Y = B.reference(X)
    assert np.array_equal(Y, np.matmul(np.where(mask, W, 0.0), X))
    assert np.array_equal(Y, B.dense_reference(X))
    # the parts partition the mask; blocks never cover what a full-density rule would not
    assert not (B.block_mask & B.remainder_mask).any()
    assert np.array_equal(B.block_mask | B.remainder_mask, mask)
    assert B.block_nnz + B.remainder_nnz == B.nnz == mask.sum()
    if min_density == 1.0:
        assert B.explicit_zeros == 0
    t = B.tile_rows
    kept = mask.reshape(L, N // t, t, C).sum(axis=2)
    assert np.array_equal(B.block_cols, kept >= np.ceil(min_density * t))
    assert B.k_per_tile.sum() == B.block_cols.sum()


def test_float_weights_agree_to_rounding():
    W = he_winograd_weights((N, C), p=4, seed=0)
    P = prune(W, "wwp", 0.6)
    X = np.random.default_rng(0).standard_normal((L, C, T))
    B = extract_dense_blocks(P.weights, P.mask, min_density=0.3)
    np.testing.assert_allclose(B.reference(X), P.dense_reference(X), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(B.reference(X, np.float32), P.dense_reference(X), rtol=1e-4, atol=1e-4)


def test_block_part_is_a_bcbp_layout_and_remainder_a_csr():
    W, X, mask = _dyadic_problem(2, 0.5)
    B = extract_dense_blocks(W, mask, min_density=0.5)
    blocks = B.block_pruned()
    lay = tile_layout(blocks)                                             # what the BCBP family checks
    k = int(B.k_per_tile.max())
    assert lay.k == k and lay.t == B.tile_rows and blocks.pattern == "bcbp"
    # every real block column is among the tile's columns; pads carry zero weights
    for i in range(L):
        for j in range(B.n_tiles):
            cols = set(blocks.tile_cols[i, j].tolist())
            real = set(np.flatnonzero(B.block_cols[i, j]).tolist())
            assert real <= cols and len(cols) == k
            pads = sorted(cols - real)
            if pads:
                seg = blocks.weights[i, j * B.tile_rows:(j + 1) * B.tile_rows][:, pads]
                assert (seg == 0).all()
    assert B.padded_fraction == pytest.approx(1 - B.block_cols.sum() / (L * B.n_tiles * k))
    rem = B.remainder_pruned()
    assert rem.pattern == "wwp" and rem.csr is not None
    indptr, _, data, _ = rem.block_diagonal_csr()
    assert indptr[-1] == len(data) == B.remainder_nnz


def test_no_blocks_leaves_everything_to_csr():
    W, X, _ = _dyadic_problem(3, 0.0)
    mask = np.zeros(W.shape, bool)
    mask[0, 0, 0] = True
    B = extract_dense_blocks(W, mask)
    assert B.block_pruned() is None and B.remainder_nnz == 1 and B.block_share == 0
    assert np.array_equal(B.reference(X), B.dense_reference(X))


@pytest.mark.parametrize("budget", [0.0, 0.005, 0.05, 1.0])
def test_reprune_drops_least_important_remainder_within_budget(budget):
    W, X, mask = _dyadic_problem(4, 0.55)
    B = extract_dense_blocks(W, mask, min_density=0.9)
    R = reprune(B, budget)
    dropped = B.mask & ~R.mask
    assert R.dropped == dropped.sum()
    assert not (dropped & B.block_mask).any()                             # blocks untouched
    assert np.array_equal(R.block_cols, B.block_cols)
    w2 = W ** 2
    assert w2[dropped].sum() / w2.sum() <= budget + 1e-12
    assert B.energy_retained - R.energy_retained <= budget + 1e-12
    if dropped.any() and R.remainder_mask.any():
        assert np.abs(W)[dropped].max() <= np.abs(W)[R.remainder_mask].min()
    if budget == 1.0:
        assert R.remainder_nnz == 0 and R.tiles_without_remainder == 1.0
    assert np.array_equal(R.reference(X), R.dense_reference(X))          # still exact


def test_reprune_by_given_importance():
    g = he_spatial_filters((N, C), seed=5)
    P = spatial_winograd_prune(g, 2, 0.63)
    B = extract_dense_blocks(P.weights, P.mask, min_density=0.5)
    imp = P.importance_scores()
    R = reprune(B, 0.02, importance=imp)
    dropped = B.mask & ~R.mask
    assert dropped.any()
    assert imp[dropped].max() <= imp[R.remainder_mask].min()
    assert B.energy_retained - R.energy_retained <= 0.02 + 1e-12
    assert R.tiles_without_remainder >= B.tiles_without_remainder


def test_bad_inputs():
    W, _, mask = _dyadic_problem(5, 0.5)
    with pytest.raises(InputError, match="divide"):
        extract_dense_blocks(W, mask, tile_rows=7)
    with pytest.raises(InputError, match="min_density"):
        extract_dense_blocks(W, mask, min_density=0)
    with pytest.raises(InputError, match="mask"):
        extract_dense_blocks(W, mask[:, :, :-1])
    with pytest.raises(InputError, match="mask"):
        extract_dense_blocks(W, mask.astype(int))
    B = extract_dense_blocks(W, mask)
    with pytest.raises(InputError, match="max_energy_loss"):
        reprune(B, 1.5)
    with pytest.raises(InputError, match="importance"):
        reprune(B, 0.1, importance=np.ones(3))
    with pytest.raises(InputError, match="DenseBlocks"):
        reprune(mask, 0.1)
    assert isinstance(B, DenseBlocks)
