"""cuBLAS baselines (no kernel of ours): cublasGemmStridedBatchedEx called directly on the dense weights,
on the compacted rows (FP, balanced WSP-R), and after a row-gather pass (balanced WSP-C, the paper's two
passes). Each point's floor is its pattern's (a two-pass WSP-C and a fused one share one)."""

from __future__ import annotations

import numpy as np

from cutlass_wsp.families.base import ANY, BALANCED_ONLY, Family, Op, PointContext, Serves
from cutlass_wsp.families.dense import dense_cost, dense_fields
from cutlass_wsp.families.wsp_c import cols_cost
from cutlass_wsp.families.wsp_r import rows_cost

DESCRIPTION = "cuBLAS strided-batched GEMM (cublasGemmStridedBatchedEx) on the dense or compacted weights"


class CublasFamily(Family):
    name = "cublas"
    description = DESCRIPTION
    order = 100
    serves = (
        Serves("dense", "cublas", ANY, description=DESCRIPTION),
        Serves("fp", "cublas", ANY, description=DESCRIPTION),
        Serves("wsp-r", "cublas", BALANCED_ONLY, description=DESCRIPTION),
        Serves("wsp-c", "cublas", BALANCED_ONLY, description=DESCRIPTION),
    )

    def build(self, ctx: PointContext) -> Op:
        pattern = ctx.point.pattern
        if pattern == "dense":
            return _dense(ctx)
        if pattern == "wsp-c":
            return _cols(ctx)
        return _rows(ctx)


def _dense(ctx: PointContext) -> Op:
    from cutlass_wsp.gpu import arrays
    from cutlass_wsp.gpu.baselines import CublasBatched

    pr, dt, X = ctx.problem, ctx.dt, ctx.X
    W = arrays.from_host(ctx.pruned.weights.astype(np.float32), dt)
    Y = arrays.empty((pr.L, pr.M, ctx.Npad), dt)
    cb = CublasBatched(dt)
    return Op(lambda: cb.run(W, X, Y), Y, lambda: arrays.to_float32(Y, dt), "cublasGemmStridedBatchedEx",
              dense_cost(pr, dt), {"compute": "32F_FAST_TF32" if dt.name == "tf32" else "32F"}, dense_fields(pr))


def _rows(ctx: PointContext) -> Op:
    """cuBLAS on the compacted weights W_i[rows_i] (balanced: one M for every position)."""
    from cutlass_wsp.families.wsp_r import scatter_rows
    from cutlass_wsp.gpu import arrays
    from cutlass_wsp.gpu.baselines import CublasBatched

    pr, pd, dt, X = ctx.problem, ctx.pruned, ctx.dt, ctx.X
    Wc = arrays.from_host(pd.stacked_weights().astype(np.float32), dt)
    rows = pd.stacked_indices()
    Yc = arrays.empty((pr.L, Wc.shape[1], ctx.Npad), dt)
    cb = CublasBatched(dt)
    kept = pd.kept_per_position
    return Op(lambda: cb.run(Wc, X, Yc), Yc,
              lambda: arrays.to_float32(scatter_rows(Yc, rows.astype(np.int32), pr.M), dt),
              "cublasGemmStridedBatchedEx", rows_cost(pr, dt, kept), {"output": "compact rows"},
              dict(kept_m=[int(k) for k in kept], nnz=int(pd.mask.sum()), kept_fraction=float(pd.mask.mean())),
              rows=rows.astype(np.int32))


def _cols(ctx: PointContext) -> Op:
    """The paper's two passes with cuBLAS as the GEMM: gather X_i's kept rows, then one strided batch."""
    import cupy

    from cutlass_wsp.families.gather import Launches, RowGather
    from cutlass_wsp.families.wsp_c import column_layout
    from cutlass_wsp.gpu import arrays
    from cutlass_wsp.gpu.baselines import CublasBatched

    pr, pd, dt, X = ctx.problem, ctx.pruned, ctx.dt, ctx.X
    lay = column_layout(pd)
    K = lay.K(dt.alignment)
    Wc = arrays.from_host(np.ascontiguousarray(lay.padded_weights(K)), dt)
    index = cupy.asarray(np.ascontiguousarray(lay.global_index(K).reshape(-1)))
    Xg = arrays.empty((pr.L, K, ctx.Npad), dt)
    Y = arrays.empty((pr.L, pr.M, ctx.Npad), dt)
    cb = CublasBatched(dt)
    gather = RowGather().prepare(X, Xg, index)
    launch = Launches([gather, lambda: cb.run(Wc, Xg, Y)], (X, Y))
    return Op(launch, Y, lambda: arrays.to_float32(Y, dt), "row gather + cublasGemmStridedBatchedEx",
              cols_cost(pr, dt, pd.kept_per_position), {"K_padded": K},
              dict(kept_k=[int(k) for k in pd.kept_per_position], nnz=int(pd.mask.sum()),
                   kept_fraction=float(pd.mask.mean())))


FAMILY = CublasFamily()
