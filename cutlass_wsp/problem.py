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

    def key_fields(self) -> dict[str, int]:
        """The extents a tuned kernel choice depends on (the tuning cache key's problem part)."""
        return {"L": int(self.L), "M": int(self.M), "N": int(self.N), "K": int(self.K)}


# ---------------------------------------------------------------------------------------------
# What the pruned families' kernels run, as the tuner and its cache see them
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GatherTuneProblem:
    """A fused WSP-C (gather_b) launch: L GEMMs of M x N x K whose B rows are K of the c rows of X_i
    (X viewed as X_flat[L*c, N]). `problem` is what the kernel runs (N = Npad, K = kept columns padded);
    c is what the gather picks from, so it is part of the tuning key."""

    problem: BatchProblem
    c: int

    def __post_init__(self) -> None:
        from cutlass_wsp.errors import InputError

        if not isinstance(self.problem, BatchProblem):
            raise InputError(f"a gather problem wraps a BatchProblem, got {type(self.problem).__name__}",
                             "pass GatherTuneProblem(BatchProblem(L, M, Npad, K), c)")
        if int(self.c) < 1 or min(self.problem.L, self.problem.M, self.problem.N, self.problem.K) < 1:
            raise InputError(f"gather problem {self.problem} with c={self.c}", "use extents >= 1")

    @property
    def L(self) -> int:
        return self.problem.L

    @property
    def M(self) -> int:
        return self.problem.M

    @property
    def N(self) -> int:
        return self.problem.N

    @property
    def K(self) -> int:
        return self.problem.K

    def key_fields(self) -> dict[str, int]:
        return {"L": self.L, "M": self.M, "N": self.N, "K": self.K, "c": int(self.c)}

    def __str__(self) -> str:
        return f"gather L={self.L} M={self.M} N={self.N} K={self.K} of c={self.c}"


@dataclass(frozen=True)
class GroupedTuneProblem:
    """An unbalanced WSP-R (grouped) launch: group i is a GEMM of Ms[i] x N x K (Ms = rows kept per
    position). The tuning key holds L, max M, N, K and a digest of the exact counts."""

    Ms: tuple[int, ...]
    N: int
    K: int

    def __post_init__(self) -> None:
        from cutlass_wsp.errors import InputError

        object.__setattr__(self, "Ms", tuple(int(m) for m in self.Ms))
        if not self.Ms or min(self.Ms) < 1 or int(self.N) < 1 or int(self.K) < 1:
            raise InputError(f"grouped problem with Ms={self.Ms[:8]}..., N={self.N}, K={self.K}",
                             "give one row count >= 1 per group and N, K >= 1")

    @property
    def L(self) -> int:
        return len(self.Ms)

    @property
    def M(self) -> int:
        """The largest group (the compact output's rows per position)."""
        return max(self.Ms)

    @property
    def digest(self) -> str:
        """12 hex digits of sha1 over the counts: the key names the exact split without listing it."""
        import hashlib

        return hashlib.sha1(",".join(map(str, self.Ms)).encode()).hexdigest()[:12]

    def key_fields(self) -> dict[str, int | str]:
        return {"L": self.L, "M": self.M, "N": int(self.N), "K": int(self.K), "Ms": self.digest}

    def __str__(self) -> str:
        return (f"grouped L={self.L} M={min(self.Ms)}..{self.M} (sum {sum(self.Ms)}) N={self.N} K={self.K} "
                f"Ms={self.digest}")
