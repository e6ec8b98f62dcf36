"""Sweeps declared as data: a `SweepSpec` of axes expands into an ordered list of measurement `Point`s.

Not every axis applies to every pattern: dense has neither a ratio nor a balance, FP/WWP/BCBP have a
ratio but are balanced by construction, WSP-R/WSP-C have both. `PATTERNS` says which axes apply, and
`expand()` multiplies a pattern only by its own axes, so the dense point of a layer shape is measured
once (per implementation, batch, tile size and dtype) however many ratios and balances are swept.
The `conv` pattern (cuDNN's dense convolution, the whole-layer bar) has no tile size either: it is
measured once per layer shape, batch and dtype, its `p` is None and its key says `p-`.
Layers of a network with the same (c, n, H, W) share one GEMM batch and so one point, which keeps
the names of all of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cutlass_wsp import patterns as _patterns
from cutlass_wsp.dtypes import DTYPES
from cutlass_wsp.errors import InputError, Unsupported
from cutlass_wsp.families import base as _base
from cutlass_wsp.families import registry
from cutlass_wsp.problem import BatchProblem

# ---------------------------------------------------------------------------------------------
# What can be swept
# ---------------------------------------------------------------------------------------------

# The pattern vocabulary is cutlass_wsp/patterns.py; which implementations a pattern has (and which
# balances each serves) comes from the families that serve them (cutlass_wsp/families/registry.py).
ANY, BALANCED_ONLY, UNBALANCED_ONLY = _base.ANY, _base.BALANCED_ONLY, _base.UNBALANCED_ONLY
CONV = _patterns.CONV   # the whole-layer baseline: not a GEMM batch at all


@dataclass(frozen=True)
class PatternInfo:
    """A pattern as a sweep sees it: its axes (patterns.py) and its implementations (the registry)."""

    name: str
    description: str
    uses_ratio: bool
    uses_balance: bool
    implementations: Mapping[str, str]   # implementation -> ANY / BALANCED_ONLY / UNBALANCED_ONLY
    default_implementations: tuple[str, ...]
    uses_tile: bool = True                # False: no Winograd tile size (p is None, key 'p-')
    fixed_ratio: float | None = None      # its one ratio (2:4: 0.5), whatever the sweep's ratios


def _pattern_infos() -> dict[str, PatternInfo]:
    """The patterns some family serves (a pruning pattern no family runs yet is not a sweep axis value)."""
    return {p.name: PatternInfo(p.name, p.description, p.uses_ratio, p.uses_balance, registry.implementations(p.name),
                                registry.default_implementations(p.name), uses_tile=p.uses_tile,
                                fixed_ratio=p.fixed_ratio)
            for p in _patterns.PATTERNS.values() if registry.implementations(p.name)}


PATTERNS: dict[str, PatternInfo] = _pattern_infos()
IMPLEMENTATIONS: dict[str, str] = registry.implementations()

BALANCES = ("balanced", "unbalanced", "spread:S")  # spread:S = per-position ratios spread by ±S (0 < S <= 1)


def _accepted_tiles() -> tuple[int, ...]:
    from cutlass_wsp.winograd import TILE_PS  # numpy-only module; imported here to keep plan light

    return TILE_PS


def default_spec() -> SweepSpec:
    """The README's main job: VGG-16 and ResNet-18, batch 32, p = 4, fp16, dense/FP/WSP-R/WSP-C/WWP at
    ratios 0.5, 0.7, 0.9, balanced and unbalanced, with cuBLAS and cuSPARSE baselines; cuDNN's conv
    and whole-layer times too, so the same sweep gives the per-layer plan (`cutlass-wsp plan`)."""
    return SweepSpec(
        layers=("vgg16", "resnet18"),
        batches=(32,),
        tiles=(4,),
        dtypes=("fp16",),
        patterns=(CONV, "dense", "fp", "wsp-r", "wsp-c", "wsp-c-fused", "wwp"),
        ratios=(0.5, 0.7, 0.9),
        balances=("balanced", "unbalanced"),
    )


# ---------------------------------------------------------------------------------------------
# Spec and points
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SweepSpec:
    """Axes of a sweep. `layers` holds `resolve_layers` specs ('vgg16', 'resnet18:layer4.0.conv2',
    'my_layers.csv'). `implementations` maps a pattern to the implementations to run; a pattern
    left out runs its `default_implementations`. `layer_time`: Winograd points also time the whole
    layer (input transform + GEMM batch + output transform); it is how a point is measured, not a
    coordinate, so it is not in the keys."""

    layers: tuple[str, ...]
    batches: tuple[int, ...]
    tiles: tuple[int, ...]
    dtypes: tuple[str, ...]
    patterns: tuple[str, ...]
    ratios: tuple[float, ...] = ()
    balances: tuple[str, ...] = ("balanced",)
    implementations: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    dedupe_shapes: bool = True
    layer_time: bool = True

    def implementations_for(self, pattern: str) -> tuple[str, ...]:
        impls = self.implementations.get(pattern)
        return tuple(impls) if impls is not None else PATTERNS[pattern].default_implementations


def _fmt(x: float) -> str:
    return format(x, "g")


@dataclass(frozen=True)
class Point:
    """One measurement: a layer shape of one network under one pattern and implementation.
    `ratio`/`balance` are None where the pattern has no such axis, `p` where it has no tile size
    (conv). `layers` names every layer of `net` with this shape (the prunable ones only, for pruned
    patterns)."""

    net: str
    layers: tuple[str, ...]
    c: int
    n: int
    H: int
    W: int
    batch: int
    p: int | None
    dtype: str
    pattern: str
    impl: str
    ratio: float | None = None
    balance: str | None = None
    per_layer: bool = False   # key names the layer (shapes not deduplicated)

    @property
    def key(self) -> str:
        """Stable id over all coordinates, e.g. 'vgg16/c256n256@56x56/b32/p4/fp16/wsp-r/cutlass/r0.7/balanced';
        a point without a tile size keeps the segment as 'p-': 'vgg16/c256n256@56x56/b32/p-/fp16/conv/cudnn'."""
        where = self.layers[0] if self.per_layer else self.net
        parts = [where, f"c{self.c}n{self.n}@{self.H}x{self.W}", f"b{self.batch}",
                 "p-" if self.p is None else f"p{self.p}",
                 self.dtype, self.pattern, self.impl]
        if self.ratio is not None:
            parts.append(f"r{_fmt(self.ratio)}")
        if self.balance is not None:
            parts.append(self.balance)
        return "/".join(parts)

    @property
    def shape_key(self) -> tuple:
        """What the dense reference of this point is: same GEMM batch, any pattern."""
        return (self.c, self.n, self.H, self.W, self.batch, self.p, self.dtype)

    def coordinates(self) -> dict:
        """The point's coordinates as result-row fields (see results.COORDINATE_FIELDS)."""
        return {"net": self.net, "layers": list(self.layers), "c": self.c, "n": self.n, "H": self.H,
                "W": self.W, "batch": self.batch, "p": self.p, "dtype": self.dtype,
                "pattern": self.pattern, "impl": self.impl, "ratio": self.ratio, "balance": self.balance}

    def problem(self) -> BatchProblem:
        """The dense GEMM batch of this layer shape (the pattern decides what is kept of it).
        A conv point has none: Unsupported."""
        from cutlass_wsp.layers import Layer, layer_problem

        if self.p is None:
            raise Unsupported(f"point {self.key} ({self.pattern}) has no Winograd GEMM batch",
                              "time it as a whole convolution (gpu/cudnn.py), not as a GEMM batch")
        layer = Layer(self.net, self.layers[0], self.c, self.n, self.H, self.W)
        return layer_problem(layer, self.batch, self.p)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------

def _unknown(axis: str, value, accepted: Iterable) -> InputError:
    return InputError(f"axis {axis!r}: unknown value {value!r}",
                      f"accepted values: {', '.join(str(a) for a in accepted)}")


def _check_balance(value: str) -> str:
    if value in ("balanced", "unbalanced"):
        return value
    head, sep, tail = value.partition(":")
    if head == "spread" and sep:
        try:
            s = float(tail)
        except ValueError:
            s = None
        if s is not None and 0 < s <= 1:
            return f"spread:{_fmt(s)}"
    raise _unknown("balances", value, ("balanced", "unbalanced", "spread:S with 0 < S <= 1, e.g. spread:0.2"))


def _dedupe(values: Iterable) -> tuple:
    return tuple(dict.fromkeys(values))


def validate(spec: SweepSpec) -> SweepSpec:
    """Check every axis value; return the spec with values normalized and duplicates dropped."""
    for axis in ("layers", "batches", "tiles", "dtypes", "patterns"):
        if not getattr(spec, axis):
            raise InputError(f"axis {axis!r} is empty: the sweep has no points", f"give at least one {axis[:-1]}")
    for b in spec.batches:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise _unknown("batches", b, ["positive integers"])
    tile_ps = _accepted_tiles()
    for p in spec.tiles:
        if p not in tile_ps or isinstance(p, bool):
            raise _unknown("tiles", p, tile_ps)
    for d in spec.dtypes:
        if d not in DTYPES:
            raise _unknown("dtypes", d, DTYPES)
    for pat in spec.patterns:
        if pat not in PATTERNS:
            raise _unknown("patterns", pat, PATTERNS)
    for r in spec.ratios:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r < 1:
            raise _unknown("ratios", r, ["fractions pruned, 0 < ratio < 1 (e.g. 0.5, 0.7, 0.9)"])
    balances = _dedupe(_check_balance(b) for b in spec.balances)
    for pat in spec.implementations:
        if pat not in PATTERNS:
            raise _unknown("implementations", pat, PATTERNS)
    impls: dict[str, tuple[str, ...]] = {}
    for pat in _dedupe(spec.patterns):
        info = PATTERNS[pat]
        chosen = _dedupe(spec.implementations_for(pat))
        for impl in chosen:
            if impl not in info.implementations:
                raise InputError(f"axis 'implementations': {impl!r} is not an implementation of pattern {pat!r}",
                                 f"accepted values for {pat}: {', '.join(info.implementations)}")
        if not chosen:
            raise InputError(f"pattern {pat!r} has no implementation: the sweep has no points for it",
                             f"give one of {', '.join(info.implementations)}")
        if info.uses_ratio and not spec.ratios and info.fixed_ratio is None:
            raise InputError(f"pattern {pat!r} needs a pruning ratio but axis 'ratios' is empty",
                             "give at least one ratio (e.g. --ratio 0.7) or drop the pattern")
        if info.uses_balance:
            if not balances:
                raise InputError(f"pattern {pat!r} needs a balance but axis 'balances' is empty",
                                 "give at least one balance (e.g. --balance balanced)")
            if not any(_serves(info.implementations[i], b) for i in chosen for b in balances):
                raise InputError(
                    f"pattern {pat!r}: no chosen implementation ({', '.join(chosen)}) serves "
                    f"balance {', '.join(balances)}",
                    "cutlass and cublas need balanced; cutlass-grouped and cutlass-xform serve any; "
                    "cutlass-padded serves unbalanced")
        impls[pat] = chosen
    return SweepSpec(
        layers=_dedupe(spec.layers), batches=_dedupe(spec.batches), tiles=_dedupe(spec.tiles),
        dtypes=_dedupe(spec.dtypes), patterns=_dedupe(spec.patterns),
        ratios=_dedupe(float(r) for r in spec.ratios), balances=balances, implementations=impls,
        dedupe_shapes=spec.dedupe_shapes, layer_time=bool(spec.layer_time),
    )


def _serves(rule: str, balance: str) -> bool:
    return _base.serves_balance(rule, balance)


# ---------------------------------------------------------------------------------------------
# Expansion
# ---------------------------------------------------------------------------------------------

def _layer_groups(spec: SweepSpec) -> list[tuple[str, list]]:
    """(net, layers) groups in first-seen order: one per (net, shape) when deduplicating, else one
    per layer. A layer named by two specs is counted once."""
    from cutlass_wsp.layers import resolve_layers

    seen: set[tuple[str, str]] = set()
    groups: dict[tuple, list] = {}
    for s in spec.layers:
        for layer in resolve_layers(s):
            if (layer.net, layer.name) in seen:
                continue
            seen.add((layer.net, layer.name))
            gkey = (layer.net, layer.shape) if spec.dedupe_shapes else (layer.net, layer.name)
            groups.setdefault(gkey, []).append(layer)
    return [(gkey[0], layers) for gkey, layers in groups.items()]


def _point_ratios(spec: SweepSpec, info: PatternInfo) -> tuple:
    """The ratios a pattern's points take: its fixed one (2:4), the sweep's, or none."""
    if info.fixed_ratio is not None:
        return (info.fixed_ratio,)
    return spec.ratios if info.uses_ratio else (None,)


def expand(spec: SweepSpec) -> list[Point]:
    """All points of a sweep, in measuring order: for each layer shape, batch, tile size and dtype,
    the conv point (first tile size only: it has none), the dense points, then every other
    pattern × ratio × balance × implementation. Layers marked not prunable get conv and dense
    points only."""
    spec = validate(spec)
    points: list[Point] = []
    keys: set[str] = set()
    per_layer = not spec.dedupe_shapes
    unpruned = (CONV, "dense")
    patterns = sorted(spec.patterns, key=lambda p: unpruned.index(p) if p in unpruned else 2)  # stable
    for net, layers in _layer_groups(spec):
        first = layers[0]
        all_names = tuple(x.name for x in layers)
        prunable_names = tuple(x.name for x in layers if x.prunable)
        for batch in spec.batches:
            for p in spec.tiles:
                for dtype in spec.dtypes:
                    for pat in patterns:
                        info = PATTERNS[pat]
                        if pat not in unpruned and not prunable_names:
                            continue
                        names = all_names if pat in unpruned else prunable_names
                        tile = p if info.uses_tile else None   # conv: one point for every tile size
                        for ratio in _point_ratios(spec, info):
                            for balance in (spec.balances if info.uses_balance else (None,)):
                                for impl in spec.implementations_for(pat):
                                    if balance is not None and not _serves(info.implementations[impl], balance):
                                        continue
                                    pt = Point(net, names, first.c, first.n, first.H, first.W, batch, tile,
                                               dtype, pat, impl, ratio, balance, per_layer)
                                    if pt.key not in keys:
                                        keys.add(pt.key)
                                        points.append(pt)
    if not points:
        raise InputError("the sweep has no points: no chosen layer is prunable and only pruned patterns "
                         f"were asked for ({', '.join(spec.patterns)})",
                         "add the dense or conv pattern or choose prunable layers")
    return points
