"""The per-layer plan: for each layer shape, which implementation runs the whole layer fastest.

Candidates are result rows with status ok (verified) and a whole-layer time `layer_ms`:
  cuDNN       the `conv` point: cuDNN's own convolution, the bar to beat
  dense       Winograd dense at each tile size p (each p is a candidate)
  pruned      every pruned pattern × implementation × balance × p, at its ratio
Pruned options compete only with each other at one ratio (accuracy differs by ratio), so the plan is
made per ratio: the best pruned option at that ratio, and the chosen option = the fastest of cuDNN,
Winograd dense and that ratio's pruned options (the unpruned ones are the baseline at every ratio).
Ties go to the simpler option: cuDNN, then Winograd dense (smaller p first), then pruned options.

Rows that are not ok (wrong, unsupported, ...) never compete, however fast; ok rows without
`layer_ms` (swept with --no-layer-time, or the layer could not be timed) are counted and left out.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

CUDNN, DENSE, PRUNED = "cudnn", "winograd-dense", "pruned"
_RANK = {CUDNN: 0, DENSE: 1, PRUNED: 2}
NO_LAYER_TIME = "no layer time"


def _finite_pos(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _ratio_id(r: float) -> float:
    return round(float(r), 9)


def _short_balance(b: str | None) -> str:
    return {"balanced": "bal", "unbalanced": "unbal"}.get(b, (b or "").replace("spread:", "spread"))


@dataclass(frozen=True)
class Option:
    """One way to run the layer, from one result row."""

    key: str
    kind: str                       # CUDNN, DENSE or PRUNED
    pattern: str
    impl: str
    p: int | None
    ratio: float | None
    balance: str | None
    layer_ms: float
    layer_q1_ms: float | None = None
    layer_q3_ms: float | None = None
    speedup_vs_cudnn: float | None = None    # cuDNN layer_ms / layer_ms
    speedup_vs_dense: float | None = None    # best Winograd dense layer_ms / layer_ms

    @property
    def label(self) -> str:
        """'cuDNN', 'dense p6 cutlass', 'wsp-r cutlass bal p4'."""
        if self.kind == CUDNN:
            return "cuDNN"
        bal = f" {_short_balance(self.balance)}" if self.balance else ""
        return f"{self.pattern} {self.impl}{bal} p{self.p}"

    def sort_key(self) -> tuple:
        return (self.layer_ms, _RANK[self.kind], self.p or 0, self.key)

    def to_dict(self) -> dict:
        return {"key": self.key, "kind": self.kind, "pattern": self.pattern, "impl": self.impl, "p": self.p,
                "ratio": self.ratio, "balance": self.balance, "layer_ms": self.layer_ms,
                "layer_q1_ms": self.layer_q1_ms, "layer_q3_ms": self.layer_q3_ms,
                "speedup_vs_cudnn": self.speedup_vs_cudnn, "speedup_vs_dense": self.speedup_vs_dense}


@dataclass(frozen=True)
class RatioPlan:
    """The plan at one pruning ratio."""

    ratio: float
    best_pruned: Option | None               # fastest pruned option at this ratio
    best_per_pattern: Mapping[str, Option]   # fastest option of each pruned pattern at this ratio
    chosen: Option | None                    # fastest of cuDNN, Winograd dense and best_pruned

    def to_dict(self) -> dict:
        return {"ratio": self.ratio, "best_pruned": self.best_pruned and self.best_pruned.to_dict(),
                "best_per_pattern": {k: v.to_dict() for k, v in self.best_per_pattern.items()},
                "chosen": self.chosen and self.chosen.to_dict()}


@dataclass(frozen=True)
class PlanEntry:
    """The plan of one layer shape of one network, batch, dtype and GPU."""

    gpu: str | None
    net: str
    layers: tuple[str, ...]
    c: int
    n: int
    H: int
    W: int
    batch: int
    dtype: str
    cudnn: Option | None
    winograd_dense: Option | None            # fastest Winograd dense over p
    dense_by_p: Mapping[int, Option]         # fastest Winograd dense of each p
    baseline: Option | None                  # fastest unpruned option: the choice where nothing is pruned
    ratios: tuple[RatioPlan, ...]
    ignored: Mapping[str, int] = field(default_factory=dict)   # rows left out, by status / NO_LAYER_TIME
    note: str | None = None                  # why there is no candidate, or which baseline is missing

    @property
    def has_candidates(self) -> bool:
        return self.baseline is not None or any(r.best_pruned for r in self.ratios)

    @property
    def shape(self) -> str:
        return f"{self.c}→{self.n}@{self.H}" + ("" if self.H == self.W else f"x{self.W}")

    def at(self, ratio: float | None) -> RatioPlan | None:
        if ratio is None:
            return None
        return next((r for r in self.ratios if _ratio_id(r.ratio) == _ratio_id(ratio)), None)

    def chosen(self, ratio: float | None) -> Option | None:
        """The chosen option at `ratio`; the fastest unpruned one when nothing was pruned to it."""
        rp = self.at(ratio)
        return rp.chosen if rp is not None and rp.chosen is not None else self.baseline

    def to_dict(self) -> dict:
        return {"gpu": self.gpu, "net": self.net, "layers": list(self.layers), "c": self.c, "n": self.n,
                "H": self.H, "W": self.W, "batch": self.batch, "dtype": self.dtype,
                "cudnn": self.cudnn and self.cudnn.to_dict(),
                "winograd_dense": self.winograd_dense and self.winograd_dense.to_dict(),
                "dense_by_p": {str(p): o.to_dict() for p, o in self.dense_by_p.items()},
                "baseline": self.baseline and self.baseline.to_dict(),
                "ratios": [r.to_dict() for r in self.ratios], "ignored": dict(self.ignored), "note": self.note}


def _kind(row: Mapping) -> str:
    if row.get("pattern") == "conv":
        return CUDNN
    return DENSE if row.get("pattern") == "dense" else PRUNED


def _option(row: Mapping) -> Option:
    return Option(key=row["key"], kind=_kind(row), pattern=row["pattern"], impl=row.get("impl") or "?",
                  p=row.get("p"), ratio=row.get("ratio"), balance=row.get("balance"),
                  layer_ms=float(row["layer_ms"]), layer_q1_ms=row.get("layer_q1_ms"),
                  layer_q3_ms=row.get("layer_q3_ms"))


def _fastest(options: Iterable[Option]) -> Option | None:
    return min(options, key=Option.sort_key, default=None)


def _group_id(row: Mapping) -> tuple:
    return (row.get("gpu"), row.get("net"), row.get("c"), row.get("n"), row.get("H"), row.get("W"),
            row.get("batch"), row.get("dtype"))


def plan_ratios(rows: Iterable[Mapping]) -> list[float]:
    """The pruning ratios the plan is made at: those of ok pruned rows with a layer time."""
    found = {_ratio_id(r["ratio"]) for r in rows
             if r.get("status") == "ok" and r.get("ratio") is not None and _finite_pos(r.get("layer_ms"))}
    return sorted(found)


def _why_none(ignored: Counter) -> str:
    if not ignored:
        return "no candidate: no rows"
    parts = []
    if ignored.get(NO_LAYER_TIME):
        parts.append(f"{ignored[NO_LAYER_TIME]} ok rows without a layer time (swept with --no-layer-time?)")
    parts += [f"{n} {s}" for s, n in sorted(ignored.items()) if s != NO_LAYER_TIME]
    return "no candidate: " + ", ".join(parts)


def _with_speedups(o: Option | None, cudnn: Option | None, dense: Option | None) -> Option | None:
    if o is None:
        return None
    return replace(o, speedup_vs_cudnn=cudnn.layer_ms / o.layer_ms if cudnn else None,
                   speedup_vs_dense=dense.layer_ms / o.layer_ms if dense else None)


def _entry(gid: tuple, rows: list[Mapping], ratios: list[float]) -> PlanEntry:
    gpu, net, c, n, H, W, batch, dtype = gid
    names: list[str] = []
    for r in rows:
        names.extend(x for x in (r.get("layers") or []) if x not in names)
    ignored: Counter = Counter()
    options: list[Option] = []
    for r in rows:
        if r.get("status") != "ok":
            ignored[str(r.get("status"))] += 1
        elif not _finite_pos(r.get("layer_ms")):
            ignored[NO_LAYER_TIME] += 1
        else:
            options.append(_option(r))

    cudnn = _fastest(o for o in options if o.kind == CUDNN)
    dense_by_p: dict[int, Option] = {}
    for o in sorted((o for o in options if o.kind == DENSE), key=Option.sort_key):
        dense_by_p.setdefault(o.p, o)
    dense = _fastest(dense_by_p.values())

    def sp(o: Option | None) -> Option | None:
        return _with_speedups(o, cudnn, dense)

    baseline = _fastest(o for o in (cudnn, dense) if o is not None)
    plans = []
    for q in ratios:
        at_q = [o for o in options if o.kind == PRUNED and o.ratio is not None and _ratio_id(o.ratio) == q]
        per_pattern: dict[str, Option] = {}
        for o in sorted(at_q, key=Option.sort_key):
            per_pattern.setdefault(o.pattern, sp(o))
        best = _fastest(at_q)
        chosen = _fastest(o for o in (baseline, best) if o is not None)
        plans.append(RatioPlan(q, sp(best), per_pattern, sp(chosen)))

    entry = PlanEntry(gpu=gpu, net=net, layers=tuple(names), c=c, n=n, H=H, W=W, batch=batch, dtype=dtype,
                      cudnn=sp(cudnn), winograd_dense=sp(dense), dense_by_p={p: sp(o) for p, o in dense_by_p.items()},
                      baseline=sp(baseline), ratios=tuple(plans), ignored=dict(ignored))
    if not entry.has_candidates:
        note = _why_none(ignored)
    else:
        missing = [what for what, o in (("cuDNN", cudnn), ("Winograd dense", dense)) if o is None]
        note = f"no {' or '.join(missing)} layer time: speedups over it unknown" if missing else None
    return replace(entry, note=note)


def plan_layers(rows: Iterable[Mapping]) -> list[PlanEntry]:
    """One PlanEntry per (GPU, network, layer shape, batch, dtype), in the order the rows first name them.
    A key seen twice on one GPU keeps its last row (a re-measured point replaces the old one)."""
    latest: dict[tuple, Mapping] = {}
    for r in rows:
        latest[(r.get("gpu"), r.get("key"))] = r
    rows = list(latest.values())
    ratios = plan_ratios(rows)
    groups: dict[tuple, list[Mapping]] = {}
    for r in rows:
        groups.setdefault(_group_id(r), []).append(r)
    return [_entry(gid, grows, ratios) for gid, grows in groups.items()]
