"""The pruning of a sweep point, whatever builds it: `pruning.prune` for its own patterns, the seeds'
modules for the patterns `patterns.py` marks `built_by` (2:4, spatial-winograd, hybrid).

Those three cannot live in `pruning.prune`: their modules build on `pruning` (a `Pruned` subclass each),
and spatial-Winograd pruning starts from the spatial filters, which it recovers from the Winograd
weights (`spatial_from_winograd`: the sweep's He weights and a model's are transforms of 3×3 filters).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cutlass_wsp.errors import InputError
from cutlass_wsp.patterns import get as get_pattern

_SPATIAL_KEEP = 2      # spatial-Winograd masks kept for reuse: hybrid points start from the same one


def prune_point(W: np.ndarray, pattern: str, ratio: float, *, balance: str = "balanced", spread: float = 0.0,
                seed: int = 0) -> Any:
    """The `Pruned` of pattern `pattern` (a pruning pattern, or one built outside `pruning.prune`) at
    `ratio` for Winograd weights W[p², n, c]."""
    info = get_pattern(pattern)
    if info.built_by is None:
        from cutlass_wsp.pruning import prune

        return prune(W, pattern, ratio, balance=balance, spread=spread, seed=seed)
    if balance not in info.balances or spread:
        raise InputError(f"pattern {pattern} has no balance {balance!r}", f"{pattern} is balanced by construction")
    if info.fixed_ratio is not None:
        if ratio not in (0.0, info.fixed_ratio):
            raise InputError(f"pattern {pattern} removes exactly {info.fixed_ratio:g} of the weights, not {ratio:g}",
                             f"use ratio {info.fixed_ratio:g} (or none) with {pattern}")
        from cutlass_wsp.semi_structured import prune_2to4

        return prune_2to4(W)
    from cutlass_wsp.dense_blocks import HYBRID, hybrid_from
    from cutlass_wsp.spatial_winograd import PATTERN as SPATIAL

    if pattern == SPATIAL:
        return spatial_pruned(W, ratio)
    if pattern == HYBRID:
        return hybrid_from(spatial_pruned(W, ratio))
    raise InputError(f"no builder for pattern {pattern!r} (patterns.py says {info.built_by})",
                     "add its builder to cutlass_wsp/seed_pruning.py")


_spatial_cache: dict[tuple, tuple[np.ndarray, Any]] = {}


def spatial_pruned(W: np.ndarray, ratio: float):
    """Spatial-Winograd masks at `ratio` for W[p², n, c] (the transform of 3×3 filters), F(m×m, 3×3) with
    m = p - 2. The last few results are kept (W itself is held with each, so its address is not reused)."""
    import math

    from cutlass_wsp.spatial_winograd import spatial_from_winograd, spatial_winograd_prune

    W = np.asarray(W)
    p = math.isqrt(W.shape[0]) if W.ndim == 3 else 0
    if W.ndim != 3 or p * p != W.shape[0] or p < 3:
        raise InputError(f"Winograd weights have shape {W.shape}", "pass W[p², n, c] with p >= 3")
    key = (W.__array_interface__["data"][0], W.shape, W.dtype.str, float(ratio))
    hit = _spatial_cache.get(key)
    if hit is not None and hit[0] is W:
        return hit[1]
    m = p - 2
    result = spatial_winograd_prune(spatial_from_winograd(W, m), m, ratio, dtype=W.dtype)
    while len(_spatial_cache) >= _SPATIAL_KEEP:
        _spatial_cache.pop(next(iter(_spatial_cache)))
    _spatial_cache[key] = (W, result)
    return result
