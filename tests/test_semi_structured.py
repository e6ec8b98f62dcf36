"""2:4 along c in every W_i: the mask, the compressed values and packed 2-bit metadata, and the GEMM
batch rebuilt from the compressed form."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cutlass_wsp.errors import InputError
from cutlass_wsp.pruning import Pruned
from cutlass_wsp.semi_structured import (PATTERN, SemiStructured, check_2to4, compress, decompress, mask_2to4,
                                         pack_metadata, prune_2to4, unpack_metadata)
from cutlass_wsp.weights import he_winograd_weights


def test_mask_keeps_the_two_largest_of_every_four():
    W = he_winograd_weights((24, 32), p=4, seed=0)
    mask = mask_2to4(W)
    groups = np.abs(W).reshape(16, 24, 8, 4)
    kept = mask.reshape(16, 24, 8, 4)
    assert (kept.sum(axis=3) == 2).all()
    assert (np.where(kept, groups, np.inf).min(axis=3) >= np.where(kept, -np.inf, groups).max(axis=3)).all()
    # ties: the lower index wins
    assert (mask_2to4(np.ones((16, 1, 4))).reshape(16, 4) == [True, True, False, False]).all()


def test_every_pattern_packs_to_its_nibble():
    # the 6 ways to keep 2 of 4, one group each: nibble = idx0 | idx1 << 2
    pairs = list(itertools.combinations(range(4), 2))
    idx = np.array(pairs, dtype=np.uint8).reshape(1, 1, 12)
    meta = pack_metadata(idx)
    assert meta.dtype == np.uint16 and meta.shape == (1, 1, 2)
    nibbles = [a | b << 2 for a, b in pairs]
    assert sorted(nibbles) == [0b0100, 0b1000, 0b1001, 0b1100, 0b1101, 0b1110]
    assert meta[0, 0, 0] == nibbles[0] | nibbles[1] << 4 | nibbles[2] << 8 | nibbles[3] << 12
    assert meta[0, 0, 1] == nibbles[4] | nibbles[5] << 4 | 0b0100 << 8 | 0b0100 << 12   # padded groups
    assert np.array_equal(unpack_metadata(meta, 24), idx)


def test_hand_example():
    W = np.array([[[0, 3, 5, 0, 7, 0, 0, 2]]], dtype=np.float64).repeat(16, axis=0)
    S = prune_2to4(W)
    assert np.array_equal(S.values[0, 0], [3, 5, 7, 2])
    assert S.metadata[0, 0, 0] == (1 | 2 << 2) | (0 | 3 << 2) << 4 | 0b0100 << 8 | 0b0100 << 12


@pytest.mark.parametrize("c", [4, 16, 40, 64])
def test_compress_round_trip_and_reference_exact(c):
    rng = np.random.default_rng(c)
    W = rng.integers(-64, 65, size=(16, 12, c)).astype(np.float64) / 8    # dyadic: sums are exact
    X = rng.integers(-9, 10, size=(16, c, 11)).astype(np.float64)
    S = prune_2to4(W)
    assert isinstance(S, Pruned) and isinstance(S, SemiStructured) and S.pattern == PATTERN
    assert S.values.shape == (16, 12, c // 2) and S.metadata.shape == (16, 12, -(-c // 16))
    assert np.array_equal(decompress(S.values, S.metadata, c), S.dense_weights())
    values, indices = compress(W, S.mask)
    assert np.array_equal(unpack_metadata(pack_metadata(indices), c), indices)
    assert np.array_equal(S.reference(X), np.matmul(S.dense_weights(), X))
    assert np.array_equal(S.reference(X), S.dense_reference(X))
    assert S.achieved_ratio == 0.5 and (S.nnz_per_position == 12 * c // 2).all() and S.is_balanced
    assert S.stacked_weights().shape == (16, 12, c // 2)


def test_float_weights_and_importance():
    W = he_winograd_weights((32, 64), p=6, seed=1)
    S = prune_2to4(W)
    X = np.random.default_rng(0).standard_normal((36, 64, 7))
    np.testing.assert_allclose(S.reference(X), S.dense_reference(X), rtol=1e-12, atol=1e-12)
    assert S.values.dtype == W.dtype
    imp = np.random.default_rng(1).random(W.shape)
    T = prune_2to4(W, importance=imp)
    assert np.array_equal(T.mask, mask_2to4(imp)) and T.criterion == "given"
    assert 0.5 < S.energy_retained < 1 and S.energy_retained >= T.energy_retained


def test_bad_inputs():
    with pytest.raises(InputError, match="divisible by 4"):
        prune_2to4(np.ones((16, 4, 3)))
    W = np.ones((16, 2, 8))
    bad = np.zeros(W.shape, bool)
    bad[..., :3] = True
    with pytest.raises(InputError, match="keeps 3 of columns 0..3"):
        compress(W, bad)
    with pytest.raises(InputError):
        check_2to4(np.ones((16, 2, 8)))                                    # not boolean
    with pytest.raises(InputError, match="ascending"):
        pack_metadata(np.array([[[1, 0]]], dtype=np.uint8))
    with pytest.raises(InputError):
        pack_metadata(np.array([[[0, 4]]], dtype=np.uint8))
    with pytest.raises(InputError):
        unpack_metadata(np.zeros((1, 1, 2), np.uint16), 8)               # 8 columns need 1 word
    with pytest.raises(InputError, match="importance"):
        mask_2to4(W, importance=np.ones(3))
    with pytest.raises(InputError):
        prune_2to4(W).reference(np.ones((16, 9, 2)))
