"""The fastest verified time of a layer shape under a pattern, ratio and balance, from result rows.

What `cutlass-wsp abwsp` and `cutlass-wsp network` read from a results file. Rows are looked up by the
layer's shape (c, n, H, W), batch, tile size p and dtype, not by network: a sweep measures each shape
once (its `layers` field names every layer with that shape), and a ResNet-34 layer has the time of the
ResNet-18 layer of the same shape. Only rows with status `ok` (verified, then timed) give a time;
among several implementations (and several rows of one shape) the fastest wins.

Two time bases:
  layer  `layer_ms`: the whole layer (input transform + GEMM batch + output transform, cuDNN's conv,
         or a fused layer kernel)
  gemm   `median_ms`: the Winograd GEMM batch alone; rows of whole-layer implementations (cuDNN's conv,
         the fused layer) have no GEMM batch and are left out
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from cutlass_wsp.errors import InputError

LAYER, GEMM = "layer", "gemm"
BASES = (LAYER, GEMM)
BASIS_FIELD = {LAYER: "layer_ms", GEMM: "median_ms"}
BASIS_WORDS = {LAYER: "whole layer (layer_ms)", GEMM: "GEMM batch only (median_ms)"}

# Implementations whose row times the whole layer and nothing else: median_ms is the layer time.
FUSED = "fused"


def unfused(impl: str) -> bool:
    """Every implementation but the fused layer kernel (cuDNN counts as unfused: it is the bar)."""
    return impl != FUSED


def fused_only(impl: str) -> bool:
    return impl == FUSED


def any_impl(impl: str) -> bool:
    return True


IMPL_SETS: dict[str, Callable[[str], bool]] = {"all": any_impl, "unfused": unfused, "fused": fused_only}


def _finite_pos(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def ratio_id(r) -> float | None:
    return None if r is None else round(float(r), 9)


@dataclass(frozen=True)
class Timed:
    """One verified row's time on one basis."""

    key: str
    pattern: str
    impl: str
    p: int | None
    ratio: float | None
    balance: str | None
    basis: str
    ms: float
    q1_ms: float | None = None
    q3_ms: float | None = None

    def spread_overlaps(self, other: Timed) -> bool:
        """The two rows' quartile ranges overlap: their difference is within the timing spread."""
        if None in (self.q1_ms, self.q3_ms, other.q1_ms, other.q3_ms):
            return False
        return self.q1_ms <= other.q3_ms and other.q1_ms <= self.q3_ms

    def to_dict(self) -> dict:
        return {"key": self.key, "pattern": self.pattern, "impl": self.impl, "p": self.p, "ratio": self.ratio,
                "balance": self.balance, "basis": self.basis, "ms": self.ms, "q1_ms": self.q1_ms,
                "q3_ms": self.q3_ms}


def _timed(r: Mapping, basis: str) -> Timed | None:
    if r.get("status") != "ok":
        return None
    impl = r.get("impl") or "?"
    if basis == GEMM:
        from cutlass_wsp.families.registry import layer_points

        if (r.get("pattern"), impl) in layer_points() or r.get("pattern") == "conv":   # whole layers: no GEMM time
            return None
        ms, q1, q3 = r.get("median_ms"), r.get("q1_ms"), r.get("q3_ms")
    else:
        ms, q1, q3 = r.get("layer_ms"), r.get("layer_q1_ms"), r.get("layer_q3_ms")
    if not _finite_pos(ms):
        return None
    return Timed(key=r["key"], pattern=r["pattern"], impl=impl, p=r.get("p"), ratio=r.get("ratio"),
                 balance=r.get("balance"), basis=basis, ms=float(ms),
                 q1_ms=float(q1) if _finite_pos(q1) else None, q3_ms=float(q3) if _finite_pos(q3) else None)


def one_gpu(rows: Iterable[Mapping]) -> str | None:
    """The GPU every row was measured on; InputError when rows come from several."""
    gpus = sorted({str(r.get("gpu")) for r in rows if r.get("gpu") is not None})
    if len(gpus) > 1:
        raise InputError(f"the results come from {len(gpus)} GPUs ({', '.join(gpus)})",
                         "pass the files of one GPU: times of different GPUs do not add up")
    return gpus[0] if gpus else None


class Measured:
    """Result rows indexed by (shape, batch, p, dtype, pattern, ratio, balance)."""

    def __init__(self, rows: Iterable[Mapping]):
        self.rows = [r for r in rows if isinstance(r.get("key"), str)]
        self.gpu = one_gpu(self.rows)
        self._index: dict[tuple, list[Mapping]] = {}
        for r in self.rows:
            self._index.setdefault(self._id(r.get("c"), r.get("n"), r.get("H"), r.get("W"), r.get("batch"),
                                            r.get("p"), r.get("dtype"), r.get("pattern"), r.get("ratio"),
                                            r.get("balance")), []).append(r)

    @staticmethod
    def _id(c, n, H, W, batch, p, dtype, pattern, ratio, balance) -> tuple:
        return (c, n, H, W, batch, p, dtype, pattern, ratio_id(ratio), balance)

    def _rows(self, shape, batch, p, dtype, patterns, ratio, balance) -> list[Mapping]:
        out: list[Mapping] = []
        for pat in patterns:
            pp = None if pat == "conv" else p
            out += self._index.get(self._id(*shape, batch, pp, dtype, pat, ratio, balance), [])
        return out

    def has_rows(self, shape, batch, p, dtype, patterns, ratio=None, balance=None,
                 impls: Callable[[str], bool] = any_impl) -> bool:
        """Any row (of any status) of an implementation `impls` keeps: the point was swept."""
        return any(impls(r.get("impl") or "?") for r in self._rows(shape, batch, p, dtype, patterns, ratio, balance))

    def fastest(self, shape, batch, p, dtype, patterns, ratio=None, balance=None, *, basis: str = LAYER,
                impls: Callable[[str], bool] = any_impl) -> Timed | None:
        """The fastest verified time on `basis` over `patterns` (alternatives, e.g. wsp-c and wsp-c-fused:
        one pruning, several implementations) and the implementations `impls` keeps. Ties: the first key
        in sorted order, so the answer does not depend on row order."""
        found = [t for r in self._rows(shape, batch, p, dtype, patterns, ratio, balance)
                 if impls(r.get("impl") or "?") and (t := _timed(r, basis)) is not None]
        return min(found, key=lambda t: (t.ms, t.key), default=None)

    def why_none(self, shape, batch, p, dtype, patterns, ratio=None, balance=None, *, basis: str = LAYER,
                 impls: Callable[[str], bool] = any_impl) -> str:
        """Why `fastest` found nothing: 'not measured', '2 wrong, 1 unsupported', 'no layer time (1 ok row)'."""
        rows = [r for r in self._rows(shape, batch, p, dtype, patterns, ratio, balance) if impls(r.get("impl") or "?")]
        if not rows:
            return "not measured"
        counts = Counter(str(r.get("status")) for r in rows if r.get("status") != "ok")
        ok = sum(r.get("status") == "ok" for r in rows)
        parts = [f"{n} {s}" for s, n in sorted(counts.items())]
        if ok:
            parts.append(f"{ok} ok row{'s' * (ok != 1)} without a {BASIS_FIELD[basis]}")
        return ", ".join(parts)

    def values(self, field: str) -> list:
        """The distinct values of a coordinate over the ok rows (e.g. 'batch', 'p', 'dtype'), None left out."""
        seen = {r.get(field) for r in self.rows if r.get("status") == "ok"}
        seen.discard(None)
        return sorted(seen)

    def ratios(self) -> list[float]:
        """Pruning ratios of the ok rows, sorted."""
        return sorted({ratio_id(r["ratio"]) for r in self.rows if r.get("status") == "ok" and r.get("ratio") is not None})
