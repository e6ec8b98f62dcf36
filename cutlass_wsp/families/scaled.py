"""Scaled dense, the toy family (written by following docs/architecture.md, "Adding a family"): the dense
GEMM batch with its weights stored divided by a power-of-two scale s, as a per-layer quantization scale
folded out of the weights would be, and s multiplied back in the epilogue (the C ABI's alpha). A
power-of-two scale changes no mantissa, so the output is exactly the dense kernel's; the kernel family
is its own (`scaled_dense`, templates/scaled_dense_<arch>.cu.j2: the dense templates under another
name), untuned (it runs the dense default configuration).

Not in the default sweep: `cutlass-wsp sweep --pattern dense --impl dense=cutlass-scaled`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cutlass_wsp.errors import InputError
from cutlass_wsp.families.base import Family, KernelFamily, KernelPlan, Op, PointContext, Serves, kernel_config
from cutlass_wsp.families.dense import DenseBatch, dense_cost, dense_fields, kernel_problem
from cutlass_wsp.kernels.description import KernelDesc
from cutlass_wsp.problem import BatchProblem

SCALE = 4.0                      # a power of two: W / SCALE and alpha = SCALE are exact
KERNEL = "scaled_dense"


class ScaledDenseKernel(KernelFamily):
    name = KERNEL
    archs = ("sm90", "sm80")
    problem_type = BatchProblem
    tunable = False              # no menu: the dense default configuration

    def default(self, problem: BatchProblem, dtype: str, arch: str) -> KernelDesc:
        from cutlass_wsp.kernels.manifest import select

        return select(problem, dtype, arch, family=KERNEL)


SCALED_KERNEL = ScaledDenseKernel()


class ScaledBatch(DenseBatch):
    """DenseBatch for a scaled_dense kernel: Y[l] = alpha . W[l] . X[l] with alpha = `scale`."""

    def __init__(self, kernel: Any, scale: float = SCALE):
        if kernel.desc is None or kernel.desc.family != KERNEL:
            raise InputError(f"kernel {kernel.name} is not a {KERNEL!r} kernel", f"pick a KernelDesc(family={KERNEL!r})")
        self.kernel, self.desc, self.scale, self._workspace = kernel, kernel.desc, float(scale), None

    def arguments(self, W: Any, X: Any, Y: Any):
        args = super().arguments(W, X, Y)
        args.alpha = self.scale
        return args


class ScaledFamily(Family):
    name = "scaled"
    description = "dense GEMM batch on weights stored divided by a power-of-two scale, scaled back in the epilogue"
    kernels = (SCALED_KERNEL,)
    serves = (Serves("dense", "cutlass-scaled", default=False,
                     description="CUTLASS batched GEMM on weights stored / s, alpha = s in the epilogue (the toy "
                                 "family of docs/architecture.md)"),)

    def plan(self, ctx: PointContext) -> KernelPlan:
        problem = kernel_problem(ctx.point)
        return KernelPlan((SCALED_KERNEL.default(problem, ctx.dt.name, ctx.arch),))

    def build(self, ctx: PointContext) -> Op:
        import cupy

        from cutlass_wsp.gpu import arrays
        from cutlass_wsp.kernels.library import get_kernel

        (desc,) = self.plan(ctx).descs
        pr, dt, X = ctx.problem, ctx.dt, ctx.X
        w = ctx.pruned.weights.astype(np.float32) / SCALE
        Kpad = kernel_problem(ctx.point).K
        if Kpad != pr.K:   # the first layer (c = 3): zero channels, as the dense family pads them
            w = np.concatenate([w, np.zeros((pr.L, pr.M, Kpad - pr.K), np.float32)], axis=2)
            X = cupy.concatenate([X, cupy.zeros((pr.L, Kpad - pr.K, ctx.Npad), X.dtype)], axis=1)
        W = arrays.from_host(w, dt)
        Y = arrays.empty((pr.L, pr.M, ctx.Npad), dt)
        op = ScaledBatch(get_kernel(desc, ctx.cache))
        return Op(op.prepare(W, X, Y), Y, lambda: arrays.to_float32(Y, dt), op.kernel.name, dense_cost(pr, dt),
                  {**kernel_config(desc), "K_padded": Kpad, "scale": SCALE}, dense_fields(pr), x=X)


FAMILY = ScaledFamily()
