"""One regression benchmark per family on a representative layer: VGG-16 conv4_2 (512→512@28), batch 32,
p = 4 (F(2,3): L = 16 GEMMs of 512 × 6272 × 512), fp16 in, fp32 accumulate.

Each benchmark verifies its implementation against an fp32 cuBLAS reference of the same (pruned,
fp16-rounded) weights before it is timed; a wrong output fails the benchmark and nothing is stored.
A family this build or GPU cannot serve (Unsupported) is skipped with the reason.
`extra_info["key"]` is the sweep key of the same point, so a benchmark can be matched to a sweep row.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

NET, LAYER_NAME, C, N_FILTERS, HW = "vgg16", "vgg16.conv4_2", 512, 512, 28
BATCH, P, DTYPE, SEED = 32, 4, "fp16", 0

pytestmark = pytest.mark.benchmark(group=f"{LAYER_NAME} {C}→{N_FILTERS}@{HW} b{BATCH} p{P} {DTYPE}")


class Operands:
    """The layer's EC2B input on the GPU, its Winograd weights, pruned forms and references."""

    def __init__(self):
        from cutlass_wsp.gpu import arrays
        from cutlass_wsp.layers import Layer, layer_problem
        from cutlass_wsp.weights import he_winograd_weights

        self.layer = Layer(NET, LAYER_NAME, C, N_FILTERS, HW, HW)
        self.problem = layer_problem(self.layer, BATCH, P)          # N = T, unpadded
        self.L, self.M, self.K, self.T = self.problem.L, self.problem.M, self.problem.K, self.problem.N
        self.Npad = arrays.npad(self.T, DTYPE)
        self.weights = he_winograd_weights(self.layer, P, seed=SEED)  # float32 [L, n, c]
        self.X = arrays.padded_x(self.L, self.K, self.T, DTYPE, seed=SEED)
        self._pruned: dict = {}

    def pruned(self, pattern: str, ratio: float = 0.0, balance: str = "balanced"):
        from cutlass_wsp.pruning import prune

        key = (pattern, ratio, balance)
        if key not in self._pruned:
            self._pruned[key] = prune(self.weights, pattern, ratio, balance=balance, seed=SEED)
        return self._pruned[key]

    def reference(self, pruned, rows=None):
        """float32 [L, n, T]: fp32 cuBLAS (no TF32) of the masked weights, rounded to fp16 as the
        kernels see them, times the same X; with `rows` [L, k], only those rows of each position
        (a compact output)."""
        from cutlass_wsp.gpu import arrays
        from cutlass_wsp.gpu.baselines import CublasBatched

        W32 = arrays.to_float32(arrays.from_host(pruned.dense_weights().astype(np.float32), DTYPE), DTYPE)
        X32 = arrays.to_float32(self.X, DTYPE)
        Y32 = arrays.empty((self.L, self.M, self.Npad), "fp32")
        CublasBatched("fp32").run(W32, X32, Y32)
        if rows is not None:
            import cupy

            Y32 = Y32[cupy.arange(self.L)[:, None], cupy.asarray(rows)]
        return Y32[..., : self.T]

    def info(self, pattern: str, impl: str, ratio: float | None = None, balance: str | None = None) -> dict:
        from cutlass_wsp.sweep.plan import Point

        point = Point(NET, (LAYER_NAME,), C, N_FILTERS, HW, HW, BATCH, P, DTYPE, pattern, impl, ratio, balance)
        return {"key": point.key, "pattern": pattern, "impl": impl, "ratio": ratio, "balance": balance,
                "L": self.L, "M": self.M, "N": self.T, "Npad": self.Npad, "K": self.K}


@pytest.fixture(scope="module")
def ops() -> Operands:
    return Operands()


@contextlib.contextmanager
def skip_if_unsupported():
    from cutlass_wsp.errors import Unsupported

    try:
        yield
    except Unsupported as e:
        pytest.skip(f"unsupported on this GPU/build: {e}")


def _y(ops: Operands, rows: int | None = None):
    from cutlass_wsp.gpu.arrays import empty

    return empty((ops.L, ops.M if rows is None else rows, ops.Npad), DTYPE)


# ------------------------------------------------------------------------------------------- dense
def test_dense_cutlass(ops, gpu_bench):
    from cutlass_wsp.families.dense import DenseBatch
    from cutlass_wsp.gpu.arrays import from_host
    from cutlass_wsp.problem import BatchProblem

    with skip_if_unsupported():
        op = DenseBatch.for_problem(BatchProblem(ops.L, ops.M, ops.Npad, ops.K), DTYPE)
    W, Y = from_host(ops.weights, DTYPE), _y(ops)
    gpu_bench(op.prepare(W, ops.X, Y), out=Y, reference=lambda: ops.reference(ops.pruned("dense")),
              T=ops.T, dtype=DTYPE, K=ops.K,
              what=f"dense CUTLASS {op.kernel.name}", info={"kernel": op.kernel.name, **ops.info("dense", "cutlass")})


def test_dense_cublas(ops, gpu_bench):
    from cutlass_wsp.gpu.arrays import from_host
    from cutlass_wsp.gpu.baselines import CublasBatched

    cb = CublasBatched(DTYPE)
    W, Y = from_host(ops.weights, DTYPE), _y(ops)
    gpu_bench(lambda: cb.run(W, ops.X, Y), out=Y, reference=lambda: ops.reference(ops.pruned("dense")),
              T=ops.T, dtype=DTYPE, K=ops.K,
              what="dense cublasGemmStridedBatchedEx",
              info={"kernel": "cublasGemmStridedBatchedEx", **ops.info("dense", "cublas")})


# ------------------------------------------------------------------------------------------ pruned
def test_wsp_r_balanced_cutlass(ops, gpu_bench):
    from cutlass_wsp.families.wsp_r import WspR

    pruned = ops.pruned("wsp-r", 0.7, "balanced")
    with skip_if_unsupported():
        fam = WspR(pruned, DTYPE, ops.Npad, mode="batched").setup()
    Yc = fam.output()
    # the compact output Yc[L, n', Npad] is checked against the kept rows of the reference
    gpu_bench(fam.prepare(ops.X, Yc), out=Yc, reference=lambda: ops.reference(pruned, fam.row_index),
              T=ops.T, dtype=DTYPE, K=ops.K,
              what=f"WSP-R balanced 0.7 batched {fam.desc.name}",
              info={"kernel": fam.desc.name, "kept_rows": fam.M, **ops.info("wsp-r", "cutlass", 0.7, "balanced")})


@pytest.mark.parametrize("mode", ["two_pass", "fused"])
def test_wsp_c_balanced(ops, gpu_bench, mode):
    from cutlass_wsp.families.wsp_c import WspC

    pruned = ops.pruned("wsp-c", 0.7, "balanced")
    with skip_if_unsupported():
        fam = WspC(pruned, DTYPE, ops.Npad, mode=mode).setup()
    Y = fam.output()
    pattern = "wsp-c-fused" if mode == "fused" else "wsp-c"
    gpu_bench(fam.prepare(ops.X, Y), out=Y, reference=lambda: ops.reference(pruned),
              T=ops.T, dtype=DTYPE, K=fam.K,
              what=f"WSP-C balanced 0.7 {mode} {fam.desc.name}",
              info={"kernel": fam.desc.name, "mode": mode, "kept_cols_padded": fam.K,
                    **ops.info(pattern, "cutlass", 0.7, "balanced")})


def test_wwp_cusparse(ops, gpu_bench):
    from cutlass_wsp.gpu.baselines import CusparseCsr

    pruned = ops.pruned("wwp", 0.9, "balanced")
    Y = _y(ops)
    with skip_if_unsupported(), CusparseCsr(DTYPE, pruned.csr, cols=ops.K, mode="block_diag") as sp:
        gpu_bench(lambda: sp.run(ops.X, Y), out=Y, reference=lambda: ops.reference(pruned),
                  T=ops.T, dtype=DTYPE, K=ops.K,
                  what="WWP 0.9 cuSPARSE CSR SpMM (ALG2, block-diagonal)",
                  info={"kernel": "cusparseSpMM CSR_ALG2 block_diag", "nnz": int(pruned.mask.sum()),
                        **ops.info("wwp", "cusparse-block-diag", 0.9)})
