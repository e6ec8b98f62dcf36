"""Spatial-Winograd pruning (seed 003: J. Yu, J. Park and M. Naumov, "Spatial-Winograd Pruning Enabling
Sparse Winograd Convolution", arXiv:1901.02132, 2019) as element masks over the GEMM batch W[p², n, c].

What the paper says it does (its abstract, `../shared/seeds/003_*.txt`): "As the first step,
spatial-domain weights are pruned in a structured way, which efficiently transfers the spatial-domain
sparsity into the Winograd domain and avoids Winograd-domain retraining. For the next step, we also
perform pruning and retraining directly in the Winograd domain but propose to use an importance factor
matrix to adjust weight importance and weight gradients." Only the abstract was available to this
work; the structure and the factor matrix below are derived from the transforms, not copied from the
paper's text (docs/pruning.md, "Spatial-Winograd", says what is ours). Retraining is out of scope:
these are the masks, from given weights.

1. Structure that transfers. U = G g Gᵀ, so U[i, j] = Σ_{u,v} G[i, u] G[j, v] g[u, v]: it is
   structurally zero iff every tap (u, v) with G[i, u]·G[j, v] ≠ 0 (its *support*) is pruned.
   `support(m)` computes the supports exactly from the rational G of `winograd.matrices(m)`;
   `transfer(keep, m)` maps a spatial keep-mask to the Winograd entries that can still be nonzero.
   For wincnn's points (0, ±1, ±2, ±½, ∞) every row of G has support {0}, {2} or {0, 1, 2}, so the
   supports are the 9 products R_i × R_j: a corner tap alone (zeros one corner of U), one border line
   of 3 taps (zeros a whole border row or column of U) and the whole kernel (zeros all p² entries).
   Pruning any other set of taps zeros nothing more in the Winograd domain than its largest union of
   supports does, so the units of the spatial step are these support groups (`structure='support'`),
   or only the whole 3×3 kernel (`structure='kernel'`, kernel-level pruning: transfers 1:1).
2. `prune_spatial`: group LASSO over the units of every kernel g[n, c]: the groups with the smallest
   L2 norm go first, under one threshold for the layer, until a fraction `ratio` of the taps is pruned.
3. `prune_winograd`: from the transformed, spatially pruned weights, keep the largest |U|·F of the
   entries step 1 left, with F the importance factor matrix (winograd_importance.py), so that the
   layer's Winograd-domain sparsity (structural zeros included) reaches `ratio`.
`spatial_winograd_prune` runs 1-3 and returns a `Pruned`-compatible object (pattern 'spatial-winograd',
CSR like WWP) for the CSR baseline and for dense_blocks.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from cutlass_wsp.element_masks import check_mask, element_pruned
from cutlass_wsp.errors import InputError
from cutlass_wsp.pruning import Pruned, kept_count
from cutlass_wsp.winograd import filter_transform, matrices
from cutlass_wsp.winograd_importance import importance_factors, relative_output_error

PATTERN = "spatial-winograd"
STRUCTURES: tuple[str, ...] = ("support", "kernel")
IMPORTANCES: tuple[str, ...] = ("transform", "uniform")
R = 3


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------

def _check_ratio(ratio, what: str = "pruning ratio") -> float:
    try:
        r = float(ratio)
    except (TypeError, ValueError):
        raise InputError(f"{what} {ratio!r} is not a number", "use a fraction in [0, 1), e.g. 0.63") from None
    if not (math.isfinite(r) and 0.0 <= r < 1.0):
        raise InputError(f"{what} {ratio!r} is outside [0, 1)", "give the fraction of weights removed, e.g. 0.63")
    return r


def _check_filters(g) -> np.ndarray:
    try:
        g = np.asarray(g)
    except Exception as e:  # ragged lists
        raise InputError(f"filters are not an array ({e})", "pass g[n, c, 3, 3]") from None
    if g.ndim != 4 or g.shape[2:] != (R, R) or min(g.shape) < 1:
        raise InputError(f"filters have shape {g.shape}", "pass spatial filters g[n, c, 3, 3]")
    if not (np.issubdtype(g.dtype, np.floating) or np.issubdtype(g.dtype, np.integer)):
        raise InputError(f"filters have dtype {g.dtype}", "pass real numbers")
    g = g.astype(np.float64)
    if not np.isfinite(g).all():
        raise InputError("filters contain NaN or inf", "pass finite weights")
    return g


def _check_choice(value, accepted: tuple[str, ...], what: str) -> str:
    if value not in accepted:
        raise InputError(f"unknown {what} {value!r}", f"use one of {', '.join(accepted)}")
    return value


# ---------------------------------------------------------------------------------------------
# 1. Which Winograd weights a spatial zero pattern zeros
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _support(m: int) -> np.ndarray:
    G = matrices(m)[1]                                   # exact Fractions, p × 3
    nz = np.array([[x != 0 for x in row] for row in G], dtype=bool)
    s = nz[:, None, :, None] & nz[None, :, None, :]      # [i, j, u, v] = G[i,u]·G[j,v] ≠ 0
    s.flags.writeable = False
    return s


def support(m: int) -> np.ndarray:
    """bool [p, p, 3, 3]: support[i, j, u, v] is True iff tap g[u, v] contributes to U[i, j] = (G g Gᵀ)[i, j],
    i.e. G[i, u]·G[j, v] ≠ 0 in the exact rational G of `winograd.matrices(m)`."""
    return _support(m).copy()


def tap_groups(m: int, structure: str = "support") -> np.ndarray:
    """bool [groups, 3, 3]: the units of spatial structured pruning. 'support': the distinct supports of
    the p² Winograd positions (smallest first); 'kernel': the whole 3×3 kernel only."""
    structure = _check_choice(structure, STRUCTURES, "spatial structure")
    if structure == "kernel":
        return np.ones((1, R, R), dtype=bool)
    flat = _support(m).reshape(-1, R * R)
    distinct = sorted({tuple(row) for row in flat if row.any()}, key=lambda t: (sum(t), t[::-1]))
    return np.array(distinct, dtype=bool).reshape(-1, R, R)


def transfer(spatial_keep, m: int) -> np.ndarray:
    """bool [p², n, c]: False where the Winograd weight U[i, j] of kernel (n, c) is structurally zero
    because every tap of its support is pruned in `spatial_keep` (bool [n, c, 3, 3], True = kept)."""
    keep = np.asarray(spatial_keep)
    if keep.ndim != 4 or keep.shape[2:] != (R, R) or keep.dtype != np.bool_:
        raise InputError(f"spatial mask is {keep.dtype}{keep.shape}", "pass a boolean keep-mask [n, c, 3, 3]")
    s = _support(m)
    p = s.shape[0]
    n, c = keep.shape[:2]
    hits = keep.reshape(n * c, R * R).astype(np.float32) @ s.reshape(p * p, R * R).T.astype(np.float32)
    return np.ascontiguousarray((hits > 0).T.reshape(p * p, n, c))


# ---------------------------------------------------------------------------------------------
# 2. Spatial structured pruning
# ---------------------------------------------------------------------------------------------

def prune_spatial(g, m: int, ratio: float, *, structure: str = "support") -> np.ndarray:
    """bool keep-mask [n, c, 3, 3]: group LASSO over `tap_groups(m, structure)` of every kernel.

    Each group of each kernel scores the L2 norm of its taps. One threshold τ for the layer: every group
    with score ≤ τ is pruned (a kernel's pruned taps are the union of its pruned groups; a line's norm is
    at least its corner's, so the union is always a union of whole supports). τ is the smallest score
    that prunes at least round((ratio)·n·c·9) taps; ties are pruned together."""
    g = _check_filters(g)
    r = _check_ratio(ratio, "spatial pruning ratio")
    n, c = g.shape[:2]
    N = n * c
    target = N * R * R - kept_count(r, N * R * R)        # taps to prune
    if target <= 0:
        return np.ones(g.shape, dtype=bool)
    groups = tap_groups(m, structure).reshape(-1, R * R)  # [G, 9]
    g2 = (g.reshape(N, R * R) ** 2)
    scores = np.sqrt(g2 @ groups.T.astype(np.float64))  # [N, G]
    # Per kernel, taps pruned as its groups go in score order; then one global order of those events.
    order = np.argsort(scores, axis=1, kind="stable")
    union = np.logical_or.accumulate(groups[order], axis=1)                  # [N, G, 9]
    taps = union.sum(axis=2)
    gained = np.diff(taps, axis=1, prepend=0).ravel()
    s_sorted = np.take_along_axis(scores, order, axis=1).ravel()
    glob = np.argsort(s_sorted, kind="stable")
    reach = np.searchsorted(np.cumsum(gained[glob]), target)                 # first event reaching target
    tau = s_sorted[glob[min(reach, len(glob) - 1)]]
    pruned_groups = scores <= tau
    pruned = (pruned_groups.astype(np.float64) @ groups.astype(np.float64)) > 0
    return ~pruned.reshape(n, c, R, R)


# ---------------------------------------------------------------------------------------------
# 3. Winograd-domain pruning with the importance factor matrix
# ---------------------------------------------------------------------------------------------

def _top_mask(scores: np.ndarray, k: int) -> np.ndarray:
    """bool like scores: the k largest (ties: lower flat index first). -inf entries are never chosen
    unless k exceeds the finite ones."""
    flat = scores.ravel()
    keep = np.zeros(flat.shape, dtype=bool)
    if k <= 0:
        return keep.reshape(scores.shape)
    if k >= flat.size:
        keep[:] = True
        return keep.reshape(scores.shape)
    thr = np.partition(flat, flat.size - k)[flat.size - k]
    above = flat > thr
    keep[above] = True
    ties = np.flatnonzero(flat == thr)[: k - int(above.sum())]
    keep[ties] = True
    return keep.reshape(scores.shape)


def _factors(m: int, importance) -> np.ndarray:
    p = m + R - 1
    if isinstance(importance, str):
        _check_choice(importance, IMPORTANCES, "importance")
        return importance_factors(m) if importance == "transform" else np.ones((p, p))
    F = np.asarray(importance, dtype=np.float64)
    if F.shape != (p, p) or not np.isfinite(F).all() or (F < 0).any():
        raise InputError(f"importance matrix has shape {F.shape}",
                         f"pass 'transform', 'uniform' or a non-negative finite [{p}, {p}] array")
    return F


def prune_winograd(U, m: int, ratio: float, *, structural=None, importance="transform") -> np.ndarray:
    """bool keep-mask [p², n, c] for Winograd weights U[p², n, c]: of the entries `structural` allows
    (True = may be nonzero; None = all), keep the round((1 − ratio)·p²·n·c) largest |U|·F, one threshold
    for the layer (structural zeros count as pruned). If fewer entries are allowed, all of them are kept
    and the achieved sparsity exceeds `ratio`. importance: 'transform' (F of winograd_importance.py),
    'uniform' (F = 1: plain magnitude, WWP) or a [p, p] array."""
    r = _check_ratio(ratio)
    p = m + R - 1
    U = np.asarray(U, dtype=np.float64)
    if U.ndim != 3 or U.shape[0] != p * p:
        raise InputError(f"Winograd weights have shape {U.shape}", f"pass U[{p * p}, n, c] for m={m}")
    allowed = np.ones(U.shape, bool) if structural is None else check_mask(structural, U.shape, "structural mask")
    F = _factors(m, importance).reshape(p * p, 1, 1)
    keep_total = kept_count(r, U.size)
    if int(allowed.sum()) <= keep_total:
        return allowed.copy()
    scores = np.where(allowed, np.abs(U) * F, -np.inf)
    return _top_mask(scores, keep_total)


# ---------------------------------------------------------------------------------------------
# The pipeline and its result
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class SpatialWinogradPruned(Pruned):
    """A `Pruned` (pattern 'spatial-winograd', WWP's CSR form) with what the two steps left behind.

    weights: U of the spatially pruned filters (what step 2 prunes); mask: the final keep-mask;
    energy_retained: step 2's share of those weights' squared norm."""

    spatial_weights: np.ndarray | None = None   # the unpruned g[n, c, 3, 3], float64
    spatial_mask: np.ndarray | None = None      # bool [n, c, 3, 3]: taps kept by step 1
    structural: np.ndarray | None = None        # bool [p², n, c]: may be nonzero after step 1
    original_weights: np.ndarray | None = None  # U of the unpruned g (weights' dtype)
    factors: np.ndarray | None = None           # [p, p] importance factors step 2 used
    spatial_ratio: float = 0.0
    structure: str = "support"

    @property
    def unit(self) -> str:
        return "weight"

    @property
    def m(self) -> int:
        return self.p - (R - 1)

    @property
    def spatial_sparsity(self) -> float:
        """Fraction of the spatial taps step 1 pruned."""
        return 1.0 - float(self.spatial_mask.mean())

    @property
    def structural_sparsity(self) -> float:
        """Fraction of the Winograd weights step 1 made exactly zero (the transferred sparsity)."""
        return 1.0 - float(self.structural.mean())

    @property
    def spatial_energy_retained(self) -> float:
        g2 = self.spatial_weights ** 2
        total = float(g2.sum())
        return float(g2[self.spatial_mask].sum()) / total if total > 0 else 1.0

    @property
    def output_error(self) -> float:
        """Relative output error of the final weights against the unpruned layer (both steps), exact for
        i.i.d. unit-variance inputs (winograd_importance.relative_output_error)."""
        return relative_output_error(self.original_weights, self.dense_weights(), self.m)

    def importance_scores(self) -> np.ndarray:
        """|U|·F per weight, [p², n, c] float64: the order step 2 kept weights in (dense_blocks.reprune
        can drop by it)."""
        return np.abs(self.weights.astype(np.float64)) * self.factors.reshape(self.L, 1, 1)


def spatial_winograd_prune(g, m: int, ratio: float, *, spatial_ratio: float | None = None,
                           structure: str = "support", importance="transform",
                           dtype=np.float32) -> SpatialWinogradPruned:
    """Spatial-Winograd masks for spatial filters g[n, c, 3, 3] and F(m×m, 3×3).

    Step 1 prunes `spatial_ratio` of the taps (default: `ratio`, the same ratio in the spatial domain) with
    `prune_spatial(structure)`; step 2 prunes the transformed weights to a Winograd-domain sparsity of
    `ratio` with `prune_winograd(importance)`. The result's `achieved_ratio` is the layer's Winograd-domain
    sparsity (>= ratio when step 1 alone already zeroes more); weights are stored in `dtype`."""
    g64 = _check_filters(g)
    r = _check_ratio(ratio)
    rs = r if spatial_ratio is None else _check_ratio(spatial_ratio, "spatial pruning ratio")
    structure = _check_choice(structure, STRUCTURES, "spatial structure")
    F = _factors(m, importance)
    keep_s = prune_spatial(g64, m, rs, structure=structure)
    U = filter_transform(np.where(keep_s, g64, 0.0), m)
    structural = transfer(keep_s, m)
    mask = prune_winograd(U, m, r, structural=structural, importance=F)
    criterion = importance if isinstance(importance, str) else "given"
    return element_pruned(
        U.astype(dtype), mask, pattern=PATTERN, ratio=r,
        criterion={"transform": "importance-factor", "uniform": "l2"}.get(criterion, criterion),
        cls=SpatialWinogradPruned, spatial_weights=g64, spatial_mask=keep_s, structural=structural,
        original_weights=filter_transform(g64, m).astype(dtype), factors=F, spatial_ratio=rs,
        structure=structure)


@lru_cache(maxsize=None)
def _left_inverse(m: int) -> np.ndarray:
    G = matrices(m)[1]
    GtG = G.T.dot(G)                                    # 3×3 Fractions
    # exact inverse by Gauss-Jordan on Fractions
    a = [list(row) + [1 if i == j else 0 for j in range(R)] for i, row in enumerate(GtG)]
    for col in range(R):
        piv = next(r_ for r_ in range(col, R) if a[r_][col] != 0)
        a[col], a[piv] = a[piv], a[col]
        inv = 1 / a[col][col]
        a[col] = [x * inv for x in a[col]]
        for r_ in range(R):
            if r_ != col and a[r_][col] != 0:
                f = a[r_][col]
                a[r_] = [x - f * y for x, y in zip(a[r_], a[col])]
    inv_gtg = np.array([row[R:] for row in a], dtype=object)
    out = inv_gtg.dot(G.T).astype(np.float64)          # G⁺ = (GᵀG)⁻¹Gᵀ, 3 × p
    out.flags.writeable = False
    return out


def spatial_from_winograd(W, m: int, *, rtol: float = 1e-4) -> np.ndarray:
    """The 3×3 filters g[n, c, 3, 3] (float64) whose transform is W[p², n, c]: g = G⁺ U G⁺ᵀ.
    InputError when W is not (within rtol, e.g. float32 rounding) the transform of 3×3 filters."""
    p = m + R - 1
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 3 or W.shape[0] != p * p:
        raise InputError(f"Winograd weights have shape {W.shape}", f"pass W[{p * p}, n, c] for m={m}")
    Gp = _left_inverse(m)
    U = W.reshape(p, p, *W.shape[1:])
    g = np.einsum("ui,ijnc,vj->ncuv", Gp, U, Gp, optimize=True)
    back = filter_transform(g, m)
    scale = float(np.abs(W).max()) or 1.0
    if float(np.abs(back - W).max()) > rtol * scale:
        raise InputError("these Winograd-domain weights are not the transform of 3×3 filters",
                         "pass the spatial filters g[n, c, 3, 3] (spatial-Winograd pruning needs them)")
    return np.ascontiguousarray(g)
