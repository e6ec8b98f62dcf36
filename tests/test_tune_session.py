"""Tuned by default, on the CPU: which problems a sweep or bench run tunes (not yet tuned, short menus),
the budget (builds and problems stop at the deadline, the rest keep their defaults and the run says so),
and the flags. A fake nvcc, a fake measure and a fake clock stand in for the toolchain, GPU and time."""

from __future__ import annotations

import pytest

from cutlass_wsp.families import registry
from cutlass_wsp.kernels import search
from cutlass_wsp.kernels.store import TunedChoices, TuningStore, tuning_key
from cutlass_wsp.problem import BatchProblem
from cutlass_wsp.sweep import session
from cutlass_wsp.sweep.measure import Workload, plan
from cutlass_wsp.sweep.plan import SweepSpec, expand

from test_tuning import GPU, FakeMeasure, cache  # noqa: F401  (cache is a fixture)


class Clock:
    def __init__(self, step: float = 0.0):
        self.now, self.step = 1000.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def _points():
    spec = SweepSpec(layers=("resnet18:12",), batches=(32,), tiles=(4,), dtypes=("fp16",),
                     patterns=("dense", "wsp-r", "wsp-c-fused", "wwp"), ratios=(0.7,),
                     balances=("balanced", "unbalanced"),
                     implementations={"dense": ("cutlass", "cublas"), "wsp-r": ("cutlass", "cutlass-grouped"),
                                      "wsp-c-fused": ("cutlass", "cutlass-padded")})
    return expand(spec)


# ------------------------------------------------------------------------------- what is tuned
def test_requests_skip_what_is_tuned_and_what_has_nothing_to_choose(cache):
    points = _points()
    everything = session.tune_requests(points, Workload(0), "sm90", tuned=None, again=True)
    assert set(everything) == {("dense", "fp16"), ("gather_b", "fp16"), ("wsp_r_grouped", "fp16")}
    auto = session.tune_requests(points, Workload(0), "sm90", tuned=None, again=False, sm_count=132)
    assert auto == everything           # every one of these has a short menu of 2 or more
    dense = BatchProblem(16, 512, 512, 512)
    best = registry.candidates(dense, "fp16", "sm90")[1]
    key = tuning_key(dense, "fp16", "sm90", gpu_name=GPU, toolchain=cache.toolchain)
    TuningStore.beside(cache).put(key, {"desc": best.as_dict()})
    tuned = TunedChoices.load(cache, gpu_name=GPU, checks=registry.checks())
    left = session.tune_requests(points, Workload(0), "sm90", tuned=tuned, again=False, sm_count=132)
    assert dense not in left[("dense", "fp16")] and len(left[("dense", "fp16")]) == len(everything[("dense", "fp16")]) - 1
    assert dense in session.tune_requests(points, Workload(0), "sm90", tuned=tuned, again=True)[("dense", "fp16")]
    # a point whose kernel is tuned now runs it: plan says so
    wsp_r = next(p for p in points if p.pattern == "dense" and p.impl == "cutlass")
    found = plan(wsp_r, Workload(0), "sm90", tuned=tuned)
    assert found.descs == (best,) and found.tuned


def test_a_single_candidate_menu_is_not_tuned_by_default(monkeypatch):
    """A problem whose short menu is the default alone has nothing to choose from: only --tune searches it."""
    class One(type(registry.kernel_family("dense"))):
        def candidates(self, problem, dtype, arch, **kw):
            full = super().candidates(problem, dtype, arch, **kw)
            return full[:1] if kw.get("short") else full

    kernels = dict(registry.tunable(), dense=One())
    monkeypatch.setattr(registry, "tunable", lambda: kernels)
    assert ("dense", "fp16") not in session.tune_requests(_points(), Workload(0), "sm90", tuned=None, again=False)
    assert ("dense", "fp16") in session.tune_requests(_points(), Workload(0), "sm90", tuned=None, again=True)


# ---------------------------------------------------------------------------------- the modes
def _fake_search(seen: list):
    def fake(requests, arch, **kw):
        seen.append(dict(requests=requests, arch=arch, **kw))
        return {key: [search.TuneResult(p, key[1], arch, registry.candidates(p, key[1], arch, family=key[0])[0],
                                        None, None, None, family=key[0], recorded=False, skipped=i % 2 == 1)
                      for i, p in enumerate(probs)] for key, probs in requests.items()}
    return fake


def test_the_default_tune_is_short_and_budgeted(cache, monkeypatch):
    monkeypatch.setattr(session, "tuned_choices", lambda c=None: TunedChoices())
    seen, said = [], []
    clock = Clock()
    s = session.tune_points(_points(), mode="auto", cache=cache, search=_fake_search(seen), arch="sm90",
                            say=said.append, clock=clock)
    (call,) = seen
    assert call["short"] is True and call["confirm"] == 2 and call["verbose"] is False
    assert call["deadline"] == pytest.approx(1000.0 + session.DEFAULT_TUNE_BUDGET_S)
    assert call["budget_s"] == session.AUTO_PROBLEM_S and call["families"] == registry.tunable()
    assert s.problems == sum(len(v) for v in call["requests"].values()) and s.skipped == s.problems // 2
    assert said[0].startswith(f"{s.problems} problems to tune (short menus, budget 150 s)")
    assert "the budget ran out" in said[-1] and said[-1] == s.line()


def test_tune_again_uses_the_full_menus_without_a_limit(cache):
    seen = []
    session.tune_points(_points(), mode="again", cache=cache, search=_fake_search(seen), arch="sm90",
                        say=lambda m: None)
    assert seen[0]["short"] is False and seen[0]["deadline"] is None and seen[0]["confirm"] == 3
    assert seen[0]["budget_s"] == session.AGAIN_PROBLEM_S
    seen.clear()
    session.tune_points(_points(), mode="again", budget_s=60, problem_s=0.5, cache=cache, search=_fake_search(seen),
                        arch="sm90", say=lambda m: None, clock=Clock())
    assert seen[0]["deadline"] == pytest.approx(1060.0) and seen[0]["budget_s"] == 0.5


def test_no_tune_tunes_nothing(cache):
    seen = []
    s = session.tune_points(_points(), mode="off", cache=cache, search=_fake_search(seen), arch="sm90")
    assert not seen and s.problems == 0 and "tuning off" in s.line()
    with pytest.raises(Exception, match="tune mode"):
        session.tune_points(_points(), mode="sometimes", search=_fake_search(seen), arch="sm90")


def test_without_nvcc_tuning_is_skipped_and_the_sweep_goes_on(cache, monkeypatch):
    from cutlass_wsp.errors import ToolchainError

    def no_nvcc(*a, **k):
        raise ToolchainError("nvcc not found", "install the CUDA toolkit")

    monkeypatch.setattr(session, "tuned_choices", lambda c=None: TunedChoices())
    said = []
    s = session.tune_points(_points(), mode="auto", cache=cache, search=no_nvcc, arch="sm90", say=said.append)
    assert s.tuned == 0 and s.skipped == s.problems > 0
    assert said[-1].startswith("tuning skipped, every kernel keeps its default: nvcc not found")


def test_nothing_left_to_tune_is_said_and_costs_nothing(cache, monkeypatch):
    monkeypatch.setattr(session, "tune_requests", lambda *a, **k: {})
    seen = []
    s = session.tune_points(_points(), mode="auto", cache=cache, search=_fake_search(seen), arch="sm90",
                            say=lambda m: None)
    assert not seen and s.line() == "every kernel of these points is tuned on this GPU already"


# ---------------------------------------------------------------------------------- the budget
def test_problems_after_the_deadline_keep_their_defaults(cache):
    probs = [BatchProblem(16, 512, 1568, 512), BatchProblem(16, 512, 512, 512), BatchProblem(16, 256, 1568, 256)]
    clock = Clock()
    fake = FakeMeasure({d.name: [0.1] for p in probs for d in registry.candidates(p, "fp16", "sm90", short=True)})

    def measure(problem, desc, budget_s):
        clock.now += 10.0                                  # each trial takes 10 s of the budget
        return fake(problem, desc, budget_s)

    said = []
    out = search.tune_many(probs, "fp16", "sm90", families=registry.tunable(), cache=cache, measure=measure,
                           gpu_name=GPU, short=True, confirm=2, budget_s=1.0, deadline=clock.now + 60, clock=clock,
                           progress=said.append, verbose=False)
    assert not out[0].skipped and out[0].recorded and out[0].best is not None
    assert [r.skipped for r in out[1:]] == [True, True]          # 5 trials of the first took 50 s, then over
    assert all(r.best is None and not r.trials for r in out[1:])
    assert any("2 of 3 problems were not tuned and keep their default kernels" in m for m in said)
    assert said[-1].startswith("the tuning budget ran out")
    assert any(m.startswith("[1/3] dense") for m in said)         # one progress line per problem
    assert all(b <= 1.0 for _, _, b in fake.calls)


def test_the_timing_share_shrinks_with_the_time_left(cache):
    probs = [BatchProblem(16, 512, 1568, 512), BatchProblem(16, 512, 512, 512)]
    fake = FakeMeasure({d.name: [0.1] for p in probs for d in registry.candidates(p, "fp16", "sm90", short=True)})
    clock = Clock()
    search.tune_many(probs, "fp16", "sm90", families=registry.tunable(), cache=cache, measure=fake, gpu_name=GPU,
                     short=True, budget_s=5.0, deadline=clock.now + 2.0, clock=clock)
    # 0.6 of the ~2 s left, shared by 2 problems, split over the candidates: far below the 5 s cap
    first_problem = [b for p, _, b in fake.calls if p == probs[0]]
    assert sum(first_problem) <= 0.6 * 2.0 / 2 + 1e-9


def test_builds_stop_starting_at_the_compile_deadline(cache):
    descs = registry.candidates(BatchProblem(16, 512, 6272, 512), "fp16", "sm90")[:6]
    clock = Clock(step=1.0)                                 # every look at the clock costs a second
    built, failed = search.compile_candidates(descs, cache, jobs=1, deadline=clock.now + 3.5, clock=clock)
    assert not failed and 1 <= len(built) < len(descs)
    assert set(built) == set(descs[: len(built)])           # in the given order: the most shared first
    again, _ = search.compile_candidates(descs, cache, jobs=2)
    assert set(again) == set(descs)


def test_a_budgeted_search_builds_the_most_shared_kernels_first(cache):
    probs = [BatchProblem(16, 512, 1568, 512), BatchProblem(16, 512, 512, 512), BatchProblem(36, 512, 512, 512)]
    said = []
    fake = FakeMeasure({d.name: [0.1] for p in probs for d in registry.candidates(p, "fp16", "sm90", short=True)})
    search.tune_many(probs, "fp16", "sm90", families=registry.tunable(), cache=cache, measure=fake, gpu_name=GPU,
                     short=True, progress=said.append)
    union = {d for p in probs for d in registry.candidates(p, "fp16", "sm90", short=True)}
    assert said[0] == f"compiling {len(union)} candidate kernels for 3 problems"
    entries = TuningStore.beside(cache).entries().values()
    assert {e["menu"] for e in entries} == {"short"}


# ------------------------------------------------------------------------------------ the flags
@pytest.mark.parametrize("argv, mode, budget", [
    ([], "auto", None), (["--tune"], "again", None), (["--no-tune"], "off", None),
    (["--tune-budget-s", "60"], "auto", 60.0), (["--tune", "--tune-budget-s", "600"], "again", 600.0)])
def test_sweep_and_bench_take_the_tune_flags(argv, mode, budget):
    from cutlass_wsp.cli import build_parser
    from cutlass_wsp.commands._tuning import tune_mode

    for cmd in (["sweep"], ["bench", "vgg16:conv4_2"]):
        args = build_parser().parse_args(cmd + argv)
        assert tune_mode(args) == mode and args.tune_budget_s == budget


@pytest.mark.parametrize("argv", [["--tune", "--no-tune"], ["--tune-budget-s", "0"], ["--tune-budget-s", "x"]])
def test_bad_tune_flags_are_refused(argv, capsys):
    from cutlass_wsp.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["sweep"] + argv)
