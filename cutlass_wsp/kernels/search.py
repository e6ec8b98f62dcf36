"""Per-problem kernel search: compile the candidates, measure each, re-time the fastest, keep the winner.

tune_many(problems, family=..., families=...) / tune_by_family({(family, dtype): problems}, ...) compile
the union of every problem's candidates once, in parallel; then, per problem and candidate, the kernel
family's measurement (`families/*.py`: fresh random operands, a poisoned output, one run checked against
an fp32 cuBLAS reference, then a timing through `gpu/harness.py`). A candidate that does not compile,
load, run or verify is recorded (`cutlass_wsp.status` vocabulary) and never wins. The few fastest are
timed once more, back to back, and the best of that round wins (so one lucky first timing cannot).

The kernel families are passed in (`families=`: anything with `name`, `check_problem`, `candidates` and
`measure`, e.g. `families.registry.tunable()`); this module imports no family.

A budgeted search (`deadline=`, what `cutlass-wsp sweep` and `bench` run before measuring) stops
starting builds and problems when the deadline passes; the problems it did not reach come back as
`skipped` results and keep their default kernels. Winners go into the tuning store (`kernels/store.py`).
"""

from __future__ import annotations

import concurrent.futures
import datetime as _dt
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

from cutlass_wsp.errors import InputError, ToolchainError, WspError
from cutlass_wsp.kernels.candidates import DEFAULT_SM_COUNT, MAX_CANDIDATES
from cutlass_wsp.kernels.description import KernelDesc
from cutlass_wsp.kernels.store import TuningStore, key_fields, store_for, tuning_key
from cutlass_wsp.status import STATUSES, classify

if TYPE_CHECKING:
    from cutlass_wsp.kernels.cache import KernelCache

DEFAULT_BUDGET_S = 4.0          # timing seconds per problem, shared by its candidates
FIRST_ROUND_SHARE = 0.7         # of the budget; the rest re-times the `confirm` fastest
COMPILE_SHARE = 0.6             # a budgeted search starts no build after this share of its budget
MIN_PROBLEM_S = 0.03            # a budgeted search gives each problem at least this much timing

Measure = Callable[[Any, KernelDesc, float], "Trial"]
"""measure(problem, desc, budget_s) -> Trial: verify on fresh data, then time (or raise)."""


class Tunable(Protocol):
    """What the search needs of a kernel family (families/base.py KernelFamily has it)."""

    name: str

    def check_problem(self, problem: Any) -> None: ...

    def candidates(self, problem: Any, dtype: str, arch: str, *, sm_count: int = ..., limit: int | None = ...,
                   short: bool = ...) -> list[KernelDesc]: ...

    def measure(self, dtype: str, cache: Any) -> Measure: ...


# ------------------------------------------------------------------------------------ results
@dataclass
class Trial:
    """One candidate measured once: `ok` (verified, then timed) or why not (status.STATUSES)."""

    desc: KernelDesc
    status: str
    median_ms: float | None = None
    iqr_ms: float | None = None
    reps: int = 0
    rel_error: float | None = None
    error: str | None = None
    round: int = 0                        # 0 = every candidate; 1.. = re-timing of the fastest

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"trial status {self.status!r} is not one of {STATUSES}")
        if self.status == "ok" and (self.median_ms is None or not math.isfinite(self.median_ms)):
            raise ValueError(f"an ok trial of {self.desc.name} needs a finite median_ms")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.desc.name, "status": self.status, "median_ms": self.median_ms,
                "iqr_ms": self.iqr_ms, "reps": self.reps, "rel_error": self.rel_error, "error": self.error,
                "round": self.round}


@dataclass
class TuneResult:
    """The search over one problem: every trial, the default's time and the winner (None: none verified,
    or `skipped`: the budget ran out before this problem)."""

    problem: Any
    dtype: str
    arch: str
    default: KernelDesc
    best: KernelDesc | None
    best_ms: float | None
    default_ms: float | None
    trials: list[Trial] = field(default_factory=list)
    key: str | None = None                # tuning-cache key (None when no GPU name was known)
    recorded: bool = False                # written to the tuning cache
    family: str = "dense"
    skipped: bool = False                 # not searched: the budget ran out

    @property
    def speedup_vs_default(self) -> float | None:
        if self.best_ms and self.default_ms:
            return self.default_ms / self.best_ms
        return None

    @property
    def chosen(self) -> KernelDesc:
        """What to run: the winner, else the default."""
        return self.best or self.default

    def to_dict(self) -> dict[str, Any]:
        p = self.problem
        shape = dict(p.key_fields(), **({"Ms": list(p.Ms)} if hasattr(p, "Ms") else {}))
        return {"family": self.family, **shape, "dtype": self.dtype, "arch": self.arch,
                "key": self.key, "default": self.default.name, "default_ms": self.default_ms,
                "best": self.best.name if self.best else None, "best_ms": self.best_ms,
                "best_desc": self.best.as_dict() if self.best else None,
                "speedup_vs_default": self.speedup_vs_default, "recorded": self.recorded,
                "skipped": self.skipped, "trials": [t.to_dict() for t in self.trials]}


# ----------------------------------------------------------------------------------- compiling
def _failure_summary(cache: "KernelCache", desc: KernelDesc) -> str | None:
    """First error of the kept nvcc log of a failed build (the cache names it <name>-<key16>.log)."""
    from cutlass_wsp.kernels.cache import describe_compile_error

    stem = f"{desc.name}-{cache.key(desc)[:16]}"
    log = cache.failed_dir / f"{stem}.log"
    try:
        text = log.read_text()
    except OSError:
        return None
    return describe_compile_error(text, cache.failed_dir / f"{stem}.cu").splitlines()[0][:500]


def compile_candidates(descs: Sequence[KernelDesc], cache: "KernelCache", *, jobs: int | None = None,
                       deadline: float | None = None, clock: Callable[[], float] = time.monotonic
                       ) -> tuple[dict[KernelDesc, Path], dict[KernelDesc, str]]:
    """Build every description (`jobs` nvcc at a time, in the given order); ({desc: library}, {desc: why
    it failed}). A failed build does not stop the others; a missing toolchain does (nothing could
    build). With a `deadline` (a `clock()` value) no build starts after it: descriptions left out are in
    neither dict."""
    unique = list(dict.fromkeys(descs))
    if deadline is None:
        try:
            return dict(zip(unique, cache.compile_many(unique, jobs=jobs))), {}
        except ToolchainError:
            raise
        except WspError as first:
            return _sort_out(unique, cache, first)
    built: dict[KernelDesc, Path] = {}
    failed: dict[KernelDesc, str] = {}
    todo = [d for d in unique if cache.lookup(d) is None]
    built.update({d: cache.lookup(d) for d in unique if d not in todo})   # type: ignore[misc]
    jobs = max(1, jobs or os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        running: dict[concurrent.futures.Future, KernelDesc] = {}
        while todo or running:
            while todo and len(running) < jobs and clock() < deadline:
                d = todo.pop(0)
                running[pool.submit(cache.get, d)] = d
            if not running:
                break
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for fut in done:
                d = running.pop(fut)
                try:
                    built[d] = fut.result()
                except ToolchainError:
                    raise
                except WspError as e:
                    failed[d] = _failure_summary(cache, d) or e.problem.splitlines()[0]
    return built, failed


def _sort_out(unique: list[KernelDesc], cache: "KernelCache", first: WspError
              ) -> tuple[dict[KernelDesc, Path], dict[KernelDesc, str]]:
    built: dict[KernelDesc, Path] = {}
    failed: dict[KernelDesc, str] = {}
    for d in unique:
        path = cache.lookup(d)
        if path is not None:
            built[d] = path
        else:
            failed[d] = _failure_summary(cache, d) or first.problem.splitlines()[0]
    return built, failed


# ----------------------------------------------------------------------------------- measuring
def measure_safely(measure: Measure, problem: Any, desc: KernelDesc, budget_s: float, round_: int) -> Trial:
    """A Trial whatever happens: wrong output, a refused or failed launch, anything else
    (`status.classify`)."""
    try:
        trial = measure(problem, desc, budget_s)
    except Exception as e:  # e.g. out of memory: recorded, and the search goes on
        status, reason = classify(e)
        trial = Trial(desc, status, error=reason)
    trial.round = round_
    return trial


def choose(trials: Sequence[Trial]) -> tuple[KernelDesc | None, float | None]:
    """Winner among verified trials: candidates re-timed in a later round are ranked by their latest
    round alone (timed back to back); a candidate that failed in any round is out."""
    failed = {t.desc for t in trials if not t.ok}
    last_round = max((t.round for t in trials if t.ok), default=0)
    pool = [t for t in trials if t.ok and t.desc not in failed and t.round == last_round]
    if not pool:
        return None, None
    best = min(pool, key=lambda t: (t.median_ms, t.round))
    return best.desc, best.median_ms


# -------------------------------------------------------------------------------------- tuning
def tune_by_family(requests: Mapping[tuple[str, str], Sequence[Any]], arch: str, *,
                   families: Mapping[str, Tunable], cache: "KernelCache | None" = None,
                   store: TuningStore | None = None, budget_s: float = DEFAULT_BUDGET_S, jobs: int | None = None,
                   sm_count: int | None = None, limit: int = MAX_CANDIDATES, confirm: int = 3,
                   measure: Measure | None = None, gpu_name: str | None = None, record: bool = True,
                   progress: Callable[[str], None] | None = None, short: bool = False,
                   deadline: float | None = None, clock: Callable[[], float] = time.monotonic,
                   verbose: bool = True) -> dict[tuple[str, str], list[TuneResult]]:
    """Tune {(family, dtype): problems} (as the kernels see them: N = Npad, K padded). The union of all
    candidate sets of all families is compiled once (`jobs` nvcc at a time, the kernels most problems
    share first); each problem then gets `budget_s` seconds of timing. `families` maps each family name
    to its kernel family; `measure` defaults to each kernel family's GPU measurement (needs a GPU);
    `record` writes winners to the tuning store. `short`: the short menus. `deadline` (a `clock()`
    value): builds start only in the first COMPILE_SHARE of the time left, each problem's timing budget
    shrinks to fit the time left, and problems not reached by the deadline are returned `skipped`.
    `verbose=False` prints one line per problem instead of one per trial."""
    from cutlass_wsp.kernels.cache import default_cache

    if budget_s <= 0 or confirm < 0:
        raise InputError(f"budget_s={budget_s}, confirm={confirm}", "use budget_s > 0 and confirm >= 0")
    cache = cache or default_cache()
    say = progress or (lambda _msg: None)
    for (family, _dtype), problems in requests.items():
        if family not in families:
            from cutlass_wsp.errors import Unsupported

            raise Unsupported(f"no tuning candidates for family {family!r}",
                              f"tune one of the families {', '.join(families)}")
        for p in problems:
            families[family].check_problem(p)
    if measure is None:     # made first: no GPU fails here, before minutes of nvcc
        from cutlass_wsp.gpu.device import current_gpu_name, current_sm_count

        measures = {key: families[key[0]].measure(key[1], cache) for key in requests}
        gpu_name = gpu_name or current_gpu_name()
        sm_count = sm_count or current_sm_count()
    else:
        measures = {key: measure for key in requests}
    sm_count = sm_count or DEFAULT_SM_COUNT
    store = store_for(cache, store) if record else store

    sets = {key: [families[key[0]].candidates(p, key[1], arch, sm_count=sm_count, limit=limit, short=short)
                  for p in problems] for key, problems in requests.items()}
    uses: dict[KernelDesc, int] = {}
    for per_problem in sets.values():
        for s in per_problem:
            for d in s:
                uses[d] = uses.get(d, 0) + 1
    union = sorted(uses, key=lambda d: -uses[d])        # stable: first-seen order among equals
    count = sum(len(p) for p in requests.values())
    say(f"compiling {len(union)} candidate kernels for {count} problems")
    t0 = clock()
    compile_deadline = None if deadline is None else t0 + COMPILE_SHARE * max(deadline - t0, 0.0)
    built, failed = compile_candidates(union, cache, jobs=jobs, deadline=compile_deadline, clock=clock)
    for d, why in failed.items():
        say(f"  compile failed: {d.name}: {why}")
    unbuilt = [d for d in union if d not in built and d not in failed]
    if unbuilt:
        say(f"  the budget left {len(unbuilt)} candidate kernels unbuilt; they are not tried")
    say(f"built {len(built)} kernels in {clock() - t0:.0f} s")

    results: dict[tuple[str, str], list[TuneResult]] = {}
    done = 0
    for (family, dtype), problems in requests.items():
        out = results[(family, dtype)] = []
        for problem, menu_ in zip(problems, sets[(family, dtype)]):
            done += 1
            descs = [d for d in menu_ if d in built or d in failed]
            if deadline is not None:
                left = deadline - clock()
                if left <= 0 or not descs:
                    out.append(TuneResult(problem, dtype, arch, menu_[0], None, None, None, family=family,
                                          skipped=True))
                    continue
                budget = min(budget_s, max(MIN_PROBLEM_S, 0.6 * left / (count - done + 1)))
            else:
                budget = budget_s
            out.append(_tune_one(problem, dtype, arch, descs, failed, family=family, cache=cache, store=store,
                                 budget_s=budget, confirm=confirm, measure=measures[(family, dtype)],
                                 gpu_name=gpu_name, record=record, say=say, short=short, verbose=verbose,
                                 tag=f"[{done}/{count}] "))
    skipped = sum(r.skipped for rs in results.values() for r in rs)
    if skipped:
        say(f"the tuning budget ran out: {skipped} of {count} problems were not tuned and keep their default "
            "kernels (run again to tune them, or give more --tune-budget-s)")
    return results


def tune_many(problems: Sequence[Any], dtype: str, arch: str, *, family: str = "dense", **kw: Any) -> list[TuneResult]:
    """Tune each problem of one family; the options are tune_by_family's."""
    return tune_by_family({(family, dtype): list(problems)}, arch, **kw)[(family, dtype)]


def tune(problem: Any, dtype: str, arch: str, *, cache: "KernelCache | None" = None,
         budget_s: float = DEFAULT_BUDGET_S, **kw: Any) -> TuneResult:
    """Tune one problem; see tune_many for the options."""
    return tune_many([problem], dtype, arch, cache=cache, budget_s=budget_s, **kw)[0]


def _tune_one(problem: Any, dtype: str, arch: str, descs: list[KernelDesc], failed: dict[KernelDesc, str], *,
              family: str, cache: "KernelCache", store: TuningStore | None, budget_s: float, confirm: int,
              measure: Measure, gpu_name: str | None, record: bool, say: Callable[[str], None],
              short: bool = False, verbose: bool = True, tag: str = "") -> TuneResult:
    runnable = [d for d in descs if d not in failed]
    trials = [Trial(d, "compile_error", error=failed[d]) for d in descs if d in failed]
    first = budget_s * (FIRST_ROUND_SHARE if confirm else 1.0) / max(len(runnable), 1)
    if verbose:
        say(f"{tag}{problem}: {len(runnable)} candidates ({len(descs) - len(runnable)} did not compile)")
    for d in runnable:
        t = measure_safely(measure, problem, d, first, 0)
        trials.append(t)
        if verbose:
            say(f"  {d.name}: " + (f"{t.median_ms * 1e3:.1f} us" if t.ok else f"{t.status}: {t.error}"))
    # Round 1: the fastest few again, back to back, so one lucky first timing cannot win.
    verified = sorted((t for t in trials if t.ok), key=lambda t: t.median_ms)
    finalists = [t.desc for t in verified[:confirm]] if len(verified) > 1 else []
    for d in finalists:
        trials.append(measure_safely(measure, problem, d, budget_s * (1 - FIRST_ROUND_SHARE) / len(finalists), 1))
    best, best_ms = choose(trials)
    default = descs[0]
    default_ms = min((t.median_ms for t in trials if t.ok and t.desc == default and
                      t.round == (1 if default in finalists else 0)), default=None)
    key = None
    if gpu_name is not None:
        key = tuning_key(problem, dtype, arch, gpu_name=gpu_name, toolchain=cache.toolchain, family=family)
    result = TuneResult(problem, dtype, arch, default, best, best_ms, default_ms, trials, key, family=family)
    if record and best is not None and key is not None and store is not None:
        store.put(key, _entry(result, gpu_name, cache, short))
        result.recorded = True
    lead = "  " if verbose else f"{tag}{family} {problem}: "
    if best is not None:
        sp = result.speedup_vs_default
        say(f"{lead}best {best.name}: {best_ms * 1e3:.1f} us" + (f" ({sp:.2f}x the default)" if sp else ""))
    else:
        say(f"{lead}no candidate verified; the default stays")
    return result


def _entry(result: TuneResult, gpu_name: str | None, cache: "KernelCache", short: bool = False) -> dict[str, Any]:
    best = result.best
    assert best is not None and gpu_name is not None
    ok = [t for t in result.trials if t.ok and t.desc == best]
    return {
        "key_fields": key_fields(result.problem, result.dtype, result.arch, gpu_name=gpu_name,
                                 toolchain=cache.toolchain, family=result.family),
        "name": best.name, "desc": best.as_dict(), "median_ms": result.best_ms,
        "iqr_ms": ok[-1].iqr_ms if ok else None, "rel_error": ok[-1].rel_error if ok else None,
        "default": result.default.name, "default_ms": result.default_ms,
        "speedup_vs_default": result.speedup_vs_default,
        "candidates": len({t.desc for t in result.trials}),
        "verified": len({t.desc for t in result.trials if t.ok}),
        "menu": "short" if short else "full",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
