"""2:4 semi-structured sparsity (pattern '2:4'): every W_i keeps 2 of each 4 weights along c, run on the
sparse tensor cores through cuSPARSELt. No kernel of ours: two ways to call the library.

  cusparselt   the library through ctypes (gpu/cusparselt.py): one strided-batched cusparseLtMatmul over
               all p² positions, writing Y; plan and compressed weights made once, outside the timing.
  torch-cslt   torch's binding (gpu/torch_cslt.py): one torch._cslt_sparse_mm per position, each building
               its plan on the host and allocating its result, copied into Y[i]: what a torch user gets.

Both are checked by the sweep against the masked dense weights (`SemiStructured.dense_weights()`, the
2:4 mask) times X, like every GEMM-batch point, and the layer transforms wrap them for the layer time.
A missing library or a shape it refuses is Unsupported: the row's status is 'unsupported'.
"""

from __future__ import annotations

from cutlass_wsp.families.base import Cost, Family, Op, PointContext, Serves

BATCHED, PER_POSITION = "batched", "per_position"


def semi24_cost(problem, dt) -> Cost:
    """Half the MACs of the dense batch; W as its kept values plus 4 bits of metadata per group of 4
    (K/8 bytes a row), all of X, all of Y."""
    L, M, N, K, s = problem.L, problem.M, problem.N, problem.K, dt.itemsize
    w_bytes = L * M * (K // 2) * s + L * M * K // 8
    return Cost(float(2 * L * M * (K // 2) * N), float(w_bytes + s * L * (K * N + M * N)))


class Semi24Family(Family):
    name = "semi24"
    description = "2:4 semi-structured sparsity through cuSPARSELt (no kernel of ours)"
    order = 100
    serves = (
        Serves("2:4", "cusparselt", mode=BATCHED,
               description="cuSPARSELt through ctypes: one strided-batched call over all p² positions"),
        Serves("2:4", "torch-cslt", mode=PER_POSITION,
               description="torch's cuSPARSELt binding (torch._cslt_sparse_mm): one call per position, "
                           "each result copied into Y"),
    )

    def build(self, ctx: PointContext) -> Op:
        import numpy as np

        from cutlass_wsp.gpu import arrays

        pr, pd, dt, X = ctx.problem, ctx.pruned, ctx.dt, ctx.X
        mode = self.serving(ctx.point).mode
        Wd = arrays.from_host(np.ascontiguousarray(pd.dense_weights()), dt)
        Y = arrays.empty((pr.L, pr.M, ctx.Npad), dt)
        if mode == BATCHED:
            from cutlass_wsp.gpu.cusparselt import CusparseLtBatched

            lib = CusparseLtBatched(Wd, X, Y, dtype=dt.name)
            kernel, graphable = "cusparseLtMatmul strided-batched", True
        else:
            from cutlass_wsp.gpu.torch_cslt import TorchCslt

            lib = TorchCslt(Wd, X, Y, dtype=dt.name)
            kernel, graphable = f"torch._cslt_sparse_mm x{pr.L} + copy", False   # torch allocates: no capture
        del Wd          # compressed copies live in the library object
        nnz = int(pd.mask.sum())
        return Op(lambda: lib.run(X, Y), Y, lambda: arrays.to_float32(Y, dt), kernel, semi24_cost(pr, dt),
                  {"mode": mode, "library": getattr(lib, "version", None)},
                  dict(nnz=nnz, kept_fraction=float(pd.mask.mean())), close=lib.close, graphable=graphable)


FAMILY = Semi24Family()
