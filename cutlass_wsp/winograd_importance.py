"""How much a Winograd-domain weight matters to the layer's output, derived from the transforms.

One output tile of one filter is Y = Aᵀ[Σ_c (U_c ⊙ V_c)]A with V_c = Bᵀ d_c B (docs/winograd.md).
Perturbing the weight U_c[i, j] by δ changes it by ΔY = δ · V_c[i, j] · a_i a_jᵀ, where a_i = Aᵀ[:, i]
and V_c[i, j] = b_iᵀ d_c b_j with b_i = Bᵀ[i, :]. For inputs d with i.i.d. zero-mean entries of unit
variance, E[V[i, j] V[k, l]] = (b_i·b_k)(b_j·b_l), so for any perturbation Δ of one kernel's p×p
Winograd weights

    E‖ΔY‖² = Σ_{ijkl} Δ[i, j] Δ[k, l] K[i, k] K[j, l] = ⟨Δ, K Δ K⟩,   K = (A Aᵀ) ⊙ (Bᵀ B),
    i.e. K[i, k] = (a_i·a_k)(b_i·b_k),

and perturbations of different channels or filters add (channels are independent, filters write
different outputs). The p²×p² matrix H = K ⊗ K is exact (computed here in rationals from
`winograd.matrices(m)`), and Gᵀ K G = m·I₃ makes the dense output energy m²·‖g‖² per tile, as the
direct convolution says (tests/test_winograd_importance.py checks both exactly).

The **importance factor matrix** is the square root of H's diagonal: F[i, j] = f_i f_j with
f_i = ‖a_i‖·‖b_i‖, the RMS output change per unit change of the weight at Winograd position (i, j).
|U[i, j]| · F[i, j] is therefore the RMS output change from pruning that one weight (the diagonal,
single-weight term; the cross terms between weights of one kernel are what the diagonal drops, as
Optimal Brain Damage drops the Hessian's off-diagonal). It does not depend on how the Cook–Toom
scaling S is split between G and Bᵀ: scaling G's row i by s scales U's row i by s and b_i by 1/s.
This is the per-position weighting seed 003 (Yu, Park and Naumov 2019) uses for its Winograd-domain
pruning; the derivation is ours (docs/pruning.md, "Spatial-Winograd").
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import numpy as np

from cutlass_wsp.errors import InputError
from cutlass_wsp.winograd import matrices


@lru_cache(maxsize=None)
def _kernel_fractions(m: int) -> np.ndarray:
    AT, _, BT = matrices(m)
    p = BT.shape[0]
    K = np.empty((p, p), dtype=object)
    for i in range(p):
        for k in range(p):
            aa = sum((AT[r, i] * AT[r, k] for r in range(AT.shape[0])), Fraction(0))
            bb = sum((BT[i, r] * BT[k, r] for r in range(p)), Fraction(0))
            K[i, k] = aa * bb
    K.flags.writeable = False
    return K


def error_kernel(m: int) -> np.ndarray:
    """K [p×p] (object Fractions, exact): K[i, k] = (a_i·a_k)(b_i·b_k), so that E‖ΔY‖² = ⟨Δ, KΔK⟩ per
    kernel and output tile under i.i.d. unit-variance inputs."""
    return _kernel_fractions(m).copy()


def output_error_matrix(m: int) -> np.ndarray:
    """H = K ⊗ K [p²×p²] (object Fractions): E‖ΔY‖² = δᵀHδ for δ = Δ flattened row-major (i·p + j)."""
    K = _kernel_fractions(m)
    p = K.shape[0]
    H = np.empty((p * p, p * p), dtype=object)
    for i in range(p):
        for j in range(p):
            for k in range(p):
                for l in range(p):
                    H[i * p + j, k * p + l] = K[i, k] * K[j, l]
    return H


def importance_factors(m: int) -> np.ndarray:
    """F [p×p] float64: F[i, j] = sqrt(H[(i,j),(i,j)]) = f_i f_j, f_i = ‖Aᵀ[:, i]‖·‖Bᵀ[i, :]‖."""
    K = _kernel_fractions(m)
    f = np.sqrt(np.array([float(K[i, i]) for i in range(K.shape[0])]))
    return np.outer(f, f)


def _as_winograd(W, p: int, name: str) -> np.ndarray:
    try:
        W = np.asarray(W, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} is not a real array", f"pass W[{p * p}, n, c]") from None
    if W.ndim != 3 or W.shape[0] != p * p:
        raise InputError(f"{name} has shape {W.shape}", f"pass W[{p * p}, n, c] for p={p}")
    return W


def output_energy(W, m: int) -> np.ndarray:
    """E‖Y_n‖² per filter n and output tile, [n] float64, for Winograd weights W[p², n, c] and
    i.i.d. unit-variance inputs: Σ_c ⟨U_nc, K U_nc K⟩."""
    K = np.array(_kernel_fractions(m), dtype=np.float64)
    p = K.shape[0]
    W = _as_winograd(W, p, "weights")
    n, c = W.shape[1:]
    U = W.reshape(p, p, n * c)
    KU = np.tensordot(K, U, axes=(1, 0))                    # [i, l, nc] = Σ_k K[i,k] U[k,l]
    KUK = np.matmul(K, KU)                                  # [i, j, nc] = Σ_l K[j,l] KU[i,l]
    per_kernel = (U * KUK).sum(axis=(0, 1))
    return per_kernel.reshape(n, c).sum(axis=1)


def relative_output_error(W_ref, W_new, m: int) -> float:
    """sqrt(E‖Y_new − Y_ref‖² / E‖Y_ref‖²) over the whole layer for i.i.d. unit-variance inputs: an
    accuracy proxy that weighs each Winograd position by how the transforms spread it, exactly."""
    p = _kernel_fractions(m).shape[0]
    ref = _as_winograd(W_ref, p, "reference weights")
    new = _as_winograd(W_new, p, "pruned weights")
    if ref.shape != new.shape:
        raise InputError(f"weights have shapes {ref.shape} and {new.shape}", "compare weights of one layer")
    total = float(output_energy(ref, m).sum())
    if total <= 0:
        return 0.0 if not np.any(new) else float("inf")
    return float(np.sqrt(max(float(output_energy(new - ref, m).sum()), 0.0) / total))
