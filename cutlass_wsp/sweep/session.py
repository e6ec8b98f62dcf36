"""A measuring session on the GPU: provenance, tuning (by default), the tuned choices resolved once,
compile-ahead of the kernels a sweep needs, and the runner loop with a progress bar. Kept apart from the
CLI so notebooks and bench/ can call it.

Tuning modes (`cutlass-wsp sweep` / `bench`):
  "auto"   (default) tune every (kernel family, problem) of the pending points that this GPU and
           toolchain have no tuned choice for, with the short menus (`KernelFamily.short_recipes`),
           within `tune_budget_s` of wall time including compiling the candidates; when the budget runs
           out, stop, keep the defaults for the rest, and say so (`--tune-budget-s`);
  "again"  (`--tune`) tune every problem again with the full menus (no wall-time limit unless given);
  "off"    (`--no-tune`) tune nothing.
Either way the tuning store is then read ONCE into a `TunedChoices` that the measurer and the families
get: no family reads tuning.json.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cutlass_wsp.errors import InputError, ToolchainError, WspError
from cutlass_wsp.gpu.harness import TimingOptions
from cutlass_wsp.status import classify
from cutlass_wsp.sweep.plan import Point
from cutlass_wsp.sweep.results import ResultStore, make_row, row_provenance
from cutlass_wsp.sweep.runner import SweepOutcome, run_points, summary_line

TUNE_MODES = ("auto", "again", "off")
DEFAULT_TUNE_BUDGET_S = 150.0   # the default tune's wall time, compiling included (README main job: < 3 min)
AUTO_PROBLEM_S = 0.3            # timing per problem in the default tune (less when the budget is short)
AGAIN_PROBLEM_S = 1.0           # ... and with --tune (`--tune-budget-ms`)


@dataclass
class SweepResult:
    outcome: SweepOutcome
    tuning: "TuneSummary | None" = None

    @property
    def summary(self) -> str:
        return summary_line(self.outcome)


@dataclass
class TuneSummary:
    """What a session's tuning did: problems asked for, tuned, left to the defaults, wall time."""

    mode: str
    problems: int = 0
    tuned: int = 0
    skipped: int = 0
    kernels: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        if self.mode == "off":
            return "tuning off (--no-tune): tuned kernels already in the cache are used, the rest run the defaults"
        if not self.problems:
            return "every kernel of these points is tuned on this GPU already"
        text = (f"tuned {self.tuned} of {self.problems} problems in {self.seconds:.0f} s "
                f"({self.kernels} candidate kernels)")
        if self.skipped:
            text += f"; the budget ran out: {self.skipped} keep their default kernels until the next run"
        return text


def _provenance() -> tuple[dict, dict]:
    from cutlass_wsp.gpu.info import provenance

    prov = provenance()
    return prov, row_provenance(prov)


def _row_fields(prov_fields: dict) -> dict:
    """Per-row provenance with the measurement's own timestamp."""
    from datetime import datetime, timezone

    return {**prov_fields, "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _say(msg: str) -> None:
    print(f"tune: {msg}", file=sys.stderr, flush=True)


def tuned_choices(cache: Any = None) -> Any:
    """This GPU's and toolchain's tuned kernels, read once (kernels.store.TunedChoices)."""
    from cutlass_wsp.families import registry
    from cutlass_wsp.kernels.store import TunedChoices

    return TunedChoices.load(cache, checks=registry.checks())


def tune_requests(points: Sequence[Point], workload: Any, arch: str, *, tuned: Any, again: bool,
                  sm_count: int | None = None) -> dict[tuple[str, str], list]:
    """{(kernel family, dtype): problems} the points' tunable launches run: all of them (`again`), else
    those without a tuned choice whose short menu offers more than the default. Host only."""
    from cutlass_wsp.families import registry
    from cutlass_wsp.kernels.candidates import DEFAULT_SM_COUNT
    from cutlass_wsp.sweep.measure import plan

    kernels = registry.tunable()
    out: dict[tuple[str, str], dict] = {}
    for pt in points:
        try:
            found = plan(pt, workload, arch)
        except WspError:
            continue      # the point's own measurement reports it
        if found is None or found.kernel is None or found.kernel not in kernels:
            continue
        key = (found.kernel, pt.dtype)
        if found.problem in out.get(key, {}):
            continue
        if not again:
            if tuned is not None and tuned.tuned(found.kernel, found.problem, pt.dtype, arch):
                continue
            short = kernels[found.kernel].candidates(found.problem, pt.dtype, arch,
                                                     sm_count=sm_count or DEFAULT_SM_COUNT, short=True)
            if len(short) < 2:
                continue      # nothing to choose from
        out.setdefault(key, {})[found.problem] = None
    return {k: list(v) for k, v in out.items()}


def tune_points(points: Sequence[Point], *, mode: str = "auto", budget_s: float | None = None,
                problem_s: float | None = None, cache: Any = None, seed: int = 0,
                say: Callable[[str], None] = _say, clock: Callable[[], float] = time.monotonic,
                search: Callable[..., Any] | None = None, arch: str | None = None,
                sm_count: int | None = None) -> TuneSummary:
    """Tune the tunable launches of `points` (module docstring: modes); progress through `say`.
    `search` defaults to kernels.search.tune_by_family (the CPU tests pass a fake)."""
    if mode not in TUNE_MODES:
        raise InputError(f"tune mode {mode!r}", f"use one of {', '.join(TUNE_MODES)}")
    summary = TuneSummary(mode)
    if mode == "off":
        return summary
    from cutlass_wsp.families import registry
    from cutlass_wsp.sweep.measure import Workload

    t0 = clock()
    if arch is None:
        from cutlass_wsp.gpu.device import compute_capability, current_sm_count
        from cutlass_wsp.kernels.manifest import arch_for_device

        arch = arch_for_device(compute_capability())
        sm_count = sm_count or current_sm_count()
    again = mode == "again"
    if budget_s is None and not again:
        budget_s = DEFAULT_TUNE_BUDGET_S
    tuned = None if again else tuned_choices(cache)
    requests = tune_requests(points, Workload(seed), arch, tuned=tuned, again=again, sm_count=sm_count)
    summary.problems = sum(len(v) for v in requests.values())
    if not summary.problems:
        return summary
    if search is None:
        from cutlass_wsp.kernels.search import tune_by_family as search
    say(f"{summary.problems} problems to tune ({'full' if again else 'short'} menus"
        + (f", budget {budget_s:.0f} s" if budget_s else "") + ")")
    try:
        results = search(requests, arch, families=registry.tunable(), cache=cache,
                         budget_s=problem_s or (AGAIN_PROBLEM_S if again else AUTO_PROBLEM_S),
                         short=not again, confirm=3 if again else 2, sm_count=sm_count,
                         deadline=None if budget_s is None else t0 + budget_s, clock=clock,
                         progress=say, verbose=False)
    except ToolchainError as e:      # no nvcc: nothing can be tuned, the sweep still measures what it can
        summary.skipped, summary.seconds = summary.problems, clock() - t0
        say(f"tuning skipped, every kernel keeps its default: {e}")
        return summary
    flat = [r for rs in results.values() for r in rs]
    summary.tuned = sum(1 for r in flat if r.recorded)
    summary.skipped = sum(1 for r in flat if r.skipped)
    summary.kernels = len({t.desc for r in flat for t in r.trials})
    summary.seconds = clock() - t0
    say(summary.line())
    return summary


def run_sweep(points: Sequence[Point], store: ResultStore, *, budget_s: float = 0.25,
              use_graph: bool = False, retry_failed: bool = False, layer_time: bool = True,
              tune: str = "auto", tune_budget_s: float | None = None,
              tune_problem_s: float | None = None) -> SweepResult:
    from cutlass_wsp.gpu.device import require_gpu
    from cutlass_wsp.sweep.measure import Measurer
    from cutlass_wsp.sweep.progress import Progress

    require_gpu()
    with store.writing():      # a second sweep onto this file stops here, before compiling or tuning
        prov, prov_fields = _provenance()
        store.provenance = prov
        pending = store.pending(points, retry_failed=retry_failed)
        tuning = tune_points(pending, mode=tune, budget_s=tune_budget_s, problem_s=tune_problem_s)
        m = Measurer(TimingOptions(budget_s=budget_s, use_graph=use_graph), layer_time=layer_time,
                     tuned=tuned_choices())
        needed, built = m.compile_ahead(pending)
        if needed:
            print(f"{needed} kernels for {len(pending)} points: {needed - built} in the compile cache, {built} "
                  "compiled", file=sys.stderr)

        progress = Progress(len(pending))
        outcome = run_points(points, store, m.measure, provenance_fields=prov_fields, progress=progress,
                             retry_failed=retry_failed)
    return SweepResult(outcome, tuning)


def measure_one(point: Point, *, budget_s: float = 0.25, use_graph: bool = False,
                out: Path | None = None, layer_time: bool = True, tune: str = "auto",
                tune_budget_s: float | None = None) -> dict:
    from cutlass_wsp.gpu.device import require_gpu
    from cutlass_wsp.sweep.measure import Measurer

    require_gpu()
    store = ResultStore(out, out_option="--out") if out is not None else None
    with store.writing() if store is not None else contextlib.nullcontext():   # refused before measuring
        _, prov_fields = _provenance()
        tune_points([point], mode=tune, budget_s=tune_budget_s)
        m = Measurer(TimingOptions(budget_s=budget_s, use_graph=use_graph), layer_time=layer_time,
                     tuned=tuned_choices())
        try:
            row = make_row(point, "ok", **m.measure(point), **_row_fields(prov_fields))
        except Exception as exc:  # noqa: BLE001 -- reported as a row, like in a sweep
            status, reason = classify(exc)
            row = make_row(point, status, reason=reason, **_row_fields(prov_fields))
        if store is not None:
            store.append(row)
    return row
