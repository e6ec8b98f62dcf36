"""ABWSP's choice for one layer: BWSP (balanced WSP) or WSP (unbalanced), on rows (R) or columns (C).

Each candidate has a measured speedup s (a baseline's time ÷ the candidate's fastest verified time) and
an accuracy loss ℓ >= 0 (lower is better) from a proxy (accuracy.py) or a measured drop
(accuracy_drops.py):

    output   ℓ = relative error of the layer's output on the calibration inputs   (the default)
    energy   ℓ = 1 − share of the Winograd weights' energy the mask keeps
    drop     ℓ = measured top-1 drop in percentage points ÷ 10 (a CSV overrides the proxy)

The rule, with the accuracy weight a in [0, 1] (0: fastest, 1: most accurate):

    score = (1 − a) · ln s − a · ℓ          the candidate with the highest score is chosen

Only ratios between candidates' speedups matter (the baseline scales every s alike), so at a = 0.5 a
candidate 10% faster (ln 1.1 = 0.095) beats one whose loss is lower by less than 0.095: 0.095 of relative
output error, 9.5% of the weight energy, or about one point of top-1. Scores within 1e-9 are a tie: the
more accurate candidate wins, then the faster, then BWSP (one batched GEMM, no straggler), then R. Two
candidates' scores cross at one weight (`flip_weight`): the explanation names it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from cutlass_wsp.patterns import PATTERNS
from cutlass_wsp.sweep.measured import Timed

AXES = ("R", "C")
AXIS_PRUNING = {"R": "wsp-r", "C": "wsp-c"}                  # the pruning pattern (pruning.prune)
# the sweep patterns that run that pruning (with the registry's patterns.py: those whose prunes_as is it)
# The WSP patterns a layer can be balanced or not on, per axis (patterns.py: row / column units with a balance)
AXIS_PATTERNS = {axis: tuple(p.name for p in PATTERNS.values() if p.unit == unit and p.uses_balance)
                 for axis, unit in (("R", "row"), ("C", "column"))}
BALANCES = ("balanced", "unbalanced")
PROXIES = ("output", "energy")
DROP = "drop"
DROP_POINTS_PER_LOSS = 10.0      # a measured drop of 10 points of top-1 is a loss of 1
TIE = 1e-9


def label(axis: str, balance: str) -> str:
    """'BWSP-R', 'WSP-C'."""
    return ("BWSP-" if balance == "balanced" else "WSP-") + axis


@dataclass(frozen=True)
class Candidate:
    """One way to prune the layer at the target ratio, with what was measured and estimated of it."""

    axis: str
    balance: str
    time: Timed | None = None
    speedup: float | None = None
    energy_retained: float | None = None
    output_error: float | None = None
    drop: float | None = None
    proxy: str = "output"               # which of the three gives the loss: output, energy, drop
    unavailable: str | None = None      # why it cannot be chosen (no verified row, no measured drop, ...)

    @property
    def label(self) -> str:
        return label(self.axis, self.balance)

    @property
    def pattern(self) -> str:
        return AXIS_PRUNING[self.axis]

    @property
    def loss(self) -> float | None:
        """The accuracy loss the rule weighs (lower is better), from the proxy in use."""
        if self.proxy == DROP:
            v = None if self.drop is None else self.drop / DROP_POINTS_PER_LOSS
        elif self.proxy == "energy":
            v = None if self.energy_retained is None else 1.0 - self.energy_retained
        else:
            v = self.output_error
        return v if v is not None and math.isfinite(v) else None

    @property
    def available(self) -> bool:
        return self.unavailable is None and self.speedup is not None and self.speedup > 0 \
            and self.loss is not None

    def score(self, weight: float) -> float:
        return (1.0 - weight) * math.log(self.speedup) - weight * self.loss

    def proxy_text(self) -> str:
        """The proxy value as the explanation quotes it."""
        if self.proxy == DROP:
            return f"top-1 drop {self.drop:.2f} points"
        if self.proxy == "energy":
            return f"energy kept {self.energy_retained:.3f}"
        return f"output error {self.output_error:.3f}"

    def to_dict(self, weight: float) -> dict:
        return {"label": self.label, "axis": self.axis, "balance": self.balance, "pattern": self.pattern,
                "speedup": self.speedup, "time": self.time and self.time.to_dict(),
                "energy_retained": self.energy_retained, "output_error": self.output_error, "drop": self.drop,
                "proxy": self.proxy, "loss": self.loss,
                "score": self.score(weight) if self.available else None, "unavailable": self.unavailable}


def _tie_key(c: Candidate) -> tuple:
    return (-c.loss, c.speedup, c.balance == "balanced", c.axis == "R")


def better(x: Candidate, y: Candidate, weight: float) -> bool:
    """x beats y at `weight` (both available): higher score, ties broken by the rule above."""
    sx, sy = x.score(weight), y.score(weight)
    if abs(sx - sy) > TIE * max(1.0, abs(sx), abs(sy)):
        return sx > sy
    return _tie_key(x) > _tie_key(y)


def choose(candidates: Sequence[Candidate], weight: float) -> Candidate | None:
    """The chosen candidate, or None when none is available."""
    best = None
    for c in candidates:
        if c.available and (best is None or better(c, best, weight)):
            best = c
    return best


def flip_weight(x: Candidate, y: Candidate) -> float | None:
    """The weight at which x and y score the same, when one is faster and the other more accurate."""
    ds = math.log(x.speedup / y.speedup)
    dl = x.loss - y.loss
    if ds == 0 or dl == 0 or (ds > 0) != (dl > 0):
        return None
    return ds / (ds + dl)


def _pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:.0f}%" if abs(ratio - 1) >= 0.005 else f"{(ratio - 1) * 100:.1f}%"


def _pair(x: Candidate, y: Candidate, weight: float) -> str:
    """Why x (chosen) and not y (both available)."""
    fs, dl = x.speedup / y.speedup, y.loss - x.loss          # fs > 1: x faster; dl > 0: x more accurate
    noise = " (the speed difference is within the timing spread)" \
        if x.time and y.time and fs != 1 and x.time.spread_overlaps(y.time) else ""
    quote = f"{x.label} {x.speedup:.2f}×, {x.proxy_text()}; {y.label} {y.speedup:.2f}×, {y.proxy_text()}"
    if fs >= 1 and dl >= 0:
        if fs == 1 and dl == 0:
            return f"{x.label} and {y.label} tie on speed and proxy ({quote}): the tie rule keeps {x.label}"
        what = "faster and more accurate" if fs > 1 and dl > 0 else ("faster, as accurate" if fs > 1
                                                                    else "as fast, more accurate")
        return f"{x.label} is {what} than {y.label} ({quote}): it wins at every weight{noise}"
    a = flip_weight(x, y)
    sx, sy = x.score(weight), y.score(weight)
    if abs(sx - sy) <= TIE * max(1.0, abs(sx), abs(sy)):
        return f"{x.label} and {y.label} score the same at weight {weight:g} ({quote}): the tie rule keeps " \
               f"the {'more accurate' if dl > 0 else 'faster'} {x.label}{noise}"
    if fs > 1:      # x faster, y more accurate
        return (f"{x.label} is {_pct(fs)} faster, {y.label} has {-dl:.3f} less loss ({quote}); at weight "
                f"{weight:g} speed wins (score {sx:.3f} vs {sy:.3f}); {y.label} would win at weight > {a:.2f}{noise}")
    return (f"{x.label} has {dl:.3f} less loss, {y.label} is {_pct(1 / fs)} faster ({quote}); at weight "
            f"{weight:g} accuracy wins (score {sx:.3f} vs {sy:.3f}); {y.label} would win at weight < {a:.2f}{noise}")


def explain(chosen: Candidate | None, candidates: Sequence[Candidate], weight: float) -> str:
    """Why the choice fell as it did: the chosen candidate against its other balance (BWSP vs WSP on
    the same axis), then against the best of the other axis when there is one."""
    if chosen is None:
        gone = "; ".join(f"{c.label}: {c.unavailable or 'no speedup or proxy'}" for c in candidates)
        return f"no candidate can be chosen ({gone or 'none'}): the layer stays unpruned"
    parts = []
    partner = next((c for c in candidates if c.axis == chosen.axis and c.balance != chosen.balance), None)
    if partner is None:
        parts.append(f"{chosen.label} is the only {chosen.axis} candidate")
    elif not partner.available:
        parts.append(f"{partner.label} cannot be chosen ({partner.unavailable or 'no speedup or proxy'}); "
                     f"{chosen.label} can")
    else:
        parts.append(_pair(chosen, partner, weight))
    others = [c for c in candidates if c.axis != chosen.axis]
    if others:
        rival = choose(others, weight)
        other_axis = others[0].axis
        if rival is None:
            gone = ", ".join(f"{c.label}: {c.unavailable or 'no speedup or proxy'}" for c in others)
            parts.append(f"{chosen.axis} over {other_axis}: no {other_axis} candidate ({gone})")
        else:
            parts.append(f"{chosen.axis} over {other_axis}: the best {other_axis} candidate, {rival.label} "
                         f"({rival.speedup:.2f}×, {rival.proxy_text()}), scores {rival.score(weight):.3f} vs "
                         f"{chosen.score(weight):.3f}")
    return ". ".join(parts)
