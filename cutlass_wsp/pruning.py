"""Pruning patterns on Winograd-domain weights W[L, n, c] and the compact forms their GEMMs consume.

Each pattern removes whole *units* of each W_i (see docs/pruning.md): the pattern decides what a unit
is, the balance decides how many units each of the p² matrices keeps, and the criterion decides which.
The result, `Pruned`, holds the mask, the compact form a kernel reads (kept indices + gathered
weights) and a numpy reference of the pruned GEMM batch computed from the compact form alone, so a
bug in building the compact form shows up as a mismatch against the masked dense product.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import numpy as np

from cutlass_wsp.errors import InputError, UnreachableRatio, Unsupported
from cutlass_wsp.patterns import BALANCES, PATTERNS as _PATTERNS, PRUNING_PATTERNS as PATTERNS

CRITERIA: tuple[str, ...] = ("l2", "random")

# Which balances make sense per pattern: FP removes the same filters everywhere and BCBP is balanced
# by definition (seed 002), so only per-position units (rows, columns, weights) can be unbalanced.
PATTERN_BALANCES: dict[str, tuple[str, ...]] = {name: _PATTERNS[name].balances for name in PATTERNS}
UNIT_NAMES: dict[str, str] = {name: _PATTERNS[name].unit for name in PATTERNS}

VALID_L = (16, 36, 64)  # p² for p = 4, 6, 8
BCBP_DEFAULT_TILE_ROWS = 32
# WSP-RB's blocks: the fused kernel's filter blocks (families/fused.py, "wide filter blocks"). By default a block is
# the widest of these whose kept count fits the kernel's 32 packed rows per position (wsp_rb_block).
WSP_RB_BLOCKS = (32, 64, 96, 128, 160, 192, 256, 320)
WSP_RB_ROWS = 32
WSP_CB_BLOCK = 16           # input channels per wsp-cb block: the fused kernel's chunk (families/fused.BC)


# ---------------------------------------------------------------------------------------------
# Counting rule
# ---------------------------------------------------------------------------------------------

def kept_count(ratio: float, units: int) -> int:
    """Units kept out of `units` at pruning ratio r: round-half-up((1 - r) · units).
    The 1e-9 keeps exact halves (0.7 · 5 = 3.4999999999999996 in floats) rounding up."""
    return int(math.floor((1.0 - ratio) * units + 0.5 + 1e-9))


def _check_ratio(ratio) -> float:
    try:
        r = float(ratio)
    except (TypeError, ValueError):
        raise InputError(f"pruning ratio {ratio!r} is not a number", "use a fraction in [0, 1), e.g. 0.7") from None
    if not (math.isfinite(r) and 0.0 <= r < 1.0):
        raise InputError(f"pruning ratio {ratio!r} is outside [0, 1)",
                         "give the fraction of weights removed, e.g. 0.7 for 70%")
    return r


def check_weights(W, *, winograd: bool = True) -> np.ndarray:
    """W[L, n, c] as a real, finite array (integers as float64). winograd: L must be p² = 16, 36 or 64."""
    try:
        W = np.asarray(W)
    except Exception as e:
        raise InputError(f"weights are not an array ({e})", "pass W[L, n, c] as a numpy array") from None
    if W.ndim != 3 or min(W.shape) < 1 or (winograd and W.shape[0] not in VALID_L):
        raise InputError(f"Winograd weights have shape {W.shape}",
                         "pass W[L, n, c] with L = p² = 16, 36 or 64 (p = 4, 6, 8) and n, c >= 1" if winograd
                         else "pass Winograd-domain weights W[L, n, c]")
    if not (np.issubdtype(W.dtype, np.floating) or np.issubdtype(W.dtype, np.integer)):
        raise InputError(f"Winograd weights have dtype {W.dtype}", "pass a real float array")
    if np.issubdtype(W.dtype, np.integer):
        W = W.astype(np.float64)
    if not np.isfinite(W).all():
        raise InputError("Winograd weights contain NaN or inf", "pass finite weights")
    return W


def _check_choice(value, accepted: tuple[str, ...], what: str) -> str:
    if value not in accepted:
        raise InputError(f"unknown {what} {value!r}", f"use one of {', '.join(accepted)}")
    return value


def default_tile_rows(n: int) -> int:
    """BCBP row-tile height: 32 when it divides n, else n itself when n < 32, else gcd(n, 32)."""
    if n % BCBP_DEFAULT_TILE_ROWS == 0:
        return BCBP_DEFAULT_TILE_ROWS
    if n < BCBP_DEFAULT_TILE_ROWS:
        return n
    return math.gcd(n, BCBP_DEFAULT_TILE_ROWS)


def block_menu(n: int, rows: int = WSP_RB_ROWS, menu: tuple[int, ...] = WSP_RB_BLOCKS) -> list[int]:
    """The blocks of `menu` from `rows` up to the first that holds all n filters (a wider one is the same one
    block): the candidates of wsp_rb_block and of the fused kernel's wide_filter_block."""
    if n < 1:
        raise InputError(f"a layer of {n} output channels", "use n >= 1")
    cap = next((b for b in menu if b >= n), menu[-1])
    return [b for b in menu if rows <= b <= cap]


def wsp_rb_block(ratio: float, n: int, rows: int = WSP_RB_ROWS, menu: tuple[int, ...] = WSP_RB_BLOCKS) -> int:
    """The widest block of `menu` (up to the first that holds all n filters) whose kept count at `ratio` is at
    most `rows`: 0.5 -> 64, 0.7 -> 96, 0.75 -> 128, 0.9 -> 320 for n >= 320; `rows` itself if none fits."""
    fit = [b for b in block_menu(n, rows, menu) if kept_count(ratio, min(b, n)) <= rows]
    return max(fit) if fit else rows


def _check_block(block, n: int, ratio: float) -> int:
    if block is None:   # the fused kernel's balanced unit at this ratio, no wider than the layer
        return min(wsp_rb_block(ratio, n), n)
    try:
        b = operator.index(block)
    except TypeError:
        b = 0
    if b < 1:
        raise InputError(f"wsp-rb block={block!r}", "use a positive number of filters per block, e.g. 32")
    return b


def check_tile_rows(tile_rows, n: int) -> int:
    """BCBP's rows per tile: the default for n, or a given divisor of n."""
    if tile_rows is None:
        return default_tile_rows(n)
    try:
        t = operator.index(tile_rows)
    except TypeError:
        t = 0
    if t < 1 or n % t:
        divisors = [d for d in (64, 32, 16, 8, 4, 2, 1) if n % d == 0 and d <= n]
        raise InputError(f"BCBP tile_rows={tile_rows!r} does not divide n={n}",
                         f"use a divisor of n, e.g. {divisors[0] if divisors else 1}")
    return t


# ---------------------------------------------------------------------------------------------
# Selecting units
# ---------------------------------------------------------------------------------------------

def _keep_top(scores: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """bool like scores[G, u]: in each group g the kept[g] highest scores (ties: lower index wins)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(scores.shape[1])[None, :].repeat(scores.shape[0], 0), axis=1)
    return rank < kept[:, None]


def _keep_global(scores: np.ndarray, total: int) -> np.ndarray:
    """One threshold over all groups: the `total` highest scores of scores[L, u], except that every
    group keeps at least its best unit (a W_i with no rows would be a GEMM with M = 0)."""
    L, u = scores.shape
    keep = np.zeros(scores.shape, dtype=bool)
    keep[np.arange(L), np.argmax(scores, axis=1)] = True
    rest = np.where(keep, -np.inf, scores).ravel()
    chosen = np.argsort(-rest, kind="stable")[: total - L]
    keep.ravel()[chosen] = True
    return keep


def spread_ratios(ratio: float, spread: float, L: int, units: int, rng: np.random.Generator) -> np.ndarray:
    """Per-position ratios r_i, evenly spaced over [r - s, r + s] in a seeded random order, clipped to
    [0, 1 - 1/units], then shifted together so their mean is r again (clipping moves the mean)."""
    offsets = rng.permutation(np.linspace(-1.0, 1.0, L)) * spread
    hi = 1.0 - 1.0 / units
    lo_d, hi_d = -1.0 - spread, 1.0 + spread  # a shift that clips everything to 0 / to hi
    for _ in range(100):  # bisection: the clipped mean grows monotonically with the shift
        mid = 0.5 * (lo_d + hi_d)
        if np.clip(ratio + offsets + mid, 0.0, hi).mean() < ratio:
            lo_d = mid
        else:
            hi_d = mid
    return np.clip(ratio + offsets + 0.5 * (lo_d + hi_d), 0.0, hi)


def _spread_counts(ratios: np.ndarray, units: int, total: int) -> np.ndarray:
    """Integer kept counts near (1 - r_i) · units, each in [1, units], summing to `total`
    (largest remainder: positions with the biggest fractional part get the extra units)."""
    exact = (1.0 - ratios) * units
    counts = np.clip(np.floor(exact + 1e-9).astype(np.int64), 1, units)
    order = np.lexsort((np.arange(len(exact)), -(exact - np.floor(exact + 1e-9))))
    while counts.sum() != total:
        step = 1 if counts.sum() < total else -1
        moved = False
        for i in (order if step > 0 else order[::-1]):
            if counts.sum() == total:
                break
            if 1 <= counts[i] + step <= units:
                counts[i] += step
                moved = True
        if not moved:
            break
    return counts


def _kept_per_group(ratio: float, groups: int, units: int, balance: str, spread: float,
                    rng: np.random.Generator, what: str) -> np.ndarray | int:
    """Kept units per group (array), or for 'unbalanced' the total kept over all groups (int)."""
    k = kept_count(ratio, units)
    if k < 1:
        raise UnreachableRatio(f"pruning ratio {ratio} leaves no {what} of {units} in each W_i",
                         f"use a ratio below {1 - 0.5 / units:.4f}")
    if balance == "balanced":
        return np.full(groups, k, dtype=np.int64)
    if balance == "spread":
        return _spread_counts(spread_ratios(ratio, spread, groups, units, rng), units, groups * k)
    total = kept_count(ratio, groups * units)
    if total < groups:
        raise UnreachableRatio(f"pruning ratio {ratio} leaves fewer {what}s than the {groups} matrices W_i",
                         "use a lower ratio: each W_i keeps at least one")
    return total


def _select(scores: np.ndarray, ratio: float, balance: str, spread: float, rng, what: str) -> np.ndarray:
    """bool keep[G, u] for unit scores[G, u] under the balance rule."""
    G, u = scores.shape
    kept = _kept_per_group(ratio, G, u, balance, spread, rng, what)
    if balance == "unbalanced":
        return _keep_global(scores, int(kept))
    return _keep_top(scores, kept)


# ---------------------------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Pruned:
    """A pruned W[L, n, c]: the mask, the compact form per pattern, and references.

    Compact forms (index arrays int32, sorted ascending; weights in W's dtype, contiguous):
      dense       compact_weights[i] = W_i
      fp, wsp-r   rows[i]: kept rows of W_i;    compact_weights[i] = W_i[rows[i]]     (k_i × c)
      wsp-c       cols[i]: kept columns of W_i; compact_weights[i] = W_i[:, cols[i]]  (n × k_i)
      wwp         csr[i] = (indptr[n+1], indices[nnz_i], data[nnz_i]); compact_weights[i] = data
      wsp-rb      as wsp-r; every block of `block` filters keeps the same count in every position
      wsp-cb      as wsp-c; cols[i] are whole blocks of 16 channels, the same count in every position
      bcbp        tile_cols[L, n_tiles, k]: kept columns of each row tile of tile_rows rows;
                  compact_weights[i][j] = W_i[j*t:(j+1)*t, tile_cols[i, j]]       (n_tiles × t × k)
    """

    pattern: str
    ratio: float                     # requested fraction of weights removed
    balance: str
    criterion: str
    spread: float
    weights: np.ndarray              # the unpruned W[L, n, c]
    mask: np.ndarray                 # bool [L, n, c]: True = kept
    kept_per_position: np.ndarray    # int64 [L]: kept units of each W_i
    units_per_position: int          # units each W_i has before pruning
    compact_weights: list[np.ndarray]
    rows: list[np.ndarray] | None = None
    cols: list[np.ndarray] | None = None
    csr: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
    tile_cols: np.ndarray | None = None
    tile_rows: int | None = None
    seed: int = 0
    block: int | None = None         # wsp-rb: filters per balanced block

    # -- shape and counts ---------------------------------------------------------------------
    @property
    def L(self) -> int:
        return self.weights.shape[0]

    @property
    def p(self) -> int:
        return math.isqrt(self.L)

    @property
    def n(self) -> int:
        return self.weights.shape[1]

    @property
    def c(self) -> int:
        return self.weights.shape[2]

    @property
    def unit(self) -> str:
        return UNIT_NAMES[self.pattern]

    @property
    def achieved_ratio(self) -> float:
        return 1.0 - float(self.mask.sum()) / self.mask.size

    @property
    def nnz_per_position(self) -> np.ndarray:
        return self.mask.sum(axis=(1, 2))

    @property
    def ratio_per_position(self) -> np.ndarray:
        return 1.0 - self.kept_per_position / self.units_per_position

    @property
    def energy_retained(self) -> float:
        """Share of the weights' squared L2 norm (group-LASSO energy) the mask keeps: an accuracy proxy."""
        w2 = self.weights.astype(np.float64) ** 2
        total = float(w2.sum())
        return float(w2[self.mask].sum()) / total if total > 0 else 1.0

    @property
    def is_balanced(self) -> bool:
        """Every W_i keeps the same number of units: one batched GEMM, no straggler."""
        return bool((self.kept_per_position == self.kept_per_position[0]).all())

    # -- forms for kernels ----------------------------------------------------------------------
    def dense_weights(self) -> np.ndarray:
        """W with pruned weights zeroed, [L, n, c] in W's dtype (what cuBLAS runs for verification)."""
        return np.where(self.mask, self.weights, np.zeros((), self.weights.dtype))

    def stacked_weights(self) -> np.ndarray:
        """compact_weights as one [L, ...] array (batched GEMM); needs equal kept counts."""
        self._require_balanced("stacked_weights")
        return np.stack(self.compact_weights)

    def stacked_indices(self) -> np.ndarray:
        """Kept rows (fp, wsp-r) / columns (wsp-c) as one int32 [L, k] array; bcbp: tile_cols."""
        if self.tile_cols is not None:
            return self.tile_cols
        idx = self.rows if self.rows is not None else self.cols
        if idx is None:
            raise Unsupported(f"pattern {self.pattern} has no kept-index arrays",
                              "use rows/cols patterns (fp, wsp-r, wsp-c, bcbp)")
        self._require_balanced("stacked_indices")
        return np.stack(idx)

    def _require_balanced(self, what: str) -> None:
        if not self.is_balanced:
            raise Unsupported(f"{what}: kept counts differ between positions ({self.balance} {self.pattern})",
                              "use the per-position lists (grouped GEMM) or balance='balanced'")

    def block_diagonal_csr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
        """WWP as one CSR of blockdiag(W_0, ..., W_{L-1}), shape (L·n, L·c): one SpMM with
        X reshaped to [L·c, T] gives Y as [L·n, T]. Returns (indptr, indices, data, shape), int32."""
        if self.csr is None:
            raise Unsupported(f"pattern {self.pattern} has no CSR form", "use pattern 'wwp'")
        indptrs, indices, data = [], [], []
        offset = 0
        for i, (ptr, idx, val) in enumerate(self.csr):
            indptrs.append(ptr[:-1] + offset)
            indices.append(idx + i * self.c)
            data.append(val)
            offset += int(ptr[-1])
        indptr = np.concatenate(indptrs + [np.array([offset])]).astype(np.int32)
        return (indptr, np.concatenate(indices).astype(np.int32), np.concatenate(data),
                (self.L * self.n, self.L * self.c))

    # -- references -----------------------------------------------------------------------------
    def _reference_input(self, X, dtype) -> tuple[np.ndarray, np.dtype]:
        """X[L, c, T] checked and cast to the reference's dtype (float64 or float32)."""
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float64), np.dtype(np.float32)):
            raise InputError(f"reference dtype {dtype!r}", "use numpy.float64 or numpy.float32")
        X = np.asarray(X)
        if X.ndim != 3 or X.shape[:2] != (self.L, self.c):
            raise InputError(f"X has shape {X.shape}", f"pass X[L={self.L}, c={self.c}, T]")
        return X.astype(dt, copy=False), dt

    def reference(self, X, dtype=np.float64) -> np.ndarray:
        """Y[L, n, T] = pruned W_i · X_i, from the compact form only (rows not kept are zero).
        X is [L, c, T] (unpadded); arithmetic in float64 or float32."""
        X, dt = self._reference_input(X, dtype)
        T = X.shape[2]
        Y = np.zeros((self.L, self.n, T), dtype=dt)
        cw = [w.astype(dt, copy=False) for w in self.compact_weights]
        if self.pattern == "dense":
            np.matmul(np.stack(cw), X, out=Y)
        elif self.rows is not None:          # fp, wsp-r: only the kept rows are computed
            for i, r in enumerate(self.rows):
                Y[i, r] = cw[i] @ X[i]
        elif self.cols is not None:          # wsp-c: gather X_i's rows along K
            for i, col in enumerate(self.cols):
                Y[i] = cw[i] @ X[i, col]
        elif self.csr is not None:           # wwp: scatter the CSR triplets back into W_i
            for i, (ptr, idx, val) in enumerate(self.csr):
                Wi = np.zeros((self.n, self.c), dtype=dt)
                Wi[np.repeat(np.arange(self.n), np.diff(ptr)), idx] = val
                Y[i] = Wi @ X[i]
        else:                                # bcbp: each row tile gathers its own K columns
            for i in range(self.L):
                Xg = X[i][self.tile_cols[i]]                    # [n_tiles, k, T]
                Y[i] = np.matmul(cw[i], Xg).reshape(self.n, T)  # [n_tiles, t, T]
        return Y

    def dense_reference(self, X, dtype=np.float64) -> np.ndarray:
        """Y = (W · mask) @ X: the check `reference` must equal."""
        dt = np.dtype(dtype)
        return np.matmul(self.dense_weights().astype(dt), np.asarray(X).astype(dt))


# ---------------------------------------------------------------------------------------------
# Building the compact forms
# ---------------------------------------------------------------------------------------------

def _sorted_true(row_mask: np.ndarray) -> np.ndarray:
    return np.flatnonzero(row_mask).astype(np.int32)


def _scores(shape: tuple[int, ...], norms: np.ndarray, criterion: str, rng) -> np.ndarray:
    return norms if criterion == "l2" else rng.random(shape)


def prune(W, pattern: str, ratio: float, *, balance: str = "balanced", criterion: str = "l2",
          tile_rows: int | None = None, spread: float = 0.0, seed: int = 0, block: int | None = None) -> Pruned:
    """Prune Winograd-domain weights W[L, n, c] to `ratio` (fraction removed) with `pattern`.

    criterion 'l2': group LASSO, keeps the units of largest L2 norm; 'random': seeded choice.
    balance 'balanced': every W_i keeps round((1-r)·units); 'unbalanced': one threshold over all p²
    matrices (each keeps >= 1 unit); 'spread': per-position ratios in [r - s, r + s], mean r.
    wsp-rb: rows of each W_i, the same count kept in every (position, block of `block` filters): the fused
    kernel's balanced unit (families/fused.py).
    wsp-cb: blocks of 16 input channels (columns) of each W_i, kept_count(ratio, c / 16) in every position: the
    fused kernel's chunk, whose product it skips where pruned (families/fused.py)."""
    W = check_weights(W)
    pattern = _check_choice(pattern, PATTERNS, "pruning pattern")
    balance = _check_choice(balance, BALANCES, "balance")
    criterion = _check_choice(criterion, CRITERIA, "pruning criterion")
    r = _check_ratio(ratio)
    if balance not in PATTERN_BALANCES[pattern]:
        raise InputError(f"pattern {pattern} cannot be {balance}",
                         f"{pattern} accepts balance {', '.join(PATTERN_BALANCES[pattern])}")
    try:
        s = float(spread)
    except (TypeError, ValueError):
        s = -1.0
    if not (math.isfinite(s) and s >= 0):
        raise InputError(f"spread {spread!r} is not a number >= 0", "use e.g. spread=0.1")
    if s and balance != "spread":
        raise InputError(f"spread={spread} given with balance {balance!r}", "use balance='spread' with a spread")
    if block is not None and pattern != "wsp-rb":
        raise InputError(f"block applies to wsp-rb only, not {pattern}", "leave block unset")
    if tile_rows is not None and pattern != "bcbp":
        raise InputError(f"tile_rows applies to bcbp only, not {pattern}", "leave tile_rows unset")
    if pattern == "dense" and r != 0.0:
        raise InputError(f"dense keeps every weight; ratio {r} asks to remove some",
                         "use ratio 0 with dense, or a pruning pattern")
    rng = np.random.default_rng(seed)
    L, n, c = W.shape
    common = dict(ratio=r, balance=balance, criterion=criterion, spread=s, weights=W, seed=seed)
    W64 = W.astype(np.float64)

    if pattern == "dense":
        return Pruned(pattern="dense", mask=np.ones(W.shape, bool), kept_per_position=np.full(L, n * c),
                      units_per_position=n * c, compact_weights=[W[i] for i in range(L)], **common)

    if pattern == "fp":
        norms = np.sqrt((W64 ** 2).sum(axis=(0, 2)))[None, :]            # [1, n]: p²·c weights each
        keep_rows = _select(_scores(norms.shape, norms, criterion, rng), r, "balanced", 0.0, rng, "filter")[0]
        rows = _sorted_true(keep_rows)
        mask = np.broadcast_to(keep_rows[None, :, None], W.shape).copy()
        return Pruned(pattern="fp", mask=mask, kept_per_position=np.full(L, len(rows)), units_per_position=n,
                      compact_weights=[np.ascontiguousarray(W[i, rows]) for i in range(L)],
                      rows=[rows.copy() for _ in range(L)], **common)

    if pattern == "wsp-r":
        norms = np.sqrt((W64 ** 2).sum(axis=2))                           # [L, n]
        keep = _select(_scores(norms.shape, norms, criterion, rng), r, balance, s, rng, "row")
        rows = [_sorted_true(keep[i]) for i in range(L)]
        return Pruned(pattern="wsp-r", mask=np.repeat(keep[:, :, None], c, axis=2),
                      kept_per_position=keep.sum(1), units_per_position=n,
                      compact_weights=[np.ascontiguousarray(W[i, rows[i]]) for i in range(L)], rows=rows, **common)

    if pattern == "wsp-rb":
        fb = _check_block(block, n, r)
        norms = np.sqrt((W64 ** 2).sum(axis=2))                           # [L, n]
        k = max(1, kept_count(r, fb))
        keep = np.zeros((L, n), dtype=bool)
        for b0 in range(0, n, fb):
            part = _scores((L, min(fb, n - b0)), norms[:, b0:b0 + fb], criterion, rng)
            kb = min(k, part.shape[1])
            top = np.argsort(-part, axis=1, kind="stable")[:, :kb]
            np.put_along_axis(keep[:, b0:b0 + fb], top, True, axis=1)
        rows = [_sorted_true(keep[i]) for i in range(L)]
        return Pruned(pattern="wsp-rb", mask=np.repeat(keep[:, :, None], c, axis=2),
                      kept_per_position=keep.sum(1), units_per_position=n,
                      compact_weights=[np.ascontiguousarray(W[i, rows[i]]) for i in range(L)], rows=rows,
                      block=fb, **common)

    if pattern == "wsp-cb":
        if c % WSP_CB_BLOCK:
            raise InputError(f"wsp-cb prunes blocks of {WSP_CB_BLOCK} input channels; c={c} is not a multiple of "
                             f"{WSP_CB_BLOCK}", "use a layer with c a multiple of 16, or wsp-c")
        nb = c // WSP_CB_BLOCK
        norms = np.sqrt((W64.reshape(L, n, nb, WSP_CB_BLOCK) ** 2).sum(axis=(1, 3)))   # [L, blocks]
        keep_b = _select(_scores(norms.shape, norms, criterion, rng), r, "balanced", 0.0, rng,
                         f"{WSP_CB_BLOCK}-channel block")
        keep = np.repeat(keep_b, WSP_CB_BLOCK, axis=1)                     # [L, c]
        cols = [_sorted_true(keep[i]) for i in range(L)]
        return Pruned(pattern="wsp-cb", mask=np.repeat(keep[:, None, :], n, axis=1),
                      kept_per_position=keep_b.sum(1), units_per_position=nb,
                      compact_weights=[np.ascontiguousarray(W[i][:, cols[i]]) for i in range(L)],
                      cols=cols, **common)

    if pattern == "wsp-c":
        norms = np.sqrt((W64 ** 2).sum(axis=1))                           # [L, c]
        keep = _select(_scores(norms.shape, norms, criterion, rng), r, balance, s, rng, "column")
        cols = [_sorted_true(keep[i]) for i in range(L)]
        return Pruned(pattern="wsp-c", mask=np.repeat(keep[:, None, :], n, axis=1),
                      kept_per_position=keep.sum(1), units_per_position=c,
                      compact_weights=[np.ascontiguousarray(W[i][:, cols[i]]) for i in range(L)],
                      cols=cols, **common)

    if pattern == "wwp":
        mags = np.abs(W64).reshape(L, n * c)
        keep = _select(_scores(mags.shape, mags, criterion, rng), r, balance, s, rng, "weight").reshape(W.shape)
        csr = []
        for i in range(L):
            rr, cc = np.nonzero(keep[i])                                  # row-major order: CSR order
            indptr = np.concatenate([[0], np.cumsum(keep[i].sum(1))]).astype(np.int32)
            csr.append((indptr, cc.astype(np.int32), np.ascontiguousarray(W[i][rr, cc])))
        return Pruned(pattern="wwp", mask=keep, kept_per_position=keep.sum((1, 2)), units_per_position=n * c,
                      compact_weights=[v for _, _, v in csr], csr=csr, **common)

    # bcbp: column segments of t rows inside each row tile; every tile keeps the same count
    t = check_tile_rows(tile_rows, n)
    nt = n // t
    norms = np.sqrt((W64.reshape(L, nt, t, c) ** 2).sum(axis=2)).reshape(L * nt, c)
    keep = _select(_scores(norms.shape, norms, criterion, rng), r, "balanced", 0.0, rng,
                   "column segment").reshape(L, nt, c)
    k = int(keep[0, 0].sum())
    tile_cols = np.sort(np.argsort(~keep, axis=2, kind="stable")[:, :, :k], axis=2).astype(np.int32)
    Wt = W.reshape(L, nt, t, c)
    compact = np.take_along_axis(Wt, tile_cols[:, :, None, :].astype(np.intp), axis=3)  # [L, nt, t, k]
    mask = np.repeat(keep[:, :, None, :], t, axis=2).reshape(L, n, c)
    return Pruned(pattern="bcbp", mask=mask, kept_per_position=np.full(L, nt * k), units_per_position=nt * c,
                  compact_weights=[np.ascontiguousarray(compact[i]) for i in range(L)],
                  tile_cols=tile_cols, tile_rows=t, **common)
