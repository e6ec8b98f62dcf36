"""The family registry: discovery, what each family declares, the lookups the sweep and the tuner use,
and the errors a bad family module gets at import. CPU only."""

from __future__ import annotations

import pytest

from cutlass_wsp import patterns
from cutlass_wsp.errors import InputError, Unsupported, WspError
from cutlass_wsp.families import registry
from cutlass_wsp.families.base import (ANY, BALANCED_ONLY, GEMM, LAYER, UNBALANCED_ONLY, Cost, Family, KernelFamily,
                                       Op, Serves, serves_balance)
from cutlass_wsp.kernels.emitter import templates_dir
from cutlass_wsp.problem import BatchProblem


def test_discovery_finds_every_family_module():
    fams = registry.families()
    assert {"dense", "fp", "wsp_r", "wsp_c", "bcbp", "gather", "cublas", "cusparse", "cudnn"} <= set(fams)
    assert all(isinstance(f, Family) for f in fams.values())
    order = [f.order for f in fams.values()]
    assert order == sorted(order)                          # ours (0) before the baselines (100)
    assert set(registry.kernel_families()) >= {"dense", "gather_b", "wsp_r_grouped"}


def test_every_kernel_family_has_its_templates():
    for name, kf in registry.kernel_families().items():
        assert isinstance(kf, KernelFamily)
        for arch in kf.archs:
            assert (templates_dir() / f"{name}_{arch}.cu.j2").is_file(), (name, arch)


def test_every_sweep_point_resolves_through_the_registry():
    from cutlass_wsp.sweep.plan import PATTERNS, SweepSpec, default_spec, expand

    for p in expand(default_spec()):
        assert registry.serving(p.pattern, p.impl).name
    every = SweepSpec(layers=("resnet18:12",), batches=(32,), tiles=(4,), dtypes=("fp16",),
                      patterns=tuple(PATTERNS), ratios=(0.7,), balances=("balanced", "unbalanced"),
                      implementations={p: tuple(info.implementations) for p, info in PATTERNS.items()})
    served = {(p.pattern, p.impl) for p in expand(every)}
    assert served == {(s.pattern, s.impl) for f in registry.families().values() for s in f.serves
                      if serves_balance(s.balance, "balanced") or serves_balance(s.balance, "unbalanced")}
    with pytest.raises(Unsupported, match="no implementation 'nope' of pattern 'dense'"):
        registry.serving("dense", "nope")


def test_implementations_come_from_the_families_in_order():
    assert registry.default_implementations("dense")[0] == "cutlass"          # what `bench` runs by default
    assert registry.default_implementations("wsp-r") == ("cutlass", "cutlass-grouped", "cutlass-padded", "fused",
                                                         "cublas")
    assert registry.implementations("wsp-r") == {"cutlass": BALANCED_ONLY, "cutlass-grouped": ANY,
                                                 "cutlass-padded": UNBALANCED_ONLY, "fused": ANY,
                                                 "cublas": BALANCED_ONLY}
    assert registry.implementations("conv") == {"cudnn": ANY}
    descriptions = registry.implementations()
    assert descriptions["cublas"].startswith("cuBLAS") and all(descriptions.values())


def test_the_pattern_vocabulary_is_one_table():
    from cutlass_wsp import pruning
    from cutlass_wsp.sweep import plan, plot

    assert set(plan.PATTERNS) == {p for p in patterns.PATTERNS if registry.implementations(p)}  # those served
    assert set(plan.PATTERNS) >= {"conv", "dense", "fp", "wsp-r", "wsp-c", "wsp-c-fused", "wwp", "bcbp"}
    assert pruning.PATTERNS == patterns.PRUNING_PATTERNS
    assert pruning.PATTERNS[:6] == ("dense", "fp", "wsp-r", "wsp-c", "wwp", "bcbp") and "wsp-rb" in pruning.PATTERNS
    assert pruning.UNIT_NAMES["wsp-r"] == "row" and pruning.PATTERN_BALANCES["fp"] == ("balanced",)
    assert plot.STRUCTURED[:3] == ("wsp-r", "wsp-c", "wsp-c-fused")
    assert patterns.pruning_of("wsp-c-fused") == "wsp-c" and patterns.pruning_of("conv") == "dense"
    for name, info in plan.PATTERNS.items():
        p = patterns.PATTERNS[name]
        assert (info.uses_ratio, info.uses_balance, info.uses_tile) == (p.uses_ratio, p.uses_balance, p.uses_tile)
    with pytest.raises(InputError, match="unknown pattern"):
        patterns.get("nope")


class _Fam(Family):
    def __init__(self, name, serves=(), kernels=()):
        self.name, self.serves, self.kernels = name, tuple(serves), tuple(kernels)


class _Kern(KernelFamily):
    def __init__(self, name):
        self.name = name


@pytest.mark.parametrize("fams, match", [
    ([_Fam("a"), _Fam("a")], "family name 'a'"),
    ([_Fam("a", [Serves("dense", "x")]), _Fam("b", [Serves("dense", "x")])], "served by both a and b"),
    ([_Fam("a", kernels=[_Kern("k")]), _Fam("b", kernels=[_Kern("k")])], "kernel family 'k'"),
    ([_Fam("a", [Serves("no-such-pattern", "x")])], "unknown pattern 'no-such-pattern'"),
])
def test_a_clash_is_an_error_at_discovery(fams, match):
    with pytest.raises(registry.RegistryError, match=match):
        registry._check(fams)


def test_serves_and_balance_rules():
    assert serves_balance(BALANCED_ONLY, "balanced") and not serves_balance(BALANCED_ONLY, "unbalanced")
    assert serves_balance(UNBALANCED_ONLY, "spread:0.2") and not serves_balance(UNBALANCED_ONLY, "balanced")
    assert serves_balance(ANY, "unbalanced") and serves_balance(BALANCED_ONLY, None)
    with pytest.raises(ValueError):
        Serves("dense", "x", balance="sometimes")
    with pytest.raises(Unsupported):
        registry.family("dense").serving(type("P", (), {"pattern": "wsp-r", "impl": "cutlass"})())


def test_a_whole_layer_op_brings_its_reference():
    kw = dict(launch=lambda: None, out=None, result=lambda: None, kernel="k", cost=Cost(1, 1))
    assert Op(**kw).scope == GEMM
    with pytest.raises(ValueError, match="own reference"):
        Op(**kw, scope=LAYER)
    with pytest.raises(ValueError):
        Op(**kw, scope="bogus")
    assert Cost(2e12, 3e9).floor_ms(1e15, 1e12) == pytest.approx(3.0)


# ----------------------------------------------------------------------------------- short menus
def test_short_menus_are_subsets_led_by_the_default():
    for name, kf in registry.tunable().items():
        for problem in _problems(name):
            full = kf.candidates(problem, "fp16", "sm90")
            short = kf.candidates(problem, "fp16", "sm90", short=True)
            assert short[0] == full[0] and set(short) <= set(full) and len(short) <= kf.short_limit


def test_without_a_short_menu_for_the_arch_the_first_candidates_are_tried():
    kf = registry.kernel_family("dense")
    p = BatchProblem(16, 256, 6272, 256)
    assert kf.candidates(p, "fp16", "sm80", short=True) == kf.candidates(p, "fp16", "sm80")[: kf.short_limit]
    assert kf.candidates(p, "tf32", "sm90", short=True) == kf.candidates(p, "tf32", "sm90")[: kf.short_limit]


def test_the_readme_main_jobs_default_tune_compiles_few_kernels():
    """The budgeted tune of `cutlass-wsp sweep` (VGG-16 + ResNet-18, batch 32, p = 4, fp16): every tunable
    launch of the 736 points with the short menus builds at most 16 kernels, the 3 the sweep runs anyway
    among them: one wave of nvcc on a 16-core machine."""
    from cutlass_wsp.sweep.measure import Workload, plan
    from cutlass_wsp.sweep.plan import default_spec, expand
    from cutlass_wsp.sweep.session import tune_requests

    points, workload = expand(default_spec()), Workload(0)
    req = tune_requests(points, workload, "sm90", tuned=None, again=False, sm_count=132)
    union = {d for (fam, dt), probs in req.items() for p in probs
             for d in registry.candidates(p, dt, "sm90", family=fam, short=True)}
    untuned = set()
    for pt in points:
        try:
            found = plan(pt, workload, "sm90")
        except WspError:          # the fused layer of conv1_1 (c = 3): that point's row says unsupported
            assert (pt.impl, pt.c) == ("fused", 3)
            continue
        untuned |= set(found.descs) if found is not None else set()
    gemm = {d for d in untuned if d.family != "fused"}
    assert len(gemm) == 3 and gemm <= union
    assert len(union) <= 16
    # the fused layer is not in the budgeted tune (a short menu of one): kernels of its own, 16 (one wave on 16 cores):
    # generation 5's dense map in two schedules (persistent pairs up to c = 256, one-shot above), its full map with
    # the push gather in the 7 filter blocks the row-pruned points of c >= 128 take, generation 4's dense map and
    # its full map in the blocks of the c = 64 layers' row-pruned points
    fused = untuned - gemm
    assert not any(fam == "fused" for fam, _ in req) and 1 <= len(fused) <= 16
    assert sum(d.extra_dict().get("gather") == "push" for d in fused) <= 7
    assert sum(len(v) for v in req.values()) == 252          # distinct tunable problems of the main job


def _problems(kernel_family: str) -> list:
    from cutlass_wsp.problem import GatherTuneProblem, GroupedTuneProblem

    if kernel_family == "dense":
        return [BatchProblem(16, m, 6272, k) for m in (64, 128, 154, 512) for k in (64, 256, 512)]
    if kernel_family == "gather_b":
        return [GatherTuneProblem(BatchProblem(16, m, 6272, k), 512) for m in (64, 128, 512) for k in (64, 160)]
    if kernel_family == "wsp_r_grouped":
        return [GroupedTuneProblem((1, 100, 300, 512) * 4, 6272, 512), GroupedTuneProblem((64,) * 16, 25088, 64)]
    return []
