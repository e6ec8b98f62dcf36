"""The Winograd GEMM batch of one layer: Y_i[n x T] = W_i[n x c] . X_i[c x T] for i in 0..p^2-1.

EC2B layouts (row-major, contiguous): W[L, M, K], X[L, K, Npad], Y[L, M, Npad] with
L = p^2, M = n (filters), K = c (channels), N = T (tiles x batch). GPU buffers pad N up to
`Npad`, a multiple of 16 bytes, so every kernel can use 16-byte accesses; padded columns of X
are zero and padded columns of Y are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

from cutlass_wsp.dtypes import DType


def round_up(x: int, k: int) -> int:
    return -(-x // k) * k


@dataclass(frozen=True)
class BatchProblem:
    """L independent GEMMs of M x N x K (all equal). Grouped/unequal problems use a list of these."""

    L: int
    M: int
    N: int
    K: int

    def flops(self) -> int:
        return 2 * self.L * self.M * self.N * self.K

    def bytes_moved(self, dt: DType, out_itemsize: int | None = None) -> int:
        """Fewest bytes: W, X read once, Y written once."""
        o = dt.itemsize if out_itemsize is None else out_itemsize
        return self.L * (dt.itemsize * (self.M * self.K + self.K * self.N) + o * self.M * self.N)

    def npad(self, dt: DType) -> int:
        return round_up(self.N, dt.alignment)

    def floor_seconds(self, dt: DType, flop_rate: float, bandwidth: float) -> float:
        """Roofline floor: max(FLOPs / rate, bytes / bandwidth), rates in FLOP/s and B/s."""
        return max(self.flops() / flop_rate, self.bytes_moved(dt) / bandwidth)
