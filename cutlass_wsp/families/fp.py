"""FP (filter pruning): the same n' filters survive in every W_i, so the batch stays one dense batched
GEMM with M = n': compact W[L, n', c] times X[L, c, Npad] gives the compact Yc[L, n', Npad].

The output convention is WSP-R's (cutlass_wsp/families/wsp_r.py): compact rows plus `row_index`
(here the same kept filters for every position); to_dense_output places them in a dense Y[L, n, Npad]
with the pruned filters' rows zero. For the next layer the pruned filters are simply absent channels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cutlass_wsp.errors import InputError
from cutlass_wsp.families.base import Cost, PointContext, PrunedFamily, Serves
from cutlass_wsp.families.wsp_r import RowLayout, WspR, row_layout, rows_cost
from cutlass_wsp.kernels.description import KernelDesc


def filter_layout(pruned: Any) -> RowLayout:
    """Check an FP `Pruned`: a row layout whose kept rows are the same in every position."""
    layout = row_layout(pruned, ("fp",), "FP")
    first = layout.rows[0]
    for i, r in enumerate(layout.rows[1:], start=1):
        if not np.array_equal(r, first):
            raise InputError(f"FP keeps different filters in position {i} than in position 0",
                             "filter pruning removes a filter from every W_i; use WSP-R for per-position rows")
    return layout


class Fp(WspR):
    """FP on the GPU: one dense batched launch with M = n' (see WspR for the call sequence)."""

    PATTERNS = ("fp",)
    NAME = "FP"

    def __init__(self, pruned: Any, dtype: str, N: int, *, arch: str | None = None, desc: KernelDesc | None = None,
                 tuned: Any = None):
        super().__init__(pruned, dtype, N, arch=arch, mode="batched", desc=desc, tuned=tuned)

    def _layout(self, pruned: Any) -> RowLayout:
        return filter_layout(pruned)

    @property
    def filters(self) -> np.ndarray:
        """The kept filters (output channels), int32 ascending."""
        return self.layout.rows[0]


class FpFamily(PrunedFamily):
    name = "fp"
    description = "FP: the same filters pruned in every position, one dense batched launch with M = n'"
    compact_rows = True
    serves = (Serves("fp", "cutlass", description="CUTLASS batched GEMM: one shape for all p² positions"),)

    def instance(self, ctx: PointContext) -> Fp:
        return Fp(ctx.pruned, ctx.dt.name, ctx.Npad, arch=ctx.arch, tuned=ctx.tuned)

    def cost(self, ctx: PointContext) -> Cost:
        return rows_cost(ctx.problem, ctx.dt, ctx.pruned.kept_per_position)


FAMILY = FpFamily()
