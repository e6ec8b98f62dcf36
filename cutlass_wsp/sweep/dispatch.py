"""The client side of a sweep on a Dask cluster: which point goes to which worker, and the one writer.

- One point measured per worker at a time: a GPU measures alone (two points on one GPU would time
  each other); the workers run one thread. Each point is a Dask task pinned to the worker it is given
  to (`workers=[address]`). A worker holds a second point (`DEPTH`) that waits on it while it measures
  the first, so that no client-scheduler-worker round trip (tens of ms) idles the GPU between points.
- Per GPU type (the `gpu` name its workers report: sweep/worker.probe_task) a queue of the points
  that type has not measured yet (`ResultStore.pending(..., gpu=)`), longest first (sweep/cost.py).
  An idle worker gets the head of its type's queue. Several workers of one type share its queue;
  several types each measure every point (one file, readers split it by `gpu`).
- Rows come back as tasks finish, in any order, and the client appends them: it holds the results
  file's writer lock for the whole sweep (one writer; a second sweep on the file stops with one line)
  and appends a row only while its (gpu, key) is still pending: no point is written twice.
- A worker that dies mid-point (a lost CUDA context, an out-of-memory kill, a crash) leaves the
  scheduler (or its tasks fail with KilledWorker where the scheduler allows no retries). The point it
  was measuring is the one whose start the scheduler confirmed and whose end it did not
  (worker.START_TOPIC: the worker waits for the scheduler's answer before it measures and before it
  returns). The client writes that point's failure row (error, the reason naming the worker, its host
  and GPU), puts the worker's other point back at the head of the queue, and gives the points to the
  others; Dask's nanny restarts the worker, which joins as a new one. A point that killed its worker
  is never retried by itself (`--retry-failed` measures it again); one that had not started is.
- A point whose CUDA error poisons the context without killing the process (a sticky error: illegal
  address, launch failure) gets its error row, then the client restarts that worker
  (`Client.restart_workers`); the point queued behind it comes back unmeasured and goes to the queue.
- A worker that cannot measure at all (no GPU) is given nothing more, its point goes back to the
  queue; when no worker can measure, the sweep stops with their reason (GpuUnavailable).
- `prepare` (a cluster whose client has no GPU: `--scheduler`): before any worker of a GPU type on a
  host measures, one of them tunes and compiles ahead for that type (worker.prepare_task). Hosts of
  one type prepare one after another, so with a compile cache on a shared filesystem the later ones
  find everything in it.

Dask is imported inside the functions: without the `distributed` extra this module still imports.
"""

from __future__ import annotations

import itertools
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cutlass_wsp.errors import GpuUnavailable
from cutlass_wsp.status import classify
from cutlass_wsp.sweep.cost import longest_first
from cutlass_wsp.sweep.plan import Point
from cutlass_wsp.sweep.results import ResultStore, make_row
from cutlass_wsp.sweep.runner import SweepOutcome, _now, summary_line
from cutlass_wsp.sweep.worker import START_TOPIC, MeasureSetup, Prepare, death_reason, measure_task, probe_task

DEPTH = 2                # measure tasks given to a worker at once: one measuring, one waiting behind it
POLL_S = 0.2             # how often the client looks at the workers when no task finishes
RESULT_WAIT_S = 10.0     # a finished task's result that does not arrive in this time is lost with its worker
WORKER_WAIT_S = 180.0    # how long points may wait with no worker able to take them


@dataclass
class DispatchOutcome(SweepOutcome):
    submitted: list[str] = field(default_factory=list)        # keys, in the order they were given out
    per_worker: dict[str, int] = field(default_factory=dict)  # rows written per 'host GPU bus-id'
    deaths: int = 0                                           # points whose worker died measuring them
    restarts: int = 0                                         # workers restarted after a sticky CUDA error

    @property
    def summary(self) -> str:
        text = summary_line(self)
        if self.per_worker:
            text += f"; on {len(self.per_worker)} GPUs: " + ", ".join(f"{w} {n}" for w, n in self.per_worker.items())
        if self.deaths:
            text += f"; {self.deaths} points lost their worker (error rows)"
        if self.restarts:
            text += f"; {self.restarts} workers restarted after a lost CUDA context"
        return text


@dataclass
class _Worker:
    address: str
    row_fields: dict

    @property
    def gpu(self) -> str | None:
        return self.row_fields.get("gpu")

    @property
    def host(self) -> str | None:
        return self.row_fields.get("host")

    @property
    def label(self) -> str:
        bits = [self.host or self.address, self.gpu or "?"]
        if self.row_fields.get("gpu_bus_id"):
            bits.append(str(self.row_fields["gpu_bus_id"]))
        return " ".join(bits)


@dataclass
class _Task:
    kind: str                      # "probe", "prepare" or "measure"
    future: Any
    point: Point | None = None
    group: tuple | None = None     # prepare: (gpu, host)
    gpu: str | None = None         # measure: the GPU type whose queue the point came from
    seq: int = field(default_factory=itertools.count().__next__)    # the order tasks were given out


def _say(msg: str) -> None:
    print(f"cutlass-wsp sweep: {msg}", file=sys.stderr, flush=True)


class _Dispatcher:
    def __init__(self, client, points: Sequence[Point], store: ResultStore, setup: MeasureSetup, *,
                 retry_failed: bool, prepare: Prepare | None, ready: set[tuple], progress,
                 say: Callable[[str], None], poll_s: float, worker_wait_s: float, clock: Callable[[], float]):
        self.client, self.points, self.store, self.setup = client, list(points), store, setup
        self.retry_failed, self.prepare, self.progress, self.say = retry_failed, prepare, progress, say
        self.poll_s, self.worker_wait_s, self.clock = poll_s, worker_wait_s, clock
        self.out = DispatchOutcome(path=store.path)
        self.queues: dict[str | None, deque[Point]] = {}
        self.workers: dict[str, _Worker] = {}         # probed, alive
        self.unusable: dict[str, str] = {}            # address -> why it cannot measure
        self.busy: dict[str, list[_Task]] = {}        # address -> its tasks, oldest first (never empty)
        self.prepared: dict[tuple, str] = dict.fromkeys(ready, "done")   # (gpu, host) -> "running" | "done"
        self.probe_failures: dict[str, int] = {}      # address -> probes that raised
        self.prepare_tries: dict[tuple, int] = {}     # (gpu, host) -> preparations started
        self.seq = itertools.count()
        self.stalled_since: float | None = None

    # ------------------------------------------------------------------------------- the loop
    def run(self) -> DispatchOutcome:
        t0 = self.clock()
        with self.store.writing():        # the one writer, for the whole sweep
            try:
                while not self._finished():
                    self._follow_workers()
                    self._give_out()
                    self._check_stalled()
                    self._collect()
            except BaseException:
                for task in self._tasks():
                    task.future.cancel()
                raise
        if self.progress is not None:
            self.progress.close()
        self.out.seconds = self.clock() - t0
        return self.out

    def _finished(self) -> bool:
        return bool(self.queues) and not self.busy and not any(self.queues.values())

    def _tasks(self) -> list[_Task]:
        return [t for tasks in self.busy.values() for t in tasks]

    def _follow_workers(self) -> None:
        """Notice workers that left (a death mid-point becomes the point's failure row) and probe new ones."""
        live = set(self.client.scheduler_info()["workers"])
        for addr in [a for a in self.busy if a not in live]:
            self._worker_died(addr, self.busy.pop(addr))
        for addr in [a for a in self.workers if a not in live]:
            del self.workers[addr]
        for addr in [a for a in self.unusable if a not in live]:
            del self.unusable[addr]
        for addr in live:
            if addr not in self.workers and addr not in self.unusable and addr not in self.busy:
                self.busy[addr] = [_Task("probe", self._submit(probe_task, self.setup, kind="probe", worker=addr))]

    def _submit(self, fn, *args, kind: str, worker: str):
        return self.client.submit(fn, *args, key=f"wsp-{kind}-{self.setup.session}-{next(self.seq)}",
                                  workers=[worker], allow_other_workers=False, pure=False)

    def _queue(self, gpu: str | None) -> deque[Point]:
        """The points GPU type `gpu` has not measured, longest first (made when the type first shows up)."""
        if gpu not in self.queues:
            pending = self.store.pending(self.points, retry_failed=self.retry_failed, gpu=gpu)
            self.queues[gpu] = deque(longest_first(pending))
            self.out.skipped += len(self.points) - len(pending)
            if self.progress is not None:
                self.progress.total += len(pending)
        return self.queues[gpu]

    def _give_out(self) -> None:
        for addr, w in self.workers.items():
            tasks = self.busy.get(addr, [])
            if tasks and (len(tasks) >= DEPTH or tasks[0].kind != "measure"):
                continue
            queue = self._queue(w.gpu)
            if not queue:
                continue
            if self.prepare is not None and self.prepared.get((w.gpu, w.host)) != "done":
                if not tasks:
                    self._maybe_prepare(addr, w, queue)
                continue
            while len(tasks) < DEPTH and queue:
                point = queue.popleft()
                if not self.store.is_pending(point.key, self.retry_failed, gpu=w.gpu):
                    self.out.skipped += 1      # recorded meanwhile (cannot happen while we hold the lock)
                    continue
                tasks.append(_Task("measure", self._submit(measure_task, point, self.setup, kind="measure",
                                                           worker=addr), point=point, gpu=w.gpu))
                self.out.submitted.append(point.key)
            if tasks:
                self.busy[addr] = tasks

    def _maybe_prepare(self, addr: str, w: _Worker, queue: deque[Point]) -> None:
        """Start this host's preparation for its GPU type on `addr`, unless a host of this type is at it."""
        group = (w.gpu, w.host)
        if group in self.prepared or any(g[0] == w.gpu and st == "running" for g, st in self.prepared.items()):
            return
        self.prepared[group] = "running"
        self.prepare_tries[group] = self.prepare_tries.get(group, 0) + 1
        self.busy[addr] = [_Task("prepare", self._submit(self.prepare.run, list(queue), self.prepare,
                                                         kind="prepare", worker=addr), group=group)]
        self.say(f"{w.label}: tuning and compiling ahead for {len(queue)} points")

    def _check_stalled(self) -> None:
        """Points wait and no worker can take them (right after _give_out, nothing busy means exactly
        that): wait for a worker to (re)join, then stop with the reason; the rows so far are saved."""
        if self.busy or (self.queues and not any(self.queues.values())):
            self.stalled_since = None
            return
        now = self.clock()
        if self.stalled_since is None:
            self.stalled_since = now
        waited = now - self.stalled_since
        if self.unusable and not self.workers and waited >= min(self.worker_wait_s, 5.0):
            by_reason: dict[str, list[str]] = {}
            for a, r in self.unusable.items():
                by_reason.setdefault(r, []).append(a)
            why = "; ".join(f"{', '.join(addrs)}: {r}" for r, addrs in by_reason.items())
            raise GpuUnavailable(f"no worker of the Dask cluster can measure ({why})",
                                 "start the workers on GPU machines, one per GPU (docs/distributed.md)")
        if waited >= self.worker_wait_s:
            left = {g: len(q) for g, q in self.queues.items() if q}
            what = (", ".join(f"{n} points for {g or 'an unknown GPU'}" for g, n in left.items())
                    if left else "every point")
            raise GpuUnavailable(f"no Dask worker took a point for {self.worker_wait_s:.0f} s ({what} left)",
                                 "start workers on the scheduler (docs/distributed.md), then run the same "
                                 "command again: it measures only what is left")

    # ---------------------------------------------------------------------------- results
    def _collect(self) -> None:
        from distributed import wait

        if not self.busy:
            time.sleep(self.poll_s)
            return
        try:
            wait([t.future for t in self._tasks()], timeout=self.poll_s, return_when="FIRST_COMPLETED")
        except TimeoutError:
            return
        for addr, tasks in list(self.busy.items()):
            for task in [t for t in tasks if t.future.done()]:
                if task not in self.busy.get(addr, ()):
                    continue                  # handled with its worker's death or restart meanwhile
                self.busy[addr].remove(task)
                if not self.busy[addr]:
                    del self.busy[addr]
                self._finish(addr, task)

    def _finish(self, addr: str, task: _Task) -> None:
        fut = task.future
        if task.kind == "measure" and addr not in self.client.scheduler_info()["workers"]:
            # its worker died: a result it held is gone with it (fetching it would wait RESULT_WAIT_S)
            return self._worker_died(addr, [task, *self.busy.pop(addr, [])])
        try:
            if fut.status == "finished":
                try:
                    result = fut.result(timeout=RESULT_WAIT_S)
                except TimeoutError:          # its worker died between finishing and handing the result over
                    return self._requeue(task)
            else:
                exc = fut.exception() if fut.status == "error" else None
                return self._failed(addr, task, exc)
        finally:
            fut.release()
        if task.kind == "probe":
            self._probed(addr, result)
        elif task.kind == "prepare":
            self.prepared[task.group] = "done"
            w = self.workers.get(addr)
            for line in result or []:
                self.say(f"{w.label if w else addr}: {line}")
        else:
            self._measured(addr, task, result)

    def _probed(self, addr: str, result: dict) -> None:
        if result.get("usable"):
            self.workers[addr] = _Worker(addr, dict(result["row_fields"]))
        else:
            self.unusable[addr] = result.get("why") or "cannot measure"
            self.say(f"worker {addr} cannot measure, it gets no points: {self.unusable[addr]}")

    def _measured(self, addr: str, task: _Task, result: dict) -> None:
        w = self.workers.get(addr)
        if "requeue" in result:              # queued behind a sticky error on a worker now restarting
            self._requeue(task)
            return
        if "unusable" in result:
            if w is not None:
                self.say(f"worker {addr} cannot measure, it gets no more points: {result['unusable']}")
            self.workers.pop(addr, None)
            self.unusable[addr] = result["unusable"]
            self._requeue(task)               # another worker measures it
            return
        row = result["row"]
        self._write(row, w.label if w else addr)
        if result.get("sticky"):
            self._restart(addr, w)

    def _write(self, row: dict, label: str) -> None:
        if not self.store.append_pending(row, retry_failed=self.retry_failed, per_gpu=True):
            self.out.skipped += 1
            return
        self.out.written += 1
        self.out.statuses[row["status"]] = self.out.statuses.get(row["status"], 0) + 1
        self.out.per_worker[label] = self.out.per_worker.get(label, 0) + 1
        if self.progress is not None:
            self.progress.update(f"{row['key']} {row['status']} [{label}]")

    def _failed(self, addr: str, task: _Task, exc: BaseException | None) -> None:
        """A task that raised (or was cancelled): a death where Dask says so, else the exception as a row."""
        from distributed import KilledWorker

        if task.kind == "probe":          # probed again on the next round; a worker that keeps failing is left out
            self.probe_failures[addr] = self.probe_failures.get(addr, 0) + 1
            if self.probe_failures[addr] >= 3:
                self.unusable[addr] = f"its probe failed: {type(exc).__name__}: {exc}"
                self.say(f"worker {addr} cannot measure, it gets no points: {self.unusable[addr]}")
            return
        if task.kind == "prepare":
            self.prepared[task.group] = "done"
            self.say(f"preparing on {addr} failed, its points run with the kernels the cache has: {exc}")
            return
        if exc is None or isinstance(exc, KilledWorker):
            self._worker_died(addr, [task, *self.busy.pop(addr, [])])
            return
        w = self.workers.get(addr)
        status, reason = classify(exc)
        fields = dict(w.row_fields) if w else {}
        self._write(make_row(task.point, status, reason=reason, **{**fields, "timestamp": _now()}),
                    w.label if w else addr)

    def _requeue(self, task: _Task) -> None:
        """An unmeasured point back at the head of its GPU type's queue (another worker measures it)."""
        if task.kind == "measure":
            self._queue(task.gpu).appendleft(task.point)

    def _phases(self, addr: str) -> dict | None:
        """{Dask key: {"start", "end"}} of the points the worker at `addr` measured (worker._note),
        or None when the scheduler's events cannot be read."""
        try:
            events = self.client.get_events(START_TOPIC)
        except Exception:  # noqa: BLE001 -- then the oldest unfinished point is blamed
            return None
        phases: dict = {}
        for _t, msg in events:
            if isinstance(msg, dict) and msg.get("worker") == addr:
                phases.setdefault(msg.get("task"), set()).add(msg.get("phase"))
        return phases

    def _worker_died(self, addr: str, tasks: list[_Task]) -> None:
        """The worker at `addr` died with `tasks` given to it: the point it was measuring (started, not
        ended) gets the failure row; the others (not started, or done but their result lost with the
        worker) go back to the queue."""
        tasks = sorted(tasks, key=lambda t: t.seq)
        measuring = [t for t in tasks if t.kind == "measure" and t.future.status != "finished"]
        for t in tasks:
            t.future.cancel()
        phases = self._phases(addr) if measuring else {}
        if phases is None:
            culprit = measuring[0]
        else:
            culprit = next((t for t in measuring if phases.get(t.future.key) == {"start"}), None)
        for t in tasks:
            if t is culprit or t.kind != "measure":
                self._lost(addr, t)
            else:
                self._requeue(t)
        if culprit is None and measuring:   # between two points: nothing to blame, nothing lost
            self.workers.pop(addr, None)
            self.say(f"worker {addr} died between points: {len(measuring)} point(s) it held go back to the queue")

    def _lost(self, addr: str, task: _Task) -> None:
        """The worker at `addr` died with `task` on it, measuring it."""
        w = self.workers.pop(addr, None)
        if task.kind == "prepare":
            if self.prepare_tries.get(task.group, 0) < 2:
                self.prepared.pop(task.group, None)    # another worker of that host and type prepares
                self.say(f"worker {addr} died while preparing; another worker of {task.group[1]} prepares")
            else:
                self.prepared[task.group] = "done"
                self.say(f"worker {addr} died while preparing, twice on {task.group[1]}: its points run with "
                         "the kernels the compile cache has")
            return
        if task.kind != "measure":
            return
        fields = dict(w.row_fields) if w else {}
        self.out.deaths += 1
        self.say(f"worker {addr} died measuring {task.point.key}: recorded as an error row")
        self._write(make_row(task.point, "error", reason=death_reason(fields, addr), **{**fields, "timestamp": _now()}),
                    w.label if w else addr)

    def _restart(self, addr: str, w: _Worker | None) -> None:
        """A sticky CUDA error poisoned this worker's context: restart it; it rejoins as a new worker.
        The point queued behind the bad one goes back to the queue (the worker hands it back unmeasured,
        or the restart cancels it)."""
        for t in self.busy.pop(addr, []):
            t.future.cancel()
            self._requeue(t)
        self.workers.pop(addr, None)
        self.say(f"worker {addr} lost its CUDA context: restarting it")
        try:
            answer = self.client.restart_workers([addr], raise_for_error=False).get(addr)
        except Exception as e:  # noqa: BLE001 -- a worker that cannot restart gets no more points
            answer = f"{type(e).__name__}: {e}"
        if answer in ("OK", "removed"):      # removed: it left meanwhile (its nanny restarts it)
            self.out.restarts += 1
        else:
            self.unusable[addr] = f"lost its CUDA context and could not be restarted ({answer})"
            self.say(f"worker {addr} could not be restarted, it gets no more points")


def dispatch(client, points: Sequence[Point], store: ResultStore, setup: MeasureSetup | None = None, *,
             retry_failed: bool = False, prepare: Prepare | None = None, ready: set[tuple] = frozenset(),
             progress=None,
             say: Callable[[str], None] = _say, poll_s: float = POLL_S, worker_wait_s: float = WORKER_WAIT_S,
             clock: Callable[[], float] = time.monotonic) -> DispatchOutcome:
    """Measure `points` on the workers of the Dask `client` into `store` (module docstring); returns
    what was written, skipped and where. `setup` says how workers measure (default: on their GPU).
    With `prepare`, the first worker of each (GPU type, host) not in `ready` tunes and compiles ahead
    before that host's workers of that type measure."""
    setup = setup or MeasureSetup(session=uuid.uuid4().hex)
    return _Dispatcher(client, points, store, setup, retry_failed=retry_failed, prepare=prepare, ready=set(ready),
                       progress=progress, say=say, poll_s=poll_s, worker_wait_s=worker_wait_s, clock=clock).run()
