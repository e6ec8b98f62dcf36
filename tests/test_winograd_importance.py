"""The output-error quadratic form of Winograd-domain weights and the importance factor matrix."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from cutlass_wsp.errors import InputError
from cutlass_wsp.winograd import filter_transform, input_transform, matrices, output_transform
from cutlass_wsp.winograd_importance import (error_kernel, importance_factors, output_energy, output_error_matrix,
                                             relative_output_error)


def _brute_force_H(m: int) -> np.ndarray:
    """H[(ij),(kl)] = Σ over unit inputs e_rs of <ΔY_ij(e_rs), ΔY_kl(e_rs)>, ΔY_ij(d) = Aᵀ(E_ij ⊙ BᵀdB)A:
    the expectation over i.i.d. unit-variance d, in exact rationals from the transform itself."""
    AT, _, BT = matrices(m)
    p = BT.shape[0]
    maps = []
    for i in range(p):
        for j in range(p):
            rows = []
            for r in range(p):
                for s in range(p):
                    d = np.zeros((p, p), dtype=object)
                    d[:, :] = Fraction(0)
                    d[r, s] = Fraction(1)
                    V = BT.dot(d).dot(BT.T)
                    E = np.zeros((p, p), dtype=object)
                    E[:, :] = Fraction(0)
                    E[i, j] = V[i, j]
                    rows.append(AT.dot(E).dot(AT.T).ravel())
            maps.append(np.array(rows, dtype=object))             # [p² inputs, m² outputs]
    H = np.empty((p * p, p * p), dtype=object)
    for a in range(p * p):
        for b in range(p * p):
            H[a, b] = (maps[a] * maps[b]).sum()
    return H


@pytest.mark.parametrize("m", [2, 4])
def test_output_error_matrix_is_the_expected_output_error_exactly(m):
    assert (output_error_matrix(m) == _brute_force_H(m)).all()


@pytest.mark.parametrize("m", [2, 4, 6])
def test_dense_output_energy_is_m_squared_filter_energy_exactly(m):
    # GᵀKG = m·I: a transformed filter's expected output energy per tile is m²·‖g‖², as direct conv says
    G = matrices(m)[1]
    K = error_kernel(m)
    assert (G.T.dot(K).dot(G) == np.identity(3, dtype=int) * m).all()
    g = np.random.default_rng(m).standard_normal((5, 4, 3, 3))
    energy = output_energy(filter_transform(g, m), m)
    np.testing.assert_allclose(energy, m * m * (g ** 2).sum(axis=(1, 2, 3)), rtol=1e-12)


@pytest.mark.parametrize("m", [2, 4, 6])
def test_importance_factors_are_the_root_of_the_diagonal(m):
    H = output_error_matrix(m)
    F = importance_factors(m)
    p = m + 2
    np.testing.assert_allclose(F.ravel() ** 2, [float(H[a, a]) for a in range(p * p)], rtol=1e-14)
    assert np.allclose(F, F.T) and (F > 0).all()


def test_importance_factors_of_f23():
    # ‖Aᵀ[:, i]‖² = 1, 2, 2, 1 and ‖Bᵀ[i, :]‖² = 2 for every row: f = √2, 2, 2, √2
    f = np.array([np.sqrt(2), 2, 2, np.sqrt(2)])
    np.testing.assert_allclose(importance_factors(2), np.outer(f, f), rtol=1e-15)


@pytest.mark.parametrize("m", [2, 4])
def test_spatial_pruning_error_is_the_removed_filter_energy(m):
    g = np.random.default_rng(3).standard_normal((6, 5, 3, 3))
    keep = np.random.default_rng(4).random(g.shape) < 0.6
    err = relative_output_error(filter_transform(g, m), filter_transform(g * keep, m), m)
    np.testing.assert_allclose(err, np.sqrt((g[~keep] ** 2).sum() / (g ** 2).sum()), rtol=1e-12)
    assert relative_output_error(filter_transform(g, m), filter_transform(g, m), m) == 0.0


def test_relative_output_error_predicts_a_real_winograd_layer():
    # zero random Winograd-domain weights, run the layer on i.i.d. inputs, compare with the prediction
    m, n, c = 4, 8, 16
    rng = np.random.default_rng(5)
    g = rng.standard_normal((n, c, 3, 3))
    W = filter_transform(g, m)
    Wp = W * (rng.random(W.shape) < 0.5)
    d = rng.standard_normal((2, c, 96, 96))
    X = input_transform(d, m)
    dense = output_transform(np.matmul(W, X), m, 2, 96, 96)[:, :, 1:-1, 1:-1]     # away from the zero pad
    pruned = output_transform(np.matmul(Wp, X), m, 2, 96, 96)[:, :, 1:-1, 1:-1]
    measured = np.linalg.norm(pruned - dense) / np.linalg.norm(dense)
    predicted = relative_output_error(W, Wp, m)
    assert abs(measured / predicted - 1) < 0.05


def test_bad_inputs():
    with pytest.raises(InputError):
        importance_factors(3)
    with pytest.raises(InputError):
        relative_output_error(np.ones((16, 2, 2)), np.ones((16, 2, 3)), 2)
    with pytest.raises(InputError):
        output_energy(np.ones((36, 2, 2)), 2)
