"""cuSPARSE baselines (no kernel of ours) for element-wise pruning (WWP, and the spatial-Winograd masks of
seed 003): CSR SpMM with CSR_ALG2 on row-major operands, one call per Winograd position or one call on a
block-diagonal matrix of all p²."""

from __future__ import annotations

from cutlass_wsp.families.base import ANY, Cost, Family, Op, PointContext, Serves


def csr_cost(problem, dt, nnz: int) -> Cost:
    """WWP: nnz values with a 4-byte column index each, row pointers, all of X, all of Y."""
    L, M, N, K, s = problem.L, problem.M, problem.N, problem.K, dt.itemsize
    return Cost(float(2 * nnz * N), float(nnz * (s + 4) + L * (M + 1) * 4 + s * L * (K * N + M * N)))


class CusparseFamily(Family):
    name = "cusparse"
    description = "cuSPARSE CSR SpMM (CUSPARSE_SPMM_CSR_ALG2)"
    order = 100
    # the spatial-Winograd masks (seed 003) are element-sparse like WWP's: the same two CSR baselines
    serves = tuple(
        Serves(pattern, impl, ANY, mode=mode, description=description)
        for pattern in ("wwp", "spatial-winograd")
        for impl, mode, description in (
            ("cusparse-per-position", "per_position", "cuSPARSE CSR SpMM, one call per Winograd position"),
            ("cusparse-block-diag", "block_diag",
             "cuSPARSE CSR SpMM on one block-diagonal matrix of all p² positions"),
        ))

    def build(self, ctx: PointContext) -> Op:
        from cutlass_wsp.gpu import arrays
        from cutlass_wsp.gpu.baselines import CusparseCsr

        pr, pd, dt, X = ctx.problem, ctx.pruned, ctx.dt, ctx.X
        mode = self.serving(ctx.point).mode
        Y = arrays.empty((pr.L, pr.M, ctx.Npad), dt)
        sp = CusparseCsr(dt, pd.csr, cols=pr.K, mode=mode)
        nnz = int(pd.mask.sum())
        return Op(lambda: sp.run(X, Y), Y, lambda: arrays.to_float32(Y, dt), f"cusparseSpMM CSR_ALG2 {mode}",
                  csr_cost(pr, dt, nnz), {"mode": mode, "alg": "CUSPARSE_SPMM_CSR_ALG2"},
                  dict(nnz=nnz, kept_fraction=float(pd.mask.mean())), close=sp.close)


FAMILY = CusparseFamily()
