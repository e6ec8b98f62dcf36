"""An ABWSP plan for a network: per prunable layer, the candidates' measured speedups and accuracy proxies,
the choice (abwsp.py's rule) and why; as JSON for reuse (`cutlass-wsp network --plan`).

Speedups come from a results file (sweep/measured.py): each candidate's fastest verified implementation,
over the baseline's fastest verified time (the dense Winograd layer, or cuDNN's conv), both on one time
basis per layer shape: whole-layer times (`layer_ms`) when the baseline and every candidate have them,
else the GEMM batch alone (`median_ms`; only against dense: cuDNN has no GEMM batch). Every prunable
layer is pruned at the target ratio (layer 1, c = 3, is never pruned: `Layer.prunable`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from cutlass_wsp import abwsp
from cutlass_wsp.abwsp import AXIS_PATTERNS, BALANCES, DROP, Candidate
from cutlass_wsp.errors import InputError
from cutlass_wsp.layers import Layer
from cutlass_wsp.sweep.measured import BASIS_WORDS, FUSED, GEMM, IMPL_SETS, LAYER, Measured, Timed

SCHEMA_NAME = "cutlass-wsp/abwsp-plan"
SCHEMA_VERSION = 1
AGAINST = ("dense", "cudnn")
RULE = "score = (1 - a) * ln(speedup) - a * loss; the highest score wins"


@dataclass(frozen=True)
class Settings:
    ratio: float
    accuracy_weight: float = 0.5
    proxy: str = "output"                 # output or energy (a CSV drop overrides either)
    against: str = "dense"                # the speedups' baseline: dense Winograd layer or cuDNN conv
    axes: tuple[str, ...] = ("R", "C")
    implementations: str = "all"          # all, unfused or fused (sweep/measured.py IMPL_SETS)
    batch: int = 32
    p: int = 4
    dtype: str = "fp16"

    def check(self) -> Settings:
        if self.proxy not in abwsp.PROXIES:
            raise InputError(f"proxy {self.proxy!r}", f"use one of {', '.join(abwsp.PROXIES)}")
        if self.against not in AGAINST:
            raise InputError(f"baseline {self.against!r}", f"use one of {', '.join(AGAINST)}")
        if self.implementations not in IMPL_SETS:
            raise InputError(f"implementations {self.implementations!r}", f"use one of {', '.join(IMPL_SETS)}")
        if not self.axes or any(a not in abwsp.AXES for a in self.axes):
            raise InputError(f"axes {self.axes!r}", "use r, c or both")
        if self.implementations == FUSED and "C" in self.axes:
            raise InputError("the fused layer kernel serves no WSP-C (only dense, FP, WSP-R and WSP-RB)",
                             "use --axis r with --impl fused")
        return self


@dataclass(frozen=True)
class LayerPlan:
    layer: Layer
    basis: str | None                     # LAYER or GEMM; None when no baseline could be timed
    baseline: Timed | None
    candidates: tuple[Candidate, ...]
    chosen: Candidate | None
    why: str
    calibration: str = "random"           # where the calibration input came from: random or the file

    def to_dict(self, weight: float) -> dict:
        x = self.layer
        return {"layer": x.name, "c": x.c, "n": x.n, "H": x.H, "W": x.W, "basis": self.basis,
                "baseline": self.baseline and self.baseline.to_dict(),
                "choice": self.chosen and {"label": self.chosen.label, "axis": self.chosen.axis,
                                           "balance": self.chosen.balance, "pattern": self.chosen.pattern},
                "why": self.why, "calibration": self.calibration,
                "candidates": [c.to_dict(weight) for c in self.candidates]}


@dataclass(frozen=True)
class Plan:
    settings: Settings
    net: str
    gpu: str | None
    layers: tuple[LayerPlan, ...]
    not_pruned: tuple[Layer, ...]         # layers never pruned (c = 3 / marked not prunable)
    results: tuple[str, ...] = ()
    weights: str = "He-initialised (seeded by layer name)"
    calibration: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def complete(self) -> bool:
        return all(lp.chosen is not None for lp in self.layers)

    def choices(self) -> dict[str, tuple[str, str]]:
        """layer name -> (axis, balance) of every layer with a choice."""
        return {lp.layer.name: (lp.chosen.axis, lp.chosen.balance) for lp in self.layers if lp.chosen}

    def to_dict(self) -> dict:
        s = self.settings
        return {"schema": SCHEMA_NAME, "version": SCHEMA_VERSION, "net": self.net, "gpu": self.gpu,
                "batch": s.batch, "p": s.p, "dtype": s.dtype, "ratio": s.ratio,
                "accuracy_weight": s.accuracy_weight, "proxy": s.proxy, "against": s.against,
                "axes": list(s.axes), "implementations": s.implementations, "rule": RULE,
                "results": list(self.results), "weights": self.weights, "calibration": self.calibration,
                "notes": list(self.notes), "not_pruned": [x.name for x in self.not_pruned],
                "layers": [lp.to_dict(s.accuracy_weight) for lp in self.layers]}


# --------------------------------------------------------------------------------------- proxies
class ProxySource:
    """Accuracy proxies of every (layer, axis, balance) at a ratio, computed once per layer.

    `weights` (layer_inputs.WeightFile) gives real weights, else He-initialised ones; `activations`
    (layer_inputs.ActivationFile) the calibration inputs of the layers it names, else random ones;
    `drops` (accuracy_drops.AccuracyDrops) measured drops that override the proxy."""

    def __init__(self, p: int, *, weights=None, activations=None, drops=None, images: int = 2, size: int = 28):
        self.p, self.weights, self.activations, self.drops = p, weights, activations, drops
        self.images, self.size = images, size
        self._cache: dict[tuple, object] = {}
        self.calibration: dict[str, str] = {}

    def _probe(self, layer: Layer):
        from cutlass_wsp import accuracy
        from cutlass_wsp.weights import he_winograd_weights

        if self.weights is not None:
            W = self.weights.weights(layer, self.p)
        else:
            W = he_winograd_weights(layer, self.p, seed=accuracy.layer_seed(layer))
        d = self.activations.activations(layer) if self.activations is not None else None
        if d is None:
            self.calibration[layer.name] = "random"
            d = accuracy.random_activations(layer, self.images, self.size)
        else:
            self.calibration[layer.name] = "file"
            d = accuracy.crop(d, self.images, self.size)
        return accuracy.LayerProbe(W, d, self.p)

    def proxy(self, layer: Layer, axis: str, balance: str, ratio: float):
        key = (layer.name, axis, balance, round(ratio, 9))
        if key not in self._cache:
            probe_key = ("probe", layer.name)
            if probe_key not in self._cache:
                self._cache[probe_key] = self._probe(layer)
            self._cache[key] = self._cache[probe_key].proxy(abwsp.AXIS_PRUNING[axis], ratio, balance)
        return self._cache[key]

    def drop(self, layer: Layer, axis: str, balance: str, ratio: float) -> float | None:
        return None if self.drops is None else self.drops.get(layer, abwsp.AXIS_PRUNING[axis], ratio, balance)

    def describe(self) -> str:
        n_file = sum(v == "file" for v in self.calibration.values())
        cal = f"{self.images} image(s) cropped to <= {self.size}x{self.size}"
        if self.activations is None:
            return f"random (rectified normal), {cal}"
        return f"{self.activations.path} for {n_file} layer(s), random for {len(self.calibration) - n_file}; {cal}"


# --------------------------------------------------------------------------------------- plan
def _baseline_patterns(s: Settings) -> tuple[str, ...]:
    return ("conv",) if s.against == "cudnn" else ("dense",)


def needed_points(layers: Sequence[Layer], s: Settings):
    """The Needs (sweep/missing.py) of a plan: per prunable shape, the baseline and every candidate."""
    from cutlass_wsp.sweep.missing import Need

    impl = FUSED if s.implementations == FUSED else None
    needs = []
    for x in layers:
        needs.append(Need(x, _baseline_patterns(s), impl=impl if s.against == "dense" else None))
        for axis in s.axes:
            for b in BALANCES:
                needs.append(Need(x, AXIS_PATTERNS[axis], s.ratio, b, impl=impl))
    return needs


def _has(measured: Measured, need, s: Settings) -> bool:
    keep = IMPL_SETS[s.implementations] if need.patterns != ("conv",) else IMPL_SETS["all"]
    return measured.has_rows(need.layer.shape, s.batch, s.p, s.dtype, need.patterns, need.ratio, need.balance,
                             impls=keep)


def _shape_firsts(layers: Sequence[Layer]) -> list[Layer]:
    return list({x.shape: x for x in reversed(layers)}.values())[::-1]


def check_measured(measured: Measured, table: Sequence[Layer], s: Settings, *, source: str, net_spec: str,
                   out: str | Path) -> None:
    """InputError in one line when the results lack rows the plan needs, with the sweep that measures them."""
    from cutlass_wsp.sweep.missing import missing_error

    prunable = [x for x in table if x.prunable and x.is_winograd]
    if not prunable:
        raise InputError(f"{net_spec} has no prunable 3×3 stride-1 layer", "name a network or layers that have one")
    missing = [nd for nd in needed_points(_shape_firsts(prunable), s) if not _has(measured, nd, s)]
    if missing:
        raise missing_error(source, net_spec, missing, table, batch=s.batch, p=s.p, dtype=s.dtype, out=out,
                            what=f"an ABWSP plan at ratio {s.ratio:g}")


def _basis(measured: Measured, x: Layer, s: Settings) -> tuple[str | None, Timed | None, list]:
    """(basis, baseline, layer-time needs): the whole layer when the baseline and every candidate with a
    verified row have a layer time; else the GEMM batch (against dense only); else nothing, and the
    points that lack a layer time when that is why."""
    from cutlass_wsp.sweep.missing import Need

    keep = IMPL_SETS[s.implementations]
    base_keep = IMPL_SETS["all"] if s.against == "cudnn" else keep
    look = dict(shape=x.shape, batch=s.batch, p=s.p, dtype=s.dtype)
    base = {b: measured.fastest(**look, patterns=_baseline_patterns(s), basis=b, impls=base_keep) for b in (LAYER, GEMM)}
    cands = {(a, bal): {b: measured.fastest(**look, patterns=AXIS_PATTERNS[a], ratio=s.ratio, balance=bal, basis=b,
                                            impls=keep) for b in (LAYER, GEMM)}
             for a in s.axes for bal in BALANCES}
    if base[LAYER] and all(t[LAYER] for t in cands.values() if t[GEMM] or t[LAYER]):
        return LAYER, base[LAYER], []
    if s.against == "dense" and base[GEMM]:
        return GEMM, base[GEMM], []
    lacking = []
    if base[GEMM] and not base[LAYER]:
        lacking.append(Need(x, _baseline_patterns(s)))
    lacking += [Need(x, AXIS_PATTERNS[a], s.ratio, bal) for (a, bal), t in cands.items() if t[GEMM] and not t[LAYER]]
    return None, None, lacking


def _candidates(measured: Measured, x: Layer, s: Settings, basis: str, base: Timed, proxies: ProxySource):
    keep = IMPL_SETS[s.implementations]
    out = []
    for axis in s.axes:
        for bal in BALANCES:
            look = dict(shape=x.shape, batch=s.batch, p=s.p, dtype=s.dtype, patterns=AXIS_PATTERNS[axis],
                        ratio=s.ratio, balance=bal, basis=basis, impls=keep)
            t = measured.fastest(**look)
            pr = proxies.proxy(x, axis, bal, s.ratio)
            out.append(Candidate(axis=axis, balance=bal, time=t, speedup=base.ms / t.ms if t else None,
                                 energy_retained=pr.energy_retained, output_error=pr.output_error,
                                 drop=proxies.drop(x, axis, bal, s.ratio), proxy=s.proxy,
                                 unavailable=None if t else f"no verified row ({measured.why_none(**look)})"))
    with_drop = [c for c in out if c.drop is not None]
    if with_drop:       # measured drops replace the proxy; a candidate without one cannot be compared
        src = proxies.drops.path
        out = [replace(c, proxy=DROP, unavailable=c.unavailable or (
                   None if c.drop is not None else f"no measured drop in {src} (other candidates of this layer "
                                                   "have one)")) for c in out]
    return tuple(out)


def build_plan(measured: Measured, table: Sequence[Layer], s: Settings, proxies: ProxySource, *, net_spec: str,
               source: str, out: str | Path, results: Sequence[str] = ()) -> Plan:
    """The plan of every prunable layer of `table`. Raises InputError (one line, with the sweep command)
    when the results lack what it needs."""
    from cutlass_wsp.sweep.missing import layer_time_error

    s = s.check()
    check_measured(measured, table, s, source=source, net_spec=net_spec, out=out)
    prunable = [x for x in table if x.prunable and x.is_winograd]
    bases = {x.shape: _basis(measured, x, s) for x in _shape_firsts(prunable)}
    lacking = [nd for (_, _, need) in bases.values() for nd in need]
    if lacking:
        raise layer_time_error(source, net_spec, lacking, table, batch=s.batch, p=s.p, dtype=s.dtype, out=out,
                               what=f"an ABWSP plan against {s.against}")
    plans = []
    for x in prunable:
        basis, base, _ = bases[x.shape]
        if base is None:
            look = dict(shape=x.shape, batch=s.batch, p=s.p, dtype=s.dtype, patterns=_baseline_patterns(s))
            plans.append(LayerPlan(x, None, None, (), None,
                                   f"no verified {s.against} baseline ({measured.why_none(**look)}): the layer "
                                   "stays unpruned"))
            continue
        cands = _candidates(measured, x, s, basis, base, proxies)
        chosen = abwsp.choose(cands, s.accuracy_weight)
        plans.append(LayerPlan(x, basis, base, cands, chosen, abwsp.explain(chosen, cands, s.accuracy_weight),
                               proxies.calibration.get(x.name, "random")))
    notes = []
    gemm = [lp.layer.name for lp in plans if lp.basis == GEMM]
    if gemm:
        notes.append(f"{len(gemm)} layer(s) compared on the {BASIS_WORDS[GEMM]}: not every candidate has a "
                     f"whole-layer time ({', '.join(gemm[:3])}{', ...' if len(gemm) > 3 else ''})")
    return Plan(settings=s, net=net_spec, gpu=measured.gpu, layers=tuple(plans),
                not_pruned=tuple(x for x in table if not (x.prunable and x.is_winograd)), results=tuple(results),
                weights=str(proxies.weights.path) if proxies.weights is not None else Plan.weights,
                calibration=proxies.describe(), notes=tuple(notes))


# --------------------------------------------------------------------------------------- JSON
def write_plan(plan: Plan, path: str | Path) -> Path:
    from cutlass_wsp.storage import atomic_write_text

    return atomic_write_text(path, json.dumps(plan.to_dict(), indent=1) + "\n")


def read_choices(path: str | Path) -> tuple[dict, dict[str, tuple[str, str]]]:
    """(header fields, layer name -> (axis, balance)) of a plan written by `write_plan`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"plan file {str(path)!r} not found", "pass a JSON file written by cutlass-wsp abwsp")
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path} is not JSON ({e})", "pass a JSON file written by cutlass-wsp abwsp") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_NAME:
        raise InputError(f"{path} is not an ABWSP plan", "pass a JSON file written by cutlass-wsp abwsp")
    if doc.get("version") != SCHEMA_VERSION:
        raise InputError(f"{path} is plan version {doc.get('version')}; this cutlass-wsp reads {SCHEMA_VERSION}",
                         "write the plan again with this cutlass-wsp")
    choices = {}
    for e in doc.get("layers") or []:
        ch = e.get("choice") if isinstance(e, dict) else None
        if ch and ch.get("axis") in abwsp.AXES and ch.get("balance") in BALANCES:
            choices[str(e.get("layer"))] = (ch["axis"], ch["balance"])
    header = {k: doc.get(k) for k in ("net", "ratio", "p", "dtype", "batch", "accuracy_weight", "proxy",
                                      "implementations")}
    return header, choices
