"""Tuning the pruned families on the CPU: the gather_b (fused WSP-C) and wsp_r_grouped (unbalanced WSP-R)
menus, their tuning-cache keys, the search with an injected measure, the families and the sweep picking
the winners up, and bench/tune_families.py's host-side parts. A fake nvcc and a fake measure stand in
for the toolchain and the GPU."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from cutlass_wsp.errors import InputError, Unsupported
from cutlass_wsp.families import registry
from cutlass_wsp.families import gather as gather_menu
from cutlass_wsp.families import wsp_r as grouped_menu
from cutlass_wsp.families.gather import gather_desc, random_global_index
from cutlass_wsp.families.registry import candidate_union, candidates
from cutlass_wsp.families.wsp_c import WspC
from cutlass_wsp.families.wsp_r import WspR, check_grouped_desc, grouped_desc
from cutlass_wsp.kernels import candidates as cand
from cutlass_wsp.kernels import emitter, search
from cutlass_wsp.kernels.description import SM80_AUTO_STAGE_BUDGET, SM80_SMEM_BYTES, default_desc
from cutlass_wsp.kernels.store import TunedChoices, TuningStore
from cutlass_wsp.problem import BatchProblem, GatherTuneProblem, GroupedTuneProblem
from cutlass_wsp.pruning import prune
from cutlass_wsp.weights import he_winograd_weights

from test_tuning import GPU, FakeMeasure, cache, compiles, tuning  # noqa: F401  (cache is a fixture)

GATHER, GROUPED = "gather_b", "wsp_r_grouped"


def gp(L, M, N, K, c) -> GatherTuneProblem:
    return GatherTuneProblem(BatchProblem(L, M, N, K), c)


# The bench's shapes: VGG-16 / ResNet-18 p = 4 batch 32 at ratios 0.5..0.9 (M = n, N = Npad, K = kept padded).
GATHER_PROBLEMS = [gp(16, 64, 401408, 32, 64), gp(16, 64, 25088, 8, 64), gp(16, 128, 100352, 64, 128),
                   gp(16, 128, 6272, 16, 128), gp(16, 256, 25088, 128, 256), gp(16, 256, 1568, 80, 256),
                   gp(16, 512, 6272, 160, 512), gp(16, 512, 512, 256, 512)]
SMALL_GROUPS = GroupedTuneProblem((1, 5, 20, 27, 33, 40, 45, 50, 52, 54, 55, 57, 58, 60, 61, 61), 401408, 64)
MIXED_GROUPS = GroupedTuneProblem((50, 80, 120, 200, 300, 40, 60, 90, 100, 110, 130, 140, 150, 160, 170, 180),
                                  6272, 512)
LARGE_GROUPS = GroupedTuneProblem((300, 400, 500, 512) * 4, 512, 512)
GROUPED_PROBLEMS = [SMALL_GROUPS, MIXED_GROUPS, LARGE_GROUPS, GroupedTuneProblem((64, 128) * 8, 25088, 128)]


# ------------------------------------------------------------------------------------------ menus
@pytest.mark.parametrize("dtype", ["fp16", "bf16", "tf32"])
def test_gather_menu_starts_with_the_fused_default_and_is_valid_distinct_and_deterministic(dtype):
    sets = [candidates(p, dtype, "sm90", family=GATHER) for p in GATHER_PROBLEMS]
    again = [candidates(p, dtype, "sm90", family=GATHER) for p in reversed(GATHER_PROBLEMS)][::-1]
    assert [[d.name for d in s] for s in sets] == [[d.name for d in s] for s in again]
    for p, s in zip(GATHER_PROBLEMS, sets):
        assert s[0] == gather_desc(dtype, N=p.N, K=p.K)           # exactly what WspC(mode="fused") runs
        assert 1 <= len(s) <= gather_menu.PRUNED_MAX_CANDIDATES == 12
        assert len({d.name for d in s}) == len(s)                 # distinct kernels, not only distinct objects
        for d in s:
            assert (d.family, d.dtype, d.arch) == (GATHER, dtype, "sm80")
            assert d.validate() is d and d.warp == d.warp_shape()
    if dtype != "tf32":      # fp16/bf16: every shape gets real alternatives
        assert all(len(s) >= 4 for s in sets)


@pytest.mark.parametrize("dtype,arch,kernel_arch", [("fp16", "sm90", "sm90"), ("bf16", "sm90", "sm90"),
                                                    ("tf32", "sm90", "sm80"), ("fp16", "sm80", "sm80")])
def test_grouped_menu_starts_with_the_grouped_default_and_passes_the_template_checks(dtype, arch, kernel_arch):
    for p in GROUPED_PROBLEMS:
        s = candidates(p, dtype, arch, family=GROUPED)
        assert s == candidates(p, dtype, arch, family=GROUPED)
        assert s[0] == grouped_desc(dtype, arch, N=p.N, K=p.K)   # exactly what WspR(mode="grouped") runs
        assert 3 <= len(s) <= gather_menu.PRUNED_MAX_CANDIDATES == 12 and len({d.name for d in s}) == len(s)
        for d in s:
            assert (d.family, d.dtype, d.arch) == (GROUPED, dtype, kernel_arch)
            assert check_grouped_desc(d) is d
            assert d.swizzle == 1


def test_narrow_alignment_grouped_menu_is_the_sm80_one():
    p = GroupedTuneProblem((64, 128) * 8, 3136, 36)                # K = 36: 8-byte accesses at most
    s = candidates(p, "fp16", "sm90", family=GROUPED)
    assert {d.arch for d in s} == {"sm80"} and {d.alignment for d in s} == {4}


def test_every_new_candidate_renders_its_knobs():
    for d in candidate_union(GATHER_PROBLEMS, "fp16", "sm90", family=GATHER):
        src = emitter.render(d)
        m, n, k = d.tile
        assert f"GemmShape<{m}, {n}, {k}>" in src
        assert f"GemmIdentityThreadblockSwizzle<{d.swizzle}>" in src
        assert f"{d.sm80_stages()},  " in src
    for d in candidate_union(GROUPED_PROBLEMS, "fp16", "sm90", family=GROUPED):
        src = emitter.render(d)
        assert "ClusterShape = Shape<_{}, _{}, _{}>;".format(*d.cluster) in src
        assert '#error "grouped' not in src
        schedule = {"tma_ws_cooperative": "Cooperative", "tma_ws_pingpong": "Pingpong"}[d.resolved().kernel_schedule]
        assert f"KernelPtrArrayTmaWarpSpecialized{schedule};" in src


def test_gather_tile_m_follows_m_and_tile_k_64_only_for_long_k():
    for p in GATHER_PROBLEMS:
        biggest = cand.tile_m_choices(p.M)[0]
        s = candidates(p, "fp16", "sm90", family=GATHER)
        assert all(d.tile[0] <= biggest for d in s[1:]), p
        assert any(d.tile[2] == 64 for d in s) == (not cand.wastes(p.K, 64)), p
    m64 = candidates(gp(16, 64, 401408, 32, 64), "fp16", "sm90", family=GATHER)
    assert {d.tile[0] for d in m64[1:]} == {64}


def test_gather_deep_pipelines_go_beyond_the_auto_budget_within_the_sm80_cap():
    s = candidates(gp(16, 512, 6272, 160, 512), "fp16", "sm90", family=GATHER)
    deep = [d for d in s if d.stages]
    assert {d.tile for d in deep} == {(256, 128, 32), (128, 128, 32)}
    for d in deep:
        assert d.stages == gather_menu.DEEP_STAGES
        assert d.stages * d.stage_bytes() <= SM80_SMEM_BYTES
        assert d.stages > replace(d, stages=0).sm80_stages()      # more than auto picks (4 at most)
    assert max(d.stages * d.stage_bytes() for d in deep) > SM80_AUTO_STAGE_BUDGET   # 256x128: 144 KB
    # tf32's 128x128 stages are twice as big: 6 of them exceed the 163 KB cap and are dropped
    tf32 = candidates(gp(16, 512, 6272, 160, 512), "tf32", "sm90", family=GATHER)
    assert all(d.stages * d.stage_bytes() <= SM80_SMEM_BYTES for d in tf32 if d.stages)
    assert not any(d.tile == (128, 128, 32) and d.stages for d in tf32)


def test_gather_swizzle_only_where_m_spans_several_tile_rows():
    for p in GATHER_PROBLEMS:
        swizzled = [d for d in candidates(p, "fp16", "sm90", family=GATHER) if d.swizzle != 1]
        assert bool(swizzled) == (p.M > 128), p
        assert {d.swizzle for d in swizzled} <= {2, 4}
        assert all(-(-p.M // d.tile[0]) >= 2 for d in swizzled)


def test_gather_narrow_tiles_only_when_tiles_are_few():
    few = candidates(gp(16, 512, 512, 256, 512), "fp16", "sm90", family=GATHER)     # ResNet layer4
    many = candidates(gp(16, 512, 6272, 160, 512), "fp16", "sm90", family=GATHER)   # VGG conv4
    assert [d.tile for d in few if d.tile[1] == 64] == [(256, 64, 32)]
    assert not any(d.tile[1] == 64 for d in many)
    assert few[-1].warp == (64, 32, 32)           # 8 warps, not 2x2 warps of 128 rows


def test_grouped_tiles_follow_the_group_rows():
    small = candidates(SMALL_GROUPS, "fp16", "sm90", family=GROUPED)
    assert {d.tile[0] for d in small[1:]} == {64} and all(d.cluster == (1, 1, 1) for d in small)
    large = candidates(LARGE_GROUPS, "fp16", "sm90", family=GROUPED)
    assert {d.tile[0] for d in large} == {64, 128, 256}
    assert {(d.tile, d.cluster) for d in large if d.cluster != (1, 1, 1)} == {
        ((64, 128, 64), (2, 1, 1)), ((128, 128, 64), (2, 1, 1))}
    assert any(d.tile[2] == 128 for d in large)                       # K = 512: tile K 128
    assert not any(d.tile[2] == 128 for d in candidates(SMALL_GROUPS, "fp16", "sm90", family=GROUPED))  # K = 64
    assert any(d.tile[1] == 64 for d in large)                        # N = 512: few tiles
    assert not any(d.tile[1] == 64 for d in candidates(MIXED_GROUPS, "fp16", "sm90", family=GROUPED))
    # the median group spans 2 tile rows of 64 but not of 128
    mixed = candidates(MIXED_GROUPS, "fp16", "sm90", family=GROUPED)
    assert [d.tile for d in mixed if d.cluster == (2, 1, 1)] == [(64, 128, 64)]


def test_limit_cuts_the_menus_in_order_and_they_stay_within_12():
    for family, p in ((GATHER, GATHER_PROBLEMS[6]), (GROUPED, LARGE_GROUPS)):
        full = candidates(p, "fp16", "sm90", family=family, limit=16)
        assert len(full) <= 12 and candidates(p, "fp16", "sm90", family=family, limit=3) == full[:3]
    with pytest.raises(Unsupported, match="limit"):
        candidates(LARGE_GROUPS, "fp16", "sm90", family=GROUPED, limit=0)


def test_group_row_waste_and_tile_count():
    assert grouped_menu.group_row_waste([64, 64], 128) == pytest.approx(0.5)
    assert grouped_menu.group_row_waste([128, 256], 128) == 0.0
    assert grouped_menu.group_row_waste([1, 255], 128) == pytest.approx(1 - 256 / 384)     # one tile for 1 row
    assert grouped_menu.group_tile_count(GroupedTuneProblem((1, 129, 256), 300, 64), (128, 128, 64)) == (1 + 2 + 2) * 3


def test_each_family_reads_its_own_problem_type(cache):
    dense = BatchProblem(16, 128, 6272, 128)
    with pytest.raises(InputError, match="GatherTuneProblem"):
        candidates(dense, "fp16", "sm90", family=GATHER)
    with pytest.raises(InputError, match="BatchProblem"):
        candidates(GATHER_PROBLEMS[0], "fp16", "sm90")
    with pytest.raises(InputError, match="GroupedTuneProblem"):
        registry.kernel_family(GROUPED).check_problem(GATHER_PROBLEMS[0])
    with pytest.raises(InputError):
        tuning.tune_many([dense], "fp16", "sm90", family=GATHER, cache=cache, measure=FakeMeasure({}), gpu_name=GPU)
    assert compiles(cache) == 0                                         # refused before any nvcc
    with pytest.raises(Unsupported, match="family 'bcbp'"):
        tuning.tune_many([dense], "fp16", "sm90", family="bcbp", cache=cache, measure=FakeMeasure({}))
    with pytest.raises(Unsupported, match="family 'dense'"):        # the search knows only what it is given
        search.tune_many([dense], "fp16", "sm90", families={}, cache=cache, measure=FakeMeasure({}))


def test_problem_types_check_their_extents():
    with pytest.raises(InputError):
        GroupedTuneProblem((), 64, 64)
    with pytest.raises(InputError):
        GroupedTuneProblem((3, 0), 64, 64)
    with pytest.raises(InputError):
        GatherTuneProblem(BatchProblem(16, 64, 64, 8), 0)
    with pytest.raises(InputError):
        GatherTuneProblem((16, 64, 64, 8), 64)
    g = GroupedTuneProblem([np.int64(3), 5], 64, 128)                   # numpy counts normalise to ints
    assert g.Ms == (3, 5) and (g.L, g.M) == (2, 5) and g == GroupedTuneProblem((3, 5), 64, 128)


# ------------------------------------------------------------------------------------------- keys
def test_the_dense_key_is_unchanged(cache):
    key = tuning.tuning_key(BatchProblem(16, 128, 6272, 128), "fp16", "sm90", gpu_name=GPU, toolchain=cache.toolchain)
    assert key == f"gpu={GPU}|family=dense|dtype=fp16|arch=sm90|L=16|M=128|N=6272|K=128|cutlass=4.2.0|nvcc=12.4.131"


def test_gather_key_names_the_family_the_problem_and_c(cache):
    p = gp(16, 128, 6272, 64, 128)
    key = tuning.tuning_key(p, "fp16", "sm90", gpu_name=GPU, toolchain=cache.toolchain, family=GATHER)
    assert key == (f"gpu={GPU}|family=gather_b|dtype=fp16|arch=sm90|L=16|M=128|N=6272|K=64|c=128|"
                   "cutlass=4.2.0|nvcc=12.4.131")
    other = tuning.tuning_key(gp(16, 128, 6272, 64, 256), "fp16", "sm90", gpu_name=GPU, toolchain=cache.toolchain,
                              family=GATHER)
    assert other != key and "c=256" in other.split("|")


def test_grouped_key_holds_a_digest_of_the_exact_row_counts(cache):
    def key(Ms, N=6272, K=256):
        return tuning.tuning_key(GroupedTuneProblem(Ms, N, K), "fp16", "sm90", gpu_name=GPU,
                                 toolchain=cache.toolchain, family=GROUPED)

    k = key((10, 20, 30))
    fields = dict(f.split("=", 1) for f in k.split("|"))
    assert fields["family"] == GROUPED and (fields["L"], fields["M"], fields["N"], fields["K"]) == ("3", "30", "6272", "256")
    assert re.fullmatch(r"[0-9a-f]{12}", fields["Ms"])
    assert key((10, 20, 30)) == k
    assert len({k, key((30, 20, 10)), key((11, 19, 30)), key((10, 20, 30), N=6280), key((10, 20, 30), K=512)}) == 5


# ----------------------------------------------------------------------------------- the search
def _fastest_is(descs, index: int) -> dict:
    """A fake table where candidate `index` is the fastest and the default the slowest."""
    return {d.name: [0.5 if i == 0 else (0.1 if i == index else 0.3 + 0.01 * i)] for i, d in enumerate(descs)}


@pytest.mark.parametrize("family,problem", [(GATHER, gp(16, 256, 25088, 128, 256)), (GROUPED, LARGE_GROUPS)])
def test_search_per_family_records_the_winner_under_its_family(cache, family, problem):
    descs = candidates(problem, "fp16", "sm90", family=family, limit=5)
    fake = FakeMeasure(_fastest_is(descs, 3))
    r = tuning.tune(problem, "fp16", "sm90", cache=cache, family=family, limit=5, measure=fake, gpu_name=GPU,
                    budget_s=1.0)
    assert {type(p) for p, _, _ in fake.calls} == {type(problem)}      # the measure gets the family's problem
    assert r.family == family and r.best == descs[3] and r.default == descs[0]
    assert r.speedup_vs_default == pytest.approx(5.0) and r.recorded
    assert f"family={family}" in r.key.split("|")
    assert tuning.best_desc(problem, "fp16", "sm90", cache=cache, gpu_name=GPU, family=family) == descs[3]
    assert tuning.best_desc(problem, "fp16", "sm90", cache=cache, gpu_name="Other GPU", family=family) is None
    entry = TuningStore.beside(cache).get(r.key)
    assert entry["key_fields"]["family"] == family and entry["name"] == descs[3].name
    d = json.loads(json.dumps(r.to_dict()))
    assert d["family"] == family and d["best"] == descs[3].name
    if family == GATHER:
        assert d["c"] == problem.c
    else:
        assert d["Ms"] == list(problem.Ms) and d["M"] == 512


def test_a_grouped_entry_the_template_cannot_build_is_ignored(cache):
    p = MIXED_GROUPS
    key = tuning.tuning_key(p, "fp16", "sm90", gpu_name=GPU, toolchain=cache.toolchain, family=GROUPED)
    bad = default_desc(GROUPED, "fp16", "sm90", kernel_schedule="cpasync_ws")     # validate() passes it
    assert bad.validate() is bad
    TuningStore.beside(cache).put(key, {"desc": bad.as_dict()})
    assert tuning.best_desc(p, "fp16", "sm90", cache=cache, gpu_name=GPU, family=GROUPED) is None
    good = candidates(p, "fp16", "sm90", family=GROUPED)[1]
    TuningStore.beside(cache).put(key, {"desc": good.as_dict()})
    assert tuning.best_desc(p, "fp16", "sm90", cache=cache, gpu_name=GPU, family=GROUPED) == good


def test_tune_by_family_compiles_every_family_once(cache):
    dense = BatchProblem(16, 512, 1568, 512)
    req = {("dense", "fp16"): [dense], (GATHER, "fp16"): GATHER_PROBLEMS[5:7], (GROUPED, "fp16"): [MIXED_GROUPS]}
    union = list(dict.fromkeys(d for (fam, dt), probs in req.items()
                               for p in probs for d in candidates(p, dt, "sm90", family=fam)))
    fake = FakeMeasure({d.name: [0.2 - 0.001 * i] for i, d in enumerate(union)})
    seen = []
    out = search.tune_by_family(req, "sm90", families=registry.tunable(), cache=cache, measure=fake, gpu_name=GPU,
                                budget_s=0.3, progress=seen.append)
    assert seen[0] == f"compiling {len(union)} candidate kernels for 4 problems"
    assert compiles(cache) == len(union)
    assert list(out) == list(req)
    for (fam, _), results in out.items():
        assert [r.problem for r in results] == list(req[(fam, "fp16")])
        assert all(r.family == fam and r.recorded and r.best.family == fam for r in results)
    assert sorted(e["key_fields"]["family"] for e in TuningStore.beside(cache).entries().values()) == \
        ["dense", GATHER, GATHER, GROUPED]
    search.tune_by_family(req, "sm90", families=registry.tunable(), cache=cache, measure=fake, gpu_name=GPU,
                          budget_s=0.3)
    assert compiles(cache) == len(union)                               # all cache hits the second time


def test_random_global_index_is_a_sorted_choice_per_position():
    idx = random_global_index(4, 10, 8, np.random.default_rng(1))
    assert idx.shape == (4, 8) and idx.dtype == np.int32
    for i, row in enumerate(idx):
        assert (np.diff(row) > 0).all() and i * 10 <= row.min() and row.max() < (i + 1) * 10
    padded = random_global_index(2, 5, 8, np.random.default_rng(1))    # K > c: all 5 columns, then pads
    assert list(padded[1]) == [5, 6, 7, 8, 9, 9, 9, 9]
    assert (random_global_index(4, 10, 8, np.random.default_rng(1)) == idx).all()


# ------------------------------------------------------------------------------------- consumers
def _record(cache, family, problem, desc) -> None:
    key = tuning.tuning_key(problem, desc.dtype, "sm90", gpu_name=GPU, toolchain=cache.toolchain, family=family)
    TuningStore.beside(cache).put(key, {"desc": desc.as_dict(), "name": desc.name})


def _choices(cache) -> TunedChoices:
    """What a run on a GPU named GPU reads from the fake cache's tuning file (once)."""
    return TunedChoices.load(cache, gpu_name=GPU, checks=registry.checks())


def test_fused_wsp_c_runs_the_tuned_gather_kernel(cache):
    pruned = prune(he_winograd_weights((128, 128), 4), "wsp-c", 0.5)
    fam = WspC(pruned, "fp16", 3136, arch="sm90", mode="fused", tuned=_choices(cache))
    assert fam.tune_problem == (GATHER, gp(16, 128, 3136, 64, 128))
    assert fam.desc == gather_desc("fp16", N=3136, K=64) and not fam.tuned      # nothing tuned yet
    tuned = candidates(fam.tune_problem[1], "fp16", "sm90", family=GATHER)[2]
    _record(cache, GATHER, fam.tune_problem[1], tuned)
    assert WspC(pruned, "fp16", 3136, arch="sm90", mode="fused").desc != tuned   # no choices given: the default
    again = WspC(pruned, "fp16", 3136, arch="sm90", mode="fused", tuned=_choices(cache))
    assert again.desc == tuned and again.tuned
    two_pass = WspC(pruned, "fp16", 3136, arch="sm90", mode="two_pass", tuned=_choices(cache))
    assert two_pass.tune_problem == ("dense", BatchProblem(16, 128, 3136, 64)) and two_pass.desc.family == "dense"
    other = prune(he_winograd_weights((128, 128), 4), "wsp-c", 0.7)   # another K: another key
    assert WspC(other, "fp16", 3136, arch="sm90", mode="fused", tuned=_choices(cache)).desc == \
        gather_desc("fp16", N=3136, K=40)
    explicit = WspC(pruned, "fp16", 3136, arch="sm90", mode="fused", desc=gather_desc("fp16", N=3136, K=64),
                    tuned=_choices(cache))
    assert explicit.desc == gather_desc("fp16", N=3136, K=64) and not explicit.tuned   # desc= wins


def test_grouped_wsp_r_runs_the_tuned_grouped_kernel(cache):
    pruned = prune(he_winograd_weights((256, 128), 4), "wsp-r", 0.7, balance="unbalanced")
    fam = WspR(pruned, "fp16", 3136, arch="sm90", mode="grouped", tuned=_choices(cache))
    family, problem = fam.tune_problem
    assert family == GROUPED and problem == GroupedTuneProblem(tuple(pruned.kept_per_position), 3136, 128)
    assert fam.desc == grouped_desc("fp16", "sm90", N=3136, K=128) and not fam.tuned
    tuned = candidates(problem, "fp16", "sm90", family=GROUPED)[1]
    _record(cache, GROUPED, problem, tuned)
    assert WspR(pruned, "fp16", 3136, arch="sm90", mode="grouped", tuned=_choices(cache)).desc == tuned
    assert WspR(pruned, "fp16", 3136, arch="sm90", mode="padded", tuned=_choices(cache)).desc.family == "dense"
    # a search recorded through tune() reaches the family too
    descs = candidates(problem, "fp16", "sm90", family=GROUPED, limit=3)
    tuning.tune(problem, "fp16", "sm90", cache=cache, family=GROUPED, limit=3, gpu_name=GPU,
                measure=FakeMeasure(_fastest_is(descs, 2)))
    assert WspR(pruned, "fp16", 3136, arch="sm90", mode="grouped", tuned=_choices(cache)).desc == descs[2]


def test_sweep_tune_searches_the_gather_and_grouped_problems_too(cache):
    from cutlass_wsp.sweep import measure, session
    from cutlass_wsp.sweep.plan import SweepSpec, expand

    seen = {}

    def fake_search(requests, arch, **kw):
        seen.update(requests=requests, arch=arch, **kw)
        return {}

    spec = SweepSpec(layers=("resnet18:12",), batches=(32,), tiles=(4,), dtypes=("fp16",),
                     patterns=("dense", "wsp-r", "wsp-c-fused", "wsp-c"), ratios=(0.7,),
                     balances=("balanced", "unbalanced"),
                     implementations={"dense": ("cutlass",), "wsp-r": ("cutlass-grouped",),
                                      "wsp-c-fused": ("cutlass", "cutlass-padded"), "wsp-c": ("cutlass-padded",)})
    points = expand(spec)
    session.tune_points(points, mode="again", problem_s=0.25, cache=cache, search=fake_search, arch="sm90",
                        say=lambda m: None)
    req = seen["requests"]
    assert seen["arch"] == "sm90" and seen["budget_s"] == 0.25 and seen["cache"] is cache
    assert seen["families"] == registry.tunable() and seen["short"] is False and seen["deadline"] is None
    assert set(req) == {("dense", "fp16"), (GATHER, "fp16"), (GROUPED, "fp16")}
    workload = measure.Workload(0)
    expected = {}
    for pt in points:
        if pt.pattern in ("wsp-c-fused", "wsp-r"):
            plan = measure.plan(pt, workload, "sm90")
            expected.setdefault(plan.kernel, set()).add(plan.problem)
    assert set(req[(GATHER, "fp16")]) == expected[GATHER] and len(expected[GATHER]) == 2   # balanced, unbalanced
    assert set(req[(GROUPED, "fp16")]) == expected[GROUPED] and len(expected[GROUPED]) == 2
    unbalanced = [p for p in req[(GROUPED, "fp16")] if len(set(p.Ms)) > 1]
    assert len(unbalanced) == 1 and unbalanced[0].N == 512 and unbalanced[0].K == 512
    dense = req[("dense", "fp16")]
    assert BatchProblem(16, 512, 512, 512) in dense                   # the dense layer itself
    assert all(isinstance(p, BatchProblem) for p in dense)             # WSP-C padded: its dense batch


# --------------------------------------------------------------------- bench/tune_families.py
@pytest.fixture(scope="module")
def bench():
    from bench_scripts import load_bench_script

    return load_bench_script("tune_families")


def test_bench_default_problems_are_the_sweep_points(bench):
    cases = bench.cases(["resnet18"], [0.5, 0.9], list(bench.FAMILIES), layers=["layer4"])
    assert [(c.family, c.ratio) for c in cases] == [(GATHER, 0.5), (GROUPED, 0.5), (GATHER, 0.9), (GROUPED, 0.9)]
    c = cases[0]
    assert (c.c, c.n, c.H, c.p, c.batch, c.T, c.balance) == (512, 512, 7, 4, 32, 512, "balanced")
    assert c.problem == gp(16, 512, 512, 256, 512) and sum(c.kept) == 16 * 256
    g = cases[1]
    assert g.balance == "unbalanced" and isinstance(g.problem, GroupedTuneProblem)
    assert g.problem.Ms == g.kept and len(set(g.kept)) > 1 and sum(g.kept) == round(0.5 * 16 * 512)
    # the sweep's pruning (seed 0 He weights): the same problem the sweep's WspR asks the cache for
    pruned = prune(he_winograd_weights((512, 512), 4, seed=0), "wsp-r", 0.5, balance="unbalanced", seed=0)
    assert WspR(pruned, "fp16", 512, arch="sm90", mode="grouped").tune_problem == (GROUPED, g.problem)
    assert len(bench.cases(["vgg16", "resnet18"], [0.5, 0.7, 0.9], list(bench.FAMILIES), limit=5)) == 5


def test_bench_arguments(bench):
    a = bench.parser().parse_args([])
    assert (a.budget, a.ratios, a.families, a.nets, a.out) == (
        1.0, [0.5, 0.7, 0.9], [GATHER, GROUPED], ["vgg16", "resnet18"], "results/tune-families-h100.jsonl")
    a = bench.parser().parse_args(["--layers", "vgg16.conv4_2, resnet18.layer4", "--limit", "3", "--budget", "0.5",
                                   "--families", "gather_b", "--ratios", "0.7"])
    assert (a.layers, a.limit, a.budget, a.families, a.ratios) == (
        ["vgg16.conv4_2", "resnet18.layer4"], 3, 0.5, [GATHER], [0.7])
    for bad in (["--families", "dense"], ["--ratios", "1.5"], ["--budget", "0"], ["--limit", "-1"],
                ["--ratios", "x"]):
        with pytest.raises(SystemExit):
            bench.parser().parse_args(bad)
    with pytest.raises(InputError, match="matches"):
        bench.layer_shapes(["vgg16"], ["no_such_layer"])


def test_bench_list_and_compile_only(bench, cache, capsys):
    cases = bench.cases(["resnet18"], [0.7], list(bench.FAMILIES), layers=["layer3", "layer4"])
    assert bench.list_mode(cases, "fp16", "sm90", 132, 1.0) == 0
    _, union = bench.candidate_sets(cases, "fp16", "sm90", 132)
    out = capsys.readouterr().out
    assert f"4 problems (4 distinct), {len(union)} distinct kernels; about 4 s of timing" in out
    assert bench.compile_only(cases, "fp16", "sm90", 132, cache, jobs=2) == 0
    assert compiles(cache) == len(union)
    assert f"built {len(union)}" in capsys.readouterr().out


def _fake_result(problem, family, default_ms, best_index, best_ms):
    descs = candidates(problem, "fp16", "sm90", family=family)
    trials = [search.Trial(descs[0], "ok", median_ms=default_ms), search.Trial(descs[best_index], "ok", median_ms=best_ms)]
    return search.TuneResult(problem, "fp16", "sm90", descs[0], descs[best_index], best_ms, default_ms, trials,
                             key="k", recorded=True, family=family)


def test_bench_rows_floor_and_summary(bench):
    from cutlass_wsp.dtypes import get_dtype
    from cutlass_wsp.families.wsp_c import cols_cost
    from cutlass_wsp.families.wsp_r import rows_cost

    gather_case, grouped_case = bench.cases(["resnet18"], [0.5], list(bench.FAMILIES), layers=["layer4"])
    ceil = SimpleNamespace(gemm_flops=800e12, copy_bw_Bps=3.0e12)
    floor = cols_cost(BatchProblem(16, 512, 512, 512), get_dtype("fp16"), gather_case.kept).floor_ms(800e12, 3e12)
    assert bench.floor_ms(gather_case, "fp16", ceil) == pytest.approx(floor)
    assert bench.floor_ms(grouped_case, "fp16", ceil) == pytest.approx(
        rows_cost(BatchProblem(16, 512, 512, 512), get_dtype("fp16"), grouped_case.kept).floor_ms(800e12, 3e12))

    row = bench.case_row(gather_case, _fake_result(gather_case.problem, GATHER, 0.020, 2, 0.016), "fp16", "sm90", ceil)
    assert row["speedup_vs_default"] == pytest.approx(1.25) and row["c_rows"] == 512
    assert row["default_pct_of_floor"] == pytest.approx(100 * floor / 0.020)
    assert row["best_pct_of_floor"] == pytest.approx(100 * floor / 0.016) and row["status"] == "ok"
    json.dumps(row)
    grow = bench.case_row(grouped_case, _fake_result(grouped_case.problem, GROUPED, 0.030, 1, 0.030), "fp16", "sm90",
                          ceil)
    assert grow["Ms"] == list(grouped_case.kept) and grow["best_config"] == "64x128x64 pp"
    line = bench.table_line(row)
    assert "1.25x" in line and gather_case.label[:24] in line and row["best_config"] in line
    s = bench.summarize([row, grow])
    assert s["families"][GATHER]["geomean_speedup_vs_default"] == pytest.approx(1.25)
    assert s["families"][GROUPED]["default_kept"] == 0 and s["families"][GROUPED]["tuned"] == 1


def test_bench_config_column(bench):
    g = replace(gather_desc("fp16", N=512, K=256), tile=(256, 128, 32), stages=6, swizzle=4)
    assert bench.short_config(g) == "256x128x32 w64x64 sw4 s6"
    r = default_desc(GROUPED, "fp16", "sm90", tile=(128, 128, 64), kernel_schedule="tma_ws_pingpong", cluster=(2, 1, 1))
    assert bench.short_config(r) == "128x128x64 pp c2x1"
