"""Dense blocks inside an element-sparse Winograd-domain mask, and performance-aware re-pruning (seed 004:
M. A. Rumi, X. Ma, Y. Wang and P. Jiang, "Accelerating Sparse CNN Inference on GPUs with
Performance-Aware Weight Pruning", PACT'20, doi:10.1145/3410463.3414648).

The paper's idea (its abstract, `../shared/seeds/004_*.txt`): "extract dense blocks of non-zeros in the
sparse convolution kernels, and use dense matrix-matrix multiplication for these dense blocks ... For
cases where many non-zero weights cannot be grouped into dense blocks, we propose a performance-aware
re-pruning strategy that removes the least important weights in the sparse kernels." Here the sparse
kernels are the p² matrices W_i[n, c] of a WWP-style mask, and a dense block is the shape the BCBP
gather kernel runs (families/bcbp.py): row tile j of W_i (t rows) times the set of columns that tile
keeps, Y_i[tile j] = W_i[tile j, cols] · X_i[cols, :].

Extraction (`extract_dense_blocks`): column k of row tile j of W_i is a *block column* when at least
`min_density` of its t entries are kept (1.0, the default: only all-nonzero column segments, "dense
blocks of non-zeros"; lower values let a block carry explicit zeros, which costs tensor-core work but
removes those nonzeros from the CSR remainder). Every kept weight outside the block columns is the
*remainder*, run as CSR (cuSPARSE SpMM). Blocks + remainder = the masked GEMM, exactly.

Re-pruning (`reprune`): drop remainder weights in ascending order of importance (|w| by default, or a
given score, e.g. spatial_winograd's |U|·F) while the dropped weights' squared norm stays within
`max_energy_loss` (a share of the unpruned layer's squared norm, the same measure as
`Pruned.energy_retained`). Blocks are never touched: dropping a weight inside a block saves no work. A
row tile whose remainder is empty runs as pure dense blocks; `tiles_without_remainder` counts them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from cutlass_wsp.element_masks import check_mask, element_pruned
from cutlass_wsp.errors import InputError
from cutlass_wsp.pruning import Pruned, check_tile_rows, check_weights


@dataclass(frozen=True, eq=False)
class DenseBlocks:
    """An element mask over W[L, n, c] split into dense blocks (per row tile of `tile_rows` rows: the
    block columns `block_cols[i, j]`) and a CSR remainder."""

    weights: np.ndarray       # the unpruned W[L, n, c]; energy shares are relative to it
    mask: np.ndarray          # bool [L, n, c]: the weights kept (blocks + remainder)
    tile_rows: int
    block_cols: np.ndarray    # bool [L, n_tiles, c]: column segments computed as dense blocks
    min_density: float
    dropped: int = 0          # weights removed by reprune (already absent from mask)

    @property
    def L(self) -> int:
        return self.weights.shape[0]

    @property
    def n(self) -> int:
        return self.weights.shape[1]

    @property
    def c(self) -> int:
        return self.weights.shape[2]

    @property
    def n_tiles(self) -> int:
        return self.n // self.tile_rows

    # -- masks and counts ---------------------------------------------------------------------
    @property
    def block_area(self) -> np.ndarray:
        """bool [L, n, c]: every entry a block computes (kept weights and explicit zeros)."""
        return np.repeat(self.block_cols[:, :, None, :], self.tile_rows, axis=2).reshape(self.weights.shape)

    @property
    def block_mask(self) -> np.ndarray:
        """bool [L, n, c]: kept weights inside blocks."""
        return self.mask & self.block_area

    @property
    def remainder_mask(self) -> np.ndarray:
        """bool [L, n, c]: kept weights outside blocks (the CSR part)."""
        return self.mask & ~self.block_area

    @property
    def k_per_tile(self) -> np.ndarray:
        """int [L, n_tiles]: block columns of each row tile."""
        return self.block_cols.sum(axis=2)

    @property
    def nnz(self) -> int:
        return int(self.mask.sum())

    @property
    def block_nnz(self) -> int:
        return int(self.block_mask.sum())

    @property
    def remainder_nnz(self) -> int:
        return int(self.remainder_mask.sum())

    @property
    def explicit_zeros(self) -> int:
        """Entries blocks compute that the mask removed (0 when min_density = 1)."""
        return int(self.block_cols.sum()) * self.tile_rows - self.block_nnz

    @property
    def block_share(self) -> float:
        """Share of the kept weights that run in dense blocks."""
        return self.block_nnz / self.nnz if self.nnz else 1.0

    @property
    def tiles_without_remainder(self) -> float:
        """Share of the L·n_tiles row tiles with no CSR remainder."""
        rem = self.remainder_mask.reshape(self.L, self.n_tiles, self.tile_rows, self.c).any(axis=(2, 3))
        return 1.0 - float(rem.mean())

    @property
    def achieved_ratio(self) -> float:
        return 1.0 - self.nnz / self.mask.size

    @property
    def energy_retained(self) -> float:
        """Share of the unpruned weights' squared norm the mask keeps (as Pruned.energy_retained)."""
        w2 = self.weights.astype(np.float64) ** 2
        total = float(w2.sum())
        return float(w2[self.mask].sum()) / total if total > 0 else 1.0

    # -- forms for kernels --------------------------------------------------------------------
    def tile_cols(self) -> list[list[np.ndarray]]:
        """Block columns per (position, row tile), int32, ascending (unequal lengths)."""
        return [[np.flatnonzero(self.block_cols[i, j]).astype(np.int32) for j in range(self.n_tiles)]
                for i in range(self.L)]

    def block_pruned(self) -> Pruned | None:
        """The blocks as a BCBP `Pruned` (families/bcbp.py runs it): every row tile padded to the largest
        block-column count k with columns it does not use (lowest indices first), whose weights are zero,
        so the layout is the equal-k one the gather kernel takes. weights = the kept block weights (zero
        elsewhere). None when no tile has a block."""
        k = int(self.k_per_tile.max())
        if k == 0:
            return None
        L, nt, t, c = self.L, self.n_tiles, self.tile_rows, self.c
        Wb = np.where(self.block_mask, self.weights, np.zeros((), self.weights.dtype))
        tile_cols = np.empty((L, nt, k), dtype=np.int32)
        for i in range(L):
            for j in range(nt):
                used = self.block_cols[i, j]
                pad = np.flatnonzero(~used)[: k - int(used.sum())]
                tile_cols[i, j] = np.sort(np.concatenate([np.flatnonzero(used), pad]))
        compact = np.take_along_axis(Wb.reshape(L, nt, t, c), tile_cols[:, :, None, :].astype(np.intp), axis=3)
        segs = np.zeros((L, nt, c), dtype=bool)
        np.put_along_axis(segs, tile_cols.astype(np.intp), True, axis=2)
        mask = np.repeat(segs[:, :, None, :], t, axis=2).reshape(L, self.n, c)
        return Pruned(pattern="bcbp", ratio=1.0 - k / c, balance="balanced", criterion="dense-blocks", spread=0.0,
                      weights=Wb, mask=mask, kept_per_position=np.full(L, nt * k, dtype=np.int64),
                      units_per_position=nt * c, compact_weights=[np.ascontiguousarray(compact[i]) for i in range(L)],
                      tile_cols=tile_cols, tile_rows=t)

    @property
    def padded_fraction(self) -> float:
        """Share of the padded block layout's column segments that are padding (work the equal-k BCBP
        layout adds on top of the blocks)."""
        k = int(self.k_per_tile.max())
        total = self.L * self.n_tiles * k
        return 1.0 - float(self.block_cols.sum()) / total if total else 0.0

    def remainder_pruned(self) -> Pruned:
        """The remainder as a WWP `Pruned` (per-position CSR, the cuSPARSE baseline's input)."""
        rem = self.remainder_mask
        return element_pruned(self.weights, rem, pattern="wwp", ratio=1.0 - float(rem.mean()), criterion="remainder")

    # -- references ---------------------------------------------------------------------------
    def reference(self, X, dtype=np.float64) -> np.ndarray:
        """Y[L, n, T] = blocks · X + remainder · X, each from its own compact form (BCBP gather, CSR)."""
        Y = self.remainder_pruned().reference(X, dtype)
        blocks = self.block_pruned()
        if blocks is not None:
            Y = Y + blocks.reference(X, dtype)
        return Y

    def dense_reference(self, X, dtype=np.float64) -> np.ndarray:
        """(W ⊙ mask) @ X: what `reference` must equal."""
        dt = np.dtype(dtype)
        Wm = np.where(self.mask, self.weights, np.zeros((), self.weights.dtype)).astype(dt)
        return np.matmul(Wm, np.asarray(X).astype(dt))


def extract_dense_blocks(W, mask, *, tile_rows: int | None = None, min_density: float = 1.0) -> DenseBlocks:
    """Split the element mask (bool [L, n, c], True = kept) over W[L, n, c] (the unpruned weights) into
    dense blocks and a CSR remainder. A column segment (t rows of one row tile) is a block column when at
    least `min_density` (in (0, 1]) of its entries are kept. `tile_rows` defaults to BCBP's (32 when it
    divides n). Pass a `Pruned`'s `weights` and `mask` (e.g. a WWP or spatial-Winograd one)."""
    W = check_weights(W, winograd=False)
    mask = check_mask(mask, W.shape)
    t = check_tile_rows(tile_rows, W.shape[1])
    try:
        d = float(min_density)
    except (TypeError, ValueError):
        d = -1.0
    if not (0.0 < d <= 1.0):
        raise InputError(f"min_density={min_density!r}", "use a fraction in (0, 1], e.g. 1.0 (only all-nonzero segments)")
    L, n, c = W.shape
    kept = mask.reshape(L, n // t, t, c).sum(axis=2)                           # [L, n_tiles, c]
    need = int(np.ceil(d * t - 1e-9))
    block_cols = (kept >= max(need, 1))
    return DenseBlocks(weights=W, mask=mask.copy(), tile_rows=t, block_cols=block_cols, min_density=d)


def reprune(blocks: DenseBlocks, max_energy_loss: float, *, importance=None) -> DenseBlocks:
    """Performance-aware re-pruning: drop remainder weights, least important first (|w|, or `importance`
    [L, n, c] where larger = more important; ties: lower flat index first), as long as the dropped
    weights' squared norm is at most `max_energy_loss` times the unpruned layer's (so energy_retained
    falls by at most that much). Blocks stay as they are. Returns a new DenseBlocks."""
    if not isinstance(blocks, DenseBlocks):
        raise InputError(f"reprune takes DenseBlocks, got {type(blocks).__name__}", "call extract_dense_blocks first")
    try:
        budget = float(max_energy_loss)
    except (TypeError, ValueError):
        budget = -1.0
    if not (0.0 <= budget <= 1.0):
        raise InputError(f"max_energy_loss={max_energy_loss!r}",
                         "give the share of the layer's squared L2 norm re-pruning may remove, e.g. 0.01")
    W64 = blocks.weights.astype(np.float64)
    if importance is None:
        score = np.abs(W64)
    else:
        score = np.asarray(importance, dtype=np.float64)
        if score.shape != W64.shape or not np.isfinite(score).all():
            raise InputError(f"importance has shape {score.shape}", f"pass finite scores of shape {W64.shape}")
    rem = np.flatnonzero(blocks.remainder_mask.ravel())
    total = float((W64 ** 2).sum())
    if rem.size == 0 or total <= 0:
        return blocks
    order = rem[np.argsort(score.ravel()[rem], kind="stable")]
    spent = np.cumsum(W64.ravel()[order] ** 2) / total
    count = int(np.searchsorted(spent, budget + 1e-15, side="right"))
    mask = blocks.mask.copy()
    mask.ravel()[order[:count]] = False
    return replace(blocks, mask=mask, dropped=blocks.dropped + count)


# ---------------------------------------------------------------------------------------------
# The hybrid point's pruning (pattern 'hybrid', families/hybrid.py runs it)
# ---------------------------------------------------------------------------------------------

HYBRID = "hybrid"
# A column segment is a block column when at least half its t entries are kept. On the spatial-Winograd
# masks of He-initialised weights no 32-row segment is fully kept (inner positions keep ~50% of their
# weights, corner ones ~20%), so min_density = 1.0 would leave no blocks and the point would be CSR
# alone; at 0.5 about 30% of the kept weights run in blocks (docs/pruning.md, "The hybrid point").
HYBRID_MIN_DENSITY = 0.5
# Re-pruning budget: the dropped remainder weights may carry at most 1% of the layer's squared norm.
HYBRID_MAX_ENERGY_LOSS = 0.01


@dataclass(frozen=True, eq=False)
class HybridPruned(Pruned):
    """A `Pruned` (pattern 'hybrid', WWP's CSR form of the final mask) with its split: `blocks`
    (DenseBlocks, re-pruned) runs its block columns as one BCBP gather GEMM and its remainder as CSR.
    mask = blocks.mask, so the masked dense weights are exactly what blocks + remainder compute."""

    blocks: DenseBlocks | None = None
    source_ratio: float = 0.0          # the achieved ratio of the mask the blocks came from

    @property
    def unit(self) -> str:
        return "weight"


def hybrid_from(pruned: Pruned, *, min_density: float = HYBRID_MIN_DENSITY,
                max_energy_loss: float = HYBRID_MAX_ENERGY_LOSS, tile_rows: int | None = None) -> HybridPruned:
    """The hybrid point's pruning from an element-sparse `Pruned` (a spatial-Winograd or WWP one): dense
    blocks at `min_density`, then `reprune` of the remainder within `max_energy_loss`, by the source's
    `importance_scores()` where it has them (spatial-Winograd's |U|·F), else |w|."""
    blocks = extract_dense_blocks(pruned.weights, pruned.mask, tile_rows=tile_rows, min_density=min_density)
    scores = getattr(pruned, "importance_scores", None)
    blocks = reprune(blocks, max_energy_loss, importance=scores() if callable(scores) else None)
    return element_pruned(pruned.weights, blocks.mask, pattern=HYBRID, ratio=pruned.ratio, criterion="dense-blocks",
                          cls=HybridPruned, blocks=blocks, source_ratio=float(pruned.achieved_ratio))
