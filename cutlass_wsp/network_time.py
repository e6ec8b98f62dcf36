"""Network time: per pruning method, the sum of measured whole-layer times over every 3×3 stride-1 conv.

The layers come from a network table (vgg16, resnet18, resnet34 or a layer file); each layer's time is
the fastest verified `layer_ms` of its shape (sweep/measured.py: a sweep measures a shape once, so a
shape shared by k layers counts k times, and ResNet-34 takes ResNet-18's rows). A method's pruned
patterns run the prunable layers at the ratio; a layer it does not prune (layer 1, c = 3) runs the
method's unpruned form (`unpruned`, e.g. the fused dense layer for the fused methods) or, when that has
no time (not measured, or failed), the dense Winograd layer, then cuDNN; the result says so and why. A method with no row at all is
"not measured"; one that lacks some layers is "incomplete" and has no total.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cutlass_wsp.abwsp import AXIS_PATTERNS
from cutlass_wsp.layers import Layer
from cutlass_wsp.sweep.measured import IMPL_SETS, LAYER, Measured, Timed

OK, INCOMPLETE, NOT_MEASURED = "ok", "incomplete", "not measured"


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    description: str
    patterns: tuple[str, ...] = ()        # what runs a prunable layer (alternatives: one pruning, several implementations)
    pruned: bool = False                  # runs prunable layers at the pruning ratio
    balance: str | None = None
    implementations: str = "unfused"      # sweep/measured.py IMPL_SETS
    unpruned: tuple[str, ...] = ("dense",)
    plan: bool = False                    # ABWSP: each layer's (axis, balance) from a plan

    @property
    def fused(self) -> bool:
        return self.implementations == "fused"


METHODS: tuple[Method, ...] = (
    Method("cudnn", "cuDNN dense", "cuDNN's convolution of the unpruned layer: the bar", ("conv",),
           implementations="all", unpruned=("conv",)),
    Method("dense", "Winograd dense", "unpruned Winograd layer: transforms + the fastest GEMM batch", ("dense",)),
    Method("fp", "FP", "filter pruning (the same filters removed in every position)", ("fp",), True),
    Method("wsp-r", "WSP-R", "row WSP, unbalanced (one threshold per layer, seed 001)", ("wsp-r",), True, "unbalanced"),
    Method("wsp-c", "WSP-C", "column WSP, unbalanced (gather pass, in-GEMM or in-transform gather)",
           AXIS_PATTERNS["C"], True, "unbalanced"),
    Method("bwsp-r", "BWSP-R", "row WSP, balanced (the same ratio in every W_i)", ("wsp-r",), True, "balanced"),
    Method("bwsp-c", "BWSP-C", "column WSP, balanced", AXIS_PATTERNS["C"], True, "balanced"),
    Method("abwsp", "ABWSP", "per layer BWSP or WSP, R or C: the ABWSP plan's choice", (), True, plan=True),
    Method("wwp", "WWP (CSR)", "element-wise pruning, cuSPARSE CSR SpMM", ("wwp",), True),
    Method("bcbp", "BCBP", "block-column pruning (seed 002)", ("bcbp",), True),
    Method("fused-dense", "fused dense", "the whole layer in one kernel, unpruned", ("dense",),
           implementations="fused"),
    Method("fused-fp", "fused FP", "fused layer kernel, filter pruning", ("fp",), True, implementations="fused"),
    Method("fused-wsp-r", "fused WSP-R", "fused layer kernel, row WSP unbalanced", ("wsp-r",), True, "unbalanced",
           implementations="fused"),
    Method("fused-bwsp-r", "fused BWSP-R", "fused layer kernel, row WSP balanced", ("wsp-r",), True, "balanced",
           implementations="fused"),
    Method("fused-wsp-rb", "fused WSP-RB", "fused layer kernel, rows balanced per filter block", ("wsp-rb",), True,
           implementations="fused"),
    Method("fused-abwsp", "fused ABWSP", "fused layer kernel, per layer BWSP-R or WSP-R: the plan's choice", (),
           True, plan=True, implementations="fused"),
)
BY_NAME = {m.name: m for m in METHODS}
REFERENCE = "cudnn"


@dataclass(frozen=True)
class LayerTime:
    layer: Layer
    timed: Timed | None
    note: str | None = None               # a fallback, or why there is no time


@dataclass(frozen=True)
class MethodTime:
    method: Method
    batch: int
    layers: tuple[LayerTime, ...]
    state: str                            # OK, INCOMPLETE or NOT_MEASURED
    total_ms: float | None
    note: str | None = None               # for a method without a total: why, or what measures it
    vs_cudnn: float | None = None         # cuDNN total ÷ this total (above 1: faster than cuDNN)

    @property
    def missing(self) -> list[LayerTime]:
        return [lt for lt in self.layers if lt.timed is None]

    @property
    def fallbacks(self) -> list[LayerTime]:
        return [lt for lt in self.layers if lt.timed is not None and lt.note]

    def to_dict(self) -> dict:
        return {"method": self.method.name, "label": self.method.label, "batch": self.batch, "state": self.state,
                "total_ms": self.total_ms, "vs_cudnn": self.vs_cudnn, "note": self.note,
                "layers": [{"layer": lt.layer.name, "ms": lt.timed and lt.timed.ms, "key": lt.timed and lt.timed.key,
                            "impl": lt.timed and lt.timed.impl, "note": lt.note} for lt in self.layers]}


def _prunes(method: Method, layer: Layer) -> bool:
    return method.pruned and layer.prunable


def _unpruned_time(m: Measured, method: Method, x: Layer, look: dict) -> LayerTime:
    """A layer the method does not prune: its unpruned form; for a layer never pruned (layer 1) in a method
    other than the two baselines, the dense Winograd layer and then cuDNN stand in when that is missing."""
    keep = IMPL_SETS[method.implementations]
    own = m.fastest(**look, patterns=method.unpruned, basis=LAYER, impls=keep)
    if own is not None or x.prunable or method.name in ("cudnn", "dense"):
        return LayerTime(x, own, None if own else m.why_none(**look, patterns=method.unpruned, impls=keep))
    own_what = "fused dense" if method.fused else "Winograd dense"
    why = m.why_none(**look, patterns=method.unpruned, basis=LAYER, impls=keep)    # 'not measured', '1 unsupported'
    for patterns, impls, what in ((("dense",), IMPL_SETS["unfused"], "Winograd dense"),
                                  (("conv",), IMPL_SETS["all"], "cuDNN")):
        t = m.fastest(**look, patterns=patterns, basis=LAYER, impls=impls)
        if t is not None and what != own_what:
            return LayerTime(x, t, f"never pruned; no {own_what} time ({why}), counted at {what}")
    return LayerTime(x, None, f"never pruned; no {own_what}, Winograd dense or cuDNN layer time")


def _layer_time(m: Measured, method: Method, x: Layer, *, batch: int, p: int, dtype: str, ratio: float,
                choices: Mapping[str, tuple[str, str]] | None) -> LayerTime:
    look = dict(shape=x.shape, batch=batch, p=p, dtype=dtype)
    if not _prunes(method, x):
        return _unpruned_time(m, method, x, look)
    if method.plan:
        choice = (choices or {}).get(x.name)
        if choice is None:
            return LayerTime(x, None, "no ABWSP choice for this layer")
        patterns, balance = AXIS_PATTERNS[choice[0]], choice[1]
    else:
        patterns, balance = method.patterns, method.balance
    q = dict(**look, patterns=patterns, ratio=ratio, balance=balance, impls=IMPL_SETS[method.implementations])
    t = m.fastest(**q, basis=LAYER)
    return LayerTime(x, t, None if t else m.why_none(**q, basis=LAYER))


def method_time(m: Measured, method: Method, table: Sequence[Layer], *, batch: int, p: int, dtype: str,
                ratio: float, choices: Mapping[str, tuple[str, str]] | None = None,
                plan_error: str | None = None) -> MethodTime:
    """The method's network time at `batch` (no vs_cudnn yet: network_times fills it)."""
    layers = tuple(_layer_time(m, method, x, batch=batch, p=p, dtype=dtype, ratio=ratio, choices=choices)
                   for x in table)
    if method.plan and plan_error:
        return MethodTime(method, batch, layers, NOT_MEASURED, None, plan_error)
    own = [lt for lt in layers if _prunes(method, lt.layer) or not method.pruned]   # what the method itself runs
    if own and not any(lt.timed and not lt.note for lt in own) \
            and all(lt.note == "not measured" or lt.timed for lt in own):
        return MethodTime(method, batch, layers, NOT_MEASURED, None)
    missing = [lt for lt in layers if lt.timed is None]
    if missing:
        names = ", ".join(f"{lt.layer.name} ({lt.note})" for lt in missing[:3])
        more = f", +{len(missing) - 3} more" if len(missing) > 3 else ""
        return MethodTime(method, batch, layers, INCOMPLETE, None,
                          f"{len(missing)} of {len(layers)} layers have no time: {names}{more}")
    return MethodTime(method, batch, layers, OK, sum(lt.timed.ms for lt in layers))


def network_times(m: Measured, table: Sequence[Layer], *, batches: Sequence[int], p: int, dtype: str, ratio: float,
                  methods: Sequence[Method] = METHODS,
                  choices: Mapping[tuple[str, int], Mapping[str, tuple[str, str]]] | None = None,
                  plan_errors: Mapping[tuple[str, int], str] | None = None) -> dict[int, list[MethodTime]]:
    """batch -> every method's MethodTime, with its ratio to cuDNN's total where both are known.
    `choices[(method name, batch)]` is an ABWSP plan's layer -> (axis, balance); `plan_errors` why a plan
    could not be made."""
    from dataclasses import replace

    out: dict[int, list[MethodTime]] = {}
    for b in batches:
        times = [method_time(m, meth, table, batch=b, p=p, dtype=dtype, ratio=ratio,
                             choices=(choices or {}).get((meth.name, b)),
                             plan_error=(plan_errors or {}).get((meth.name, b))) for meth in methods]
        ref = next((t for t in times if t.method.name == REFERENCE), None)
        if ref is not None and ref.total_ms:
            times = [replace(t, vs_cudnn=ref.total_ms / t.total_ms) if t.total_ms else t for t in times]
        out[b] = times
    return out
