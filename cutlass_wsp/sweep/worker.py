"""The GPU side of a sweep on a Dask cluster (`sweep --workers` / `--scheduler`): what runs where a GPU
is. `sweep/dispatch.py` sends these functions to the worker processes as Dask tasks:

- `probe_task`: who the worker is (its GPU, host and bus id: the provenance its rows carry) and
  whether it can measure;
- `prepare_task`: tune and compile ahead for the worker's GPU type and host (`prepare_here`), when the
  client has no GPU of its own (`--scheduler`); on one host the client calls `prepare_here` itself;
- `measure_task`: one point, measured into a row (a failure is a row, as in sweep/runner.py; a
  worker that cannot measure at all says so instead, and the client gives the point to another). It
  logs its start and end with the scheduler (`START_TOPIC`), by which the client tells which of a dead
  worker's two points was being measured; after a sticky CUDA error it hands back its queued point.

A worker keeps one measurer per sweep (`MeasureSetup.session`), built at its first point: it reads
the tuning store once, then loads kernels from the compile cache (a kernel the cache lacks, e.g. on a
host that was not prepared, is compiled there on first use, as on one GPU). A worker never writes the
results file: it returns rows, and the client appends them (the one writer).

`MeasureSetup.make_measure` and `.provenance` are top-level functions, so Dask can send them: the GPU
ones by default, fakes in the CPU tests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cutlass_wsp.sweep.plan import Point


def gpu_provenance() -> dict:
    """This process's GPU and machine (gpu/info.provenance(): the GPU of CUDA device 0, which is the
    worker's own GPU where dask-cuda pinned it with CUDA_VISIBLE_DEVICES)."""
    from cutlass_wsp.gpu.info import provenance

    return provenance()


def gpu_measure(setup: MeasureSetup) -> Callable[[Point], dict]:
    """The real measure function: a Measurer on this process's GPU with the tuned choices read once."""
    from cutlass_wsp.gpu.harness import TimingOptions
    from cutlass_wsp.sweep.measure import Measurer
    from cutlass_wsp.sweep.session import tuned_choices

    m = Measurer(TimingOptions(budget_s=setup.budget_s, use_graph=setup.use_graph), layer_time=setup.layer_time,
                 tuned=tuned_choices())
    return m.measure


@dataclass(frozen=True)
class MeasureSetup:
    """What a worker needs to measure the points of one sweep; sent with every task (it is small).
    `session` names the sweep: a worker of a long-lived cluster builds a new measurer (and reads the
    tuning store again) for each sweep."""

    session: str
    budget_s: float = 0.25
    use_graph: bool = False
    layer_time: bool = True
    make_measure: Callable[[MeasureSetup], Callable[[Point], dict]] = gpu_measure
    provenance: Callable[[], dict] = gpu_provenance


class _State:
    """This worker process's provenance and measure function for one sweep session."""

    def __init__(self, setup: MeasureSetup):
        from cutlass_wsp.sweep.results import row_provenance

        self.session = setup.session
        self.prov = setup.provenance()
        self.row_fields = row_provenance(self.prov)
        self.measure: Callable[[Point], dict] | None = None
        self.poisoned: str | None = None     # a sticky CUDA error's reason: this process measures no more


_LOCK = threading.Lock()
_STATE: _State | None = None


def _state(setup: MeasureSetup) -> _State:
    global _STATE
    with _LOCK:
        if _STATE is None or _STATE.session != setup.session:
            _STATE = _State(setup)
        return _STATE


def probe_task(setup: MeasureSetup) -> dict:
    """{'usable', 'why', 'row_fields'}: who this worker is (its GPU, host: the rows' provenance) and
    whether it can measure. Never raises: a worker that cannot read its GPU says why."""
    out: dict[str, Any] = {"usable": False, "why": None, "row_fields": {}}
    try:
        st = _state(setup)
    except Exception as e:  # noqa: BLE001 -- reported to the client as this worker's reason
        out["why"] = f"{type(e).__name__}: {e}"
        return out
    out["row_fields"] = st.row_fields
    if st.prov.get("gpu_error"):
        out["why"] = st.prov["gpu_error"]
    elif not st.row_fields.get("gpu"):
        out["why"] = "no GPU name read"
    else:
        out["usable"] = True
    return out


def measure_task(point: Point, setup: MeasureSetup) -> dict:
    """Measure `point` on this worker into a row: {'row', 'sticky'}; or {'unusable': why} when this
    worker cannot measure at all (no GPU, no measurer): the client then gives the point to another."""
    from cutlass_wsp.errors import GpuUnavailable, is_sticky
    from cutlass_wsp.sweep.runner import _measure_row

    st = _state(setup)
    if st.poisoned:          # a point queued here behind the one that poisoned the context: another worker takes it
        return {"requeue": f"this worker's CUDA context is lost ({st.poisoned[:80]})"}
    _note("start")
    try:
        if st.measure is None:
            try:
                st.measure = setup.make_measure(setup)
            except Exception as e:  # noqa: BLE001 -- no measurer, no point measured here: the client retires it
                return {"unusable": str(e) or type(e).__name__}
        try:
            row, _exc = _measure_row(point, st.measure, st.row_fields)
        except GpuUnavailable as e:
            return {"unusable": str(e)}
    finally:
        _note("end")
    sticky = row["status"] == "error" and is_sticky(row.get("reason") or "")
    if sticky:
        st.poisoned = row.get("reason") or "sticky CUDA error"
    return {"row": row, "sticky": sticky}


START_TOPIC = "cutlass-wsp-start"


def _note(phase: str) -> None:
    """Tell the scheduler that this worker starts ("start") or has measured ("end") its current task,
    and wait for its answer: the client gives each worker a second point to hold while it measures
    one (no round trip between points), and when a worker dies these events say exactly which of its
    points it was measuring (dispatch._Dispatcher._worker_died). One scheduler round trip each (~1 ms)."""
    try:
        from distributed import get_worker
        from distributed.utils import sync

        w = get_worker()
    except (ImportError, ValueError):      # not inside a Dask worker (a direct call, a test)
        return
    msg = {"worker": w.address, "task": w.get_current_task(), "phase": phase}
    try:
        sync(w.loop, w.scheduler.log_event, topic=START_TOPIC, msg=msg)
    except Exception:  # noqa: BLE001 -- the scheduler unreachable: the event goes on the worker's stream
        w.log_event(START_TOPIC, msg)


def death_reason(row_fields: dict, address: str | None = None) -> str:
    """The reason of the failure row of a point whose worker died measuring it."""
    where = ", ".join(str(x) for x in (address, row_fields.get("host"), row_fields.get("gpu"),
                                        row_fields.get("gpu_bus_id")) if x)
    return ("the Dask worker measuring this point died" + (f" ({where})" if where else "")
            + ": a lost CUDA context, an out-of-memory kill or a crash; Dask restarts the worker and the "
              "sweep goes on without this point (--retry-failed measures it again)")


def prepare_here(points: Sequence[Point], *, tune: str = "auto", tune_budget_s: float | None = None,
                 tune_problem_s: float | None = None, say: Callable[[str], None] | None = None) -> list[str]:
    """Tune (sweep/session.tune_points) and compile ahead (Measurer.compile_ahead, every core) the
    kernels of `points` on this machine's GPU; returns the lines it reports. What the workers then
    measure only reads the tuning store and loads kernels from the compile cache."""
    from cutlass_wsp.gpu.harness import TimingOptions
    from cutlass_wsp.sweep.measure import Measurer
    from cutlass_wsp.sweep.session import tune_points, tuned_choices

    lines: list[str] = []

    def note(text: str) -> None:
        lines.append(text)
        if say is not None:
            say(text)

    tune_points(points, mode=tune, budget_s=tune_budget_s, problem_s=tune_problem_s, say=lambda t: note(f"tune: {t}"))
    m = Measurer(TimingOptions(), tuned=tuned_choices())
    needed, built = m.compile_ahead(points)
    if needed:
        note(f"{needed} kernels for {len(points)} points: {needed - built} in the compile cache, {built} compiled")
    _free_gpu_memory()
    return lines


def _free_gpu_memory() -> None:
    """Give back what tuning held in CuPy's pools (the client keeps no GPU memory while workers measure)."""
    try:
        import cupy

        cupy.get_default_memory_pool().free_all_blocks()
        cupy.get_default_pinned_memory_pool().free_all_blocks()
    except Exception:  # noqa: BLE001 -- best effort
        pass


def prepare_task(points: Sequence[Point], prep: Prepare) -> list[str]:
    """`prepare_here` on a worker (`--scheduler`: the client may have no GPU); the lines go back to the client."""
    return prepare_here(points, tune=prep.tune, tune_budget_s=prep.tune_budget_s, tune_problem_s=prep.tune_problem_s)


@dataclass(frozen=True)
class Prepare:
    """The session's tuning options, and what a worker runs to prepare (`run(points, prep) -> lines`:
    prepare_task; the CPU tests pass a fake)."""

    tune: str = "auto"
    tune_budget_s: float | None = None
    tune_problem_s: float | None = None
    run: Callable[[Sequence[Point], Prepare], list[str]] = prepare_task
