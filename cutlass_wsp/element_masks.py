"""A `pruning.Pruned` in WWP form (per-position CSR) for any element mask over W[L, n, c].

The seeds' methods (spatial-Winograd masks, the remainder of dense-block extraction) end in an element
mask that `pruning.prune` did not choose. `element_pruned` wraps such a mask the way `prune(..., 'wwp')`
wraps its own: `csr[i] = (indptr[n+1], indices, data)` in row-major order, `compact_weights[i]` = data,
so `Pruned.reference`, `block_diagonal_csr` and the cuSPARSE CSR baseline consume it unchanged.
"""

from __future__ import annotations

import numpy as np

from cutlass_wsp.errors import InputError
from cutlass_wsp.pruning import Pruned


def check_mask(mask, shape: tuple[int, ...], name: str = "mask") -> np.ndarray:
    """A boolean array of `shape` (True = kept)."""
    m = np.asarray(mask)
    if m.shape != tuple(shape) or m.dtype != np.bool_:
        raise InputError(f"{name} is {m.dtype}{m.shape}", f"pass a boolean mask of shape {tuple(shape)} (True = kept)")
    return m


def csr_from_mask(W: np.ndarray, mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per position i: (indptr int32 [n+1], indices int32 [nnz_i], data [nnz_i] in W's dtype), row-major."""
    out = []
    for i in range(W.shape[0]):
        rr, cc = np.nonzero(mask[i])
        indptr = np.concatenate([[0], np.cumsum(mask[i].sum(1))]).astype(np.int32)
        out.append((indptr, cc.astype(np.int32), np.ascontiguousarray(W[i][rr, cc])))
    return out


def element_pruned(W: np.ndarray, mask: np.ndarray, *, pattern: str, ratio: float, criterion: str,
                   cls: type = Pruned, **extra) -> Pruned:
    """`cls` (Pruned or a subclass) holding W[L, n, c] (the weights before this mask), `mask` and its CSR.
    `ratio` is the requested fraction removed; `achieved_ratio` reads the mask."""
    W = np.asarray(W)
    mask = check_mask(mask, W.shape)
    L, n, c = W.shape
    csr = csr_from_mask(W, mask)
    return cls(pattern=pattern, ratio=float(ratio), balance="unbalanced", criterion=criterion, spread=0.0,
               weights=W, mask=mask, kept_per_position=mask.sum(axis=(1, 2)).astype(np.int64),
               units_per_position=n * c, compact_weights=[v for _, _, v in csr], csr=csr, **extra)
