"""The hybrid dense-block point (pattern 'hybrid', seed 004): the mask's dense blocks run as one BCBP
gather GEMM (families/bcbp.py's `Bcbp`, the gather_b kernel) and its re-pruned remainder through
cuSPARSE CSR SpMM on top of it (gpu/baselines.py's `CusparseCsr`, beta = 1), as one launch: the time
covers both, Y = blocks · X + remainder · X. The sweep checks that Y against the masked dense weights
of the final mask (`HybridPruned.mask` = blocks + remainder) like every GEMM-batch point.

The pruning (`dense_blocks.hybrid_from` of the spatial-Winograd masks, via seed_pruning.py) decides what
is a block (column segments at least `HYBRID_MIN_DENSITY` kept, padded to one k per launch) and what
re-pruning drops; the row's kernel_config["split"] records the split (block_nnz, remainder_nnz,
explicit_zeros, ...).
"""

from __future__ import annotations

from typing import Any

from cutlass_wsp.families.base import Cost, Family, KernelPlan, Op, PointContext, Serves, names

MODES = {"bcbp+cusparse-per-position": "per_position", "bcbp+cusparse-block-diag": "block_diag"}


def _parts(ctx: PointContext) -> tuple[Any, Any]:
    """(the blocks as a BCBP Pruned or None, the remainder as a WWP Pruned) of the point's pruning."""
    from cutlass_wsp.errors import InputError

    blocks = getattr(ctx.pruned, "blocks", None)
    if blocks is None:
        raise InputError(f"point {ctx.point.key} has no dense blocks (pattern {ctx.pruned.pattern})",
                         "run the hybrid family on pattern 'hybrid' (dense_blocks.hybrid_from)")
    return blocks.block_pruned(), blocks.remainder_pruned()


def _bcbp(ctx: PointContext, block_pruned: Any):
    from cutlass_wsp.families.bcbp import Bcbp

    return None if block_pruned is None else Bcbp(block_pruned, ctx.dt.name, ctx.Npad, arch=ctx.arch)


def hybrid_cost(ctx: PointContext, block_pruned: Any, remainder_nnz: int) -> Cost:
    """The two launches' floors added: each reads X, the blocks write Y and the remainder reads and
    writes it again."""
    from cutlass_wsp.families.bcbp import block_cols_cost
    from cutlass_wsp.families.cusparse import csr_cost

    pr, dt = ctx.problem, ctx.dt
    parts = [csr_cost(pr, dt, remainder_nnz)] if remainder_nnz else []
    if block_pruned is not None:
        parts.append(block_cols_cost(pr, dt, block_pruned.tile_cols))
    extra_y = dt.itemsize * pr.L * pr.M * pr.N if len(parts) == 2 else 0   # the remainder reads Y back
    return Cost(sum(c.flops for c in parts), sum(c.bytes for c in parts) + extra_y)


def split(pd: Any) -> dict:
    """How the hybrid pruning divides the kept weights (the row's kernel_config["split"]; the results
    schema has no columns of its own for them)."""
    b = pd.blocks
    return dict(block_nnz=b.block_nnz, remainder_nnz=b.remainder_nnz, block_share=round(b.block_share, 4),
                explicit_zeros=b.explicit_zeros, padded_fraction=round(b.padded_fraction, 4), dropped=b.dropped,
                tiles_without_remainder=round(b.tiles_without_remainder, 4), source_ratio=round(pd.source_ratio, 4),
                tile_rows=b.tile_rows, min_density=b.min_density)


class HybridFamily(Family):
    name = "hybrid"
    description = "dense blocks (BCBP gather GEMM) + CSR remainder (cuSPARSE), one point"
    order = 50
    serves = tuple(Serves("hybrid", impl, mode=mode,
                          description=f"gather_b on the dense blocks, then cuSPARSE CSR SpMM ({mode.replace('_', ' ')}) "
                                      "adding the remainder into Y")
                   for impl, mode in MODES.items())

    def plan(self, ctx: PointContext) -> KernelPlan | None:
        fam = _bcbp(ctx, _parts(ctx)[0])
        return None if fam is None else KernelPlan(tuple(fam.kernel_descs))

    def build(self, ctx: PointContext) -> Op:
        from cutlass_wsp.gpu import arrays
        from cutlass_wsp.gpu.baselines import CusparseCsr

        pr, dt, X, pd = ctx.problem, ctx.dt, ctx.X, ctx.pruned
        mode = self.serving(ctx.point).mode
        block_pruned, remainder = _parts(ctx)
        blocks = pd.blocks
        Y = arrays.empty((pr.L, pr.M, ctx.Npad), dt)
        launches, closers, kernels = [], [], []
        fam = _bcbp(ctx, block_pruned)
        if fam is not None:
            fam.setup(ctx.cache)
            launches.append(fam.prepare(X, Y))
            kernels.append(names(fam.kernel_descs))
        rem_nnz = int(blocks.remainder_nnz)
        if rem_nnz:
            sp = CusparseCsr(dt, remainder.csr, cols=pr.K, mode=mode, accumulate=fam is not None)
            launches.append(lambda: sp.run(X, Y))
            closers.append(sp.close)
            kernels.append(f"cusparseSpMM CSR_ALG2 {mode}" + (" beta=1" if fam is not None else ""))
        if not launches:                      # nothing kept at all: Y is zero
            launches.append(lambda: Y.fill(0))

        def launch() -> None:
            for run in launches:
                run()

        def close() -> None:
            for c in closers:
                c()

        fields = dict(nnz=int(pd.mask.sum()), kept_fraction=float(pd.mask.mean()))
        config = {"mode": mode, "alg": "CUSPARSE_SPMM_CSR_ALG2",
                  "kernels": [dict(name=d.name) for d in (fam.kernel_descs if fam is not None else [])],
                  "split": split(pd)}
        return Op(launch, Y, lambda: arrays.to_float32(Y, dt), " + ".join(kernels) or "memset",
                  hybrid_cost(ctx, block_pruned, rem_nnz), config, fields, close=close)


FAMILY = HybridFamily()
