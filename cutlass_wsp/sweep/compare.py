"""Regression check between two result files: match points by (GPU, key), ratio = candidate / baseline
time, a regression is a point slower by more than the threshold or a point that worked and no longer
does. A file may hold several GPUs (a sweep over a Dask cluster of several GPU types): each GPU's rows
are compared with the same GPU's rows of the other file, and rows of a GPU the other file lacks are
'only in' that file. Times from different GPUs are not comparable, so files with no GPU in common are
refused unless asked (then points are paired by key, one GPU on each side)."""

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
    gpu: str | None = None  # the GPU both rows were measured on (None: paired across GPUs, or unknown)

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

    def geomean_ratio(self, gpu: str | None = None) -> float | None:
        """Geometric mean of the ratios (of one GPU's entries, when given)."""
        ratios = [e.ratio for e in self.entries if e.ratio is not None and e.ratio > 0
                  and (gpu is None or e.gpu == gpu)]
        return math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else None

    @property
    def gpus(self) -> list[str]:
        """The GPUs the entries were paired on, in order of appearance."""
        return list(dict.fromkeys(e.gpu for e in self.entries if e.gpu is not None))


def gpus_of(rows: Iterable[Mapping]) -> set[str]:
    return {r["gpu"] for r in rows if r.get("gpu")}


def _value(row: Mapping, metric: str) -> float | None:
    v = row.get(metric)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
    return float(v) if ok else None


def _judge(b: Mapping, n: Mapping, metric: str, threshold: float, gpu: str | None = None) -> Entry:
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
    return Entry(b["key"], bv, nv, ratio, verdict, str(bs), str(ns), gpu)


def _by_gpu(rows: Iterable[Mapping], only_gpu: set[str] | None) -> dict[tuple, Mapping]:
    """{(gpu, key): row}, the last row of a (gpu, key) winning. Rows without a GPU take the file's one
    GPU when it is known (`only_gpu`: e.g. from the file header)."""
    fill = next(iter(only_gpu)) if only_gpu and len(only_gpu) == 1 else None
    return {(r.get("gpu") or fill, r["key"]): r for r in rows}


def _label(gpu: str | None, key: str, several: bool) -> str:
    return f"{key} [{gpu}]" if several and gpu else key


def compare(baseline_rows: Iterable[Mapping], candidate_rows: Iterable[Mapping], threshold: float = 0.05,
            metric: str = "median_ms", allow_different_gpu: bool = False,
            base_gpus: set[str] | None = None, new_gpus: set[str] | None = None) -> Comparison:
    """Match rows by (gpu, key) (the last row of each wins) and judge each pair. `base_gpus`/`new_gpus`
    override the GPU names read from the rows (e.g. from a file header when rows lack them). With no
    GPU in common and `allow_different_gpu`, rows are paired by key (each side must hold one GPU)."""
    metric = parse_metric(metric)
    base_rows, new_rows = list(baseline_rows), list(candidate_rows)
    bg = set(base_gpus) if base_gpus else gpus_of(base_rows)
    ng = set(new_gpus) if new_gpus else gpus_of(new_rows)
    across = bool(bg and ng and not bg & ng)
    if across and not allow_different_gpu:
        raise InputError(f"the baseline was measured on {', '.join(sorted(bg))} and the candidate on "
                         f"{', '.join(sorted(ng))}: times from different GPUs are not comparable",
                         "compare files from the same GPU, or pass --allow-different-gpu")
    if across:
        several = [f"{name} holds {', '.join(sorted(g))}" for name, g in (("BASE", bg), ("NEW", ng)) if len(g) > 1]
        if several:
            raise InputError(f"--allow-different-gpu pairs one GPU with another, but {' and '.join(several)}",
                             "compare files of one GPU each")
        base = {(None, r["key"]): r for r in base_rows}
        new = {(None, r["key"]): r for r in new_rows}
    else:
        # a side that names no GPU is taken to be the other side's one GPU
        base = _by_gpu(base_rows, bg or (ng if len(ng) == 1 else None))
        new = _by_gpu(new_rows, ng or (bg if len(bg) == 1 else None))
    several = len(bg | ng) > 1 and not across
    entries = [_judge(b, new[k], metric, threshold, gpu=k[0]) for k, b in base.items() if k in new]
    return Comparison(entries=entries, only_base=[_label(*k, several) for k in base if k not in new],
                      only_new=[_label(*k, several) for k in new if k not in base], threshold=threshold,
                      metric=metric, base_gpus=bg, new_gpus=ng)
