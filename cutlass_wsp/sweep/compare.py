"""Regression check between two result files: match points by key, ratio = candidate / baseline time,
a regression is a point slower by more than the threshold or a point that worked and no longer does.
Times from different GPUs are not comparable, so such files are refused unless asked."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cutlass_wsp.errors import InputError

METRICS = ("median_ms", "min_ms", "q1_ms", "q3_ms", "layer_ms")   # layer_ms: the whole layer (schema LAYER_FIELDS)

# Verdicts of one matched point. 'slower' and 'broke' are regressions.
SLOWER, FASTER, SAME, BROKE, FIXED, NOT_OK, NO_METRIC = (
    "slower", "faster", "same", "broke", "fixed", "not ok", "no metric")
REGRESSION_VERDICTS = (SLOWER, BROKE)


def parse_metric(text: str) -> str:
    name = text.strip()
    name = name if name.endswith("_ms") else f"{name}_ms"
    if name not in METRICS:
        raise InputError(f"unknown metric {text!r}", f"use one of {', '.join(m[:-3] for m in METRICS)}")
    return name


def parse_threshold(text: str | float) -> tuple[str | None, float]:
    """'5%', '0.05' or 'min:5%' → (metric or None, 0.05). The threshold is the slowdown a point may
    show before it counts as a regression: 0 or more (a negative one, 'must get faster', is refused)."""
    metric = None
    if isinstance(text, str) and ":" in text:
        m, _, text = text.partition(":")
        metric = parse_metric(m)
    s = str(text).strip()
    try:
        value = float(s[:-1]) / 100 if s.endswith("%") else float(s)
    except ValueError:
        raise InputError(f"--threshold {s!r} is not a number", "write it as 5% or 0.05") from None
    if not math.isfinite(value):
        raise InputError(f"--threshold {s!r} is not finite", "write it as 5% or 0.05")
    if value < 0:
        raise InputError(f"--threshold {s!r} is negative: it is how much slower a point may get before it "
                         "counts as a regression", "write 0 or more, e.g. 5% or 0.05")
    if not s.endswith("%") and value >= 1:
        raise InputError(f"--threshold {s!r} would allow a {value:.0%} slowdown",
                         f"write a percentage ({s}%) or a fraction (0.05 = 5%)")
    return metric, value


@dataclass(frozen=True)
class Entry:
    key: str
    base: float | None      # baseline time (the metric), None when not ok
    new: float | None
    ratio: float | None     # new / base
    verdict: str
    base_status: str
    new_status: str

    @property
    def is_regression(self) -> bool:
        return self.verdict in REGRESSION_VERDICTS


@dataclass
class Comparison:
    entries: list[Entry]
    only_base: list[str]
    only_new: list[str]
    threshold: float
    metric: str
    base_gpus: set[str] = field(default_factory=set)
    new_gpus: set[str] = field(default_factory=set)

    @property
    def regressions(self) -> list[Entry]:
        return [e for e in self.entries if e.is_regression]

    def count(self, verdict: str) -> int:
        return sum(e.verdict == verdict for e in self.entries)

    def geomean_ratio(self) -> float | None:
        ratios = [e.ratio for e in self.entries if e.ratio is not None and e.ratio > 0]
        return math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else None


def gpus_of(rows: Iterable[Mapping]) -> set[str]:
    return {r["gpu"] for r in rows if r.get("gpu")}


def _value(row: Mapping, metric: str) -> float | None:
    v = row.get(metric)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
    return float(v) if ok else None


def _judge(b: Mapping, n: Mapping, metric: str, threshold: float) -> Entry:
    bs, ns = b.get("status"), n.get("status")
    bv = _value(b, metric) if bs == "ok" else None
    nv = _value(n, metric) if ns == "ok" else None
    ratio = nv / bv if bv is not None and nv is not None else None
    if bs == "ok" and ns != "ok":
        verdict = BROKE
    elif bs != "ok" and ns == "ok":
        verdict = FIXED
    elif bs != "ok":
        verdict = NOT_OK
    elif ratio is None:
        verdict = NO_METRIC
    elif ratio > 1 + threshold:
        verdict = SLOWER
    elif ratio < 1 - threshold:
        verdict = FASTER
    else:
        verdict = SAME
    return Entry(b["key"], bv, nv, ratio, verdict, str(bs), str(ns))


def compare(baseline_rows: Iterable[Mapping], candidate_rows: Iterable[Mapping], threshold: float = 0.05,
            metric: str = "median_ms", allow_different_gpu: bool = False,
            base_gpus: set[str] | None = None, new_gpus: set[str] | None = None) -> Comparison:
    """Match rows by key (the last row of a key wins) and judge each pair. `base_gpus`/`new_gpus`
    override the GPU names read from the rows (e.g. from a file header when rows lack them)."""
    metric = parse_metric(metric)
    base = {r["key"]: r for r in baseline_rows}
    new = {r["key"]: r for r in candidate_rows}
    bg = set(base_gpus) if base_gpus else gpus_of(base.values())
    ng = set(new_gpus) if new_gpus else gpus_of(new.values())
    if bg and ng and bg != ng and not allow_different_gpu:
        raise InputError(f"the baseline was measured on {', '.join(sorted(bg))} and the candidate on "
                         f"{', '.join(sorted(ng))}: times from different GPUs are not comparable",
                         "compare files from the same GPU, or pass --allow-different-gpu")
    entries = [_judge(b, new[k], metric, threshold) for k, b in base.items() if k in new]
    return Comparison(entries=entries, only_base=[k for k in base if k not in new],
                      only_new=[k for k in new if k not in base], threshold=threshold, metric=metric,
                      base_gpus=bg, new_gpus=ng)
