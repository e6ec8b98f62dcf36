"""A sweep on a Dask cluster (`cutlass-wsp sweep --workers N|all` or `--scheduler ADDRESS`), in order:

1. the results file's writer lock, first: a second sweep on the file stops at once, as on one GPU;
2. tuning and compiling ahead, before any point is given out. One host (`--workers`): this process
   does it on this host's GPU and CPU cores (worker.prepare_here: sweep/session.tune_points, then
   Measurer.compile_ahead), so the workers only read the tuning store and load kernels from the
   compile cache (`CUTLASS_WSP_CACHE`). Many hosts (`--scheduler`): this process may have no GPU,
   so the first worker of each GPU type and host does it (sweep/dispatch.py's prepare);
3. the cluster (sweep/cluster.py): LocalCUDACluster on this host's GPUs, or the running scheduler;
4. dispatch (sweep/dispatch.py): points longest first, one per worker at a time, rows streamed back
   to this process, the results file's one writer; a worker that dies leaves an error row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import sys
import uuid
from collections.abc import Callable, Sequence

from cutlass_wsp.sweep.dispatch import DispatchOutcome, dispatch
from cutlass_wsp.sweep.plan import Point
from cutlass_wsp.sweep.results import ResultStore
from cutlass_wsp.sweep.worker import MeasureSetup, Prepare


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _client_provenance() -> dict:
    from cutlass_wsp.gpu.info import provenance

    return provenance()


def _prepare_on_this_host(points: Sequence[Point], store: ResultStore, prep: Prepare, retry_failed: bool,
                          say: Callable[[str], None]) -> set[tuple]:
    """Tune and compile ahead here for this host's GPU type; returns the (gpu, host) prepared."""
    from cutlass_wsp.gpu.device import current_gpu_name, require_gpu
    from cutlass_wsp.sweep.worker import prepare_here

    require_gpu()
    gpu = current_gpu_name()
    pending = store.pending(points, retry_failed=retry_failed, gpu=gpu)
    if pending:
        prepare_here(pending, tune=prep.tune, tune_budget_s=prep.tune_budget_s, tune_problem_s=prep.tune_problem_s,
                     say=say)
    return {(gpu, socket.gethostname())}


def run_sweep_on_cluster(points: Sequence[Point], store: ResultStore, *, workers: int | str | None = None,
                         scheduler: str | None = None, budget_s: float = 0.25, use_graph: bool = False,
                         retry_failed: bool = False, layer_time: bool = True, tune: str = "auto",
                         tune_budget_s: float | None = None, tune_problem_s: float | None = None,
                         open_cluster: Callable | None = None, prepare_local: Callable | None = None,
                         prepare_remote: Callable | None = None, setup: MeasureSetup | None = None,
                         provenance: Callable[[], dict] = _client_provenance,
                         say: Callable[[str], None] = _say) -> DispatchOutcome:
    """Measure `points` into `store` on `workers` GPUs of this host (a number or 'all') or on the Dask
    cluster at `scheduler` (module docstring). The GPU-facing parts, which the CPU tests replace:
    `open_cluster(workers | scheduler)` (a context manager yielding a Client), `prepare_local` (like
    _prepare_on_this_host), `prepare_remote` (Prepare.run on a worker) and `setup` (how workers measure)."""
    from cutlass_wsp.sweep import cluster
    from cutlass_wsp.sweep.progress import Progress

    if (workers is None) == (scheduler is None):
        raise ValueError("give workers or scheduler")
    prep = Prepare(tune=tune, tune_budget_s=tune_budget_s, tune_problem_s=tune_problem_s)
    if prepare_remote is not None:
        prep = dataclasses.replace(prep, run=prepare_remote)
    if open_cluster is None:
        open_cluster = cluster.local_gpu_cluster if scheduler is None else cluster.remote_cluster
        if scheduler is None:
            cluster.check_workers(workers)      # a --workers this host cannot give stops before tuning
    with store.writing():        # a second sweep onto this file stops here, before tuning or any cluster
        store.provenance = provenance()
        ready: set[tuple] = set()
        if scheduler is None:    # one host: this process has its GPUs; prepare before the workers start
            ready = (prepare_local or _prepare_on_this_host)(points, store, prep, retry_failed, say)
        setup = setup or MeasureSetup(session=uuid.uuid4().hex, budget_s=budget_s, use_graph=use_graph,
                                      layer_time=layer_time)
        with open_cluster(workers if scheduler is None else scheduler) as client:
            say(f"Dask cluster: {len(client.scheduler_info()['workers'])} workers"
                + (f" at {scheduler}" if scheduler else ""))
            with contextlib.closing(Progress(0)) as progress:
                return dispatch(client, points, store, setup, retry_failed=retry_failed, prepare=prep,
                                ready=ready, progress=progress, say=say)
