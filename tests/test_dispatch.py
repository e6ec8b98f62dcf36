"""A sweep on a Dask cluster, without a GPU: a LocalCluster of CPU worker processes and a fake measurer
stand in for dask-cuda's LocalCUDACluster and the GPU (sweep/dispatch.py, sweep/worker.py).

The fake measurer runs in the worker processes (this module is importable there: they start with the
test process's sys.path). A worker's fake `gpu_bus_id` is its pid, so each row says which process
measured it."""

from __future__ import annotations

import functools
import os
import socket
import time
import uuid

import pytest

pytest.importorskip("distributed", reason="the distributed extra is not installed: pip install -e '.[distributed]'")
# a second LocalCluster beside the module's finds the default HTTP port taken and takes another
pytestmark = pytest.mark.filterwarnings("ignore:Port 8787 is already in use:UserWarning")

from cutlass_wsp.errors import Busy, GpuUnavailable  # noqa: E402
from cutlass_wsp.sweep.cost import longest_first, point_cost  # noqa: E402
from cutlass_wsp.sweep.dispatch import dispatch  # noqa: E402
from cutlass_wsp.sweep.plan import SweepSpec, expand  # noqa: E402
from cutlass_wsp.sweep.results import ResultStore, make_row  # noqa: E402
from cutlass_wsp.sweep.worker import MeasureSetup  # noqa: E402

GPU = "fake-GPU"


# --- what runs in the workers --------------------------------------------------------------------
def fake_provenance(gpu: str = GPU) -> dict:
    return {"gpu_name": gpu, "hostname": socket.gethostname(), "gpu_pci_bus_id": f"pid{os.getpid()}"}


def no_gpu_provenance() -> dict:
    return {"hostname": socket.gethostname(), "gpu_error": "no CUDA GPU or driver (fake)"}


def fake_measure(setup, die_on: str | None = None, sticky_on: str | None = None, lock: str | None = None,
                 needs: str | None = None, sleep_s: float = 0.02, die_after_s: float = 0.0):
    """A measure function: a fixed time, or a death (os._exit), or a sticky CUDA error, on the named point.
    With `lock`, each point also tries to take the results file's writer lock and notes the refusal.
    With `needs`, a point fails unless that file exists (what the preparation writes)."""
    if needs is not None and not os.path.exists(needs):
        raise AssertionError("measuring before the preparation")      # the worker then counts as unusable

    def measure(pt):
        if needs is not None:
            with open(needs) as f:
                assert f.read().count("prepared") == 1, "prepared more than once"
        if pt.key == die_on:
            time.sleep(die_after_s)      # 0: dies at once, before its start event can leave the worker
            os._exit(1)                  # the worker process dies mid-point (a lost context, an OOM kill)
        if pt.key == sticky_on:
            raise RuntimeError("cudaErrorIllegalAddress: an illegal memory access was encountered")
        time.sleep(sleep_s)
        fields = {"median_ms": 1.0, "q1_ms": 0.9, "q3_ms": 1.1, "reps": 3, "method": "fake"}
        if lock is not None:
            try:
                with ResultStore(lock).writing():
                    fields["kernel"] = "took the lock"
            except Busy:
                fields["kernel"] = "lock refused"
        return fields
    return measure


def setup(**kw) -> MeasureSetup:
    prov = kw.pop("provenance", fake_provenance)
    return MeasureSetup(session=uuid.uuid4().hex, make_measure=functools.partial(fake_measure, **kw),
                        provenance=prov)


# --- the cluster ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=50) as cluster, Client(cluster) as c:
        c.wait_for_workers(2)
        yield c


def points():
    return expand(SweepSpec(layers=("vgg16",), batches=(1, 2), tiles=(4,), dtypes=("fp16",),
                            patterns=("dense", "wsp-r"), ratios=(0.5,), balances=("balanced",),
                            implementations={"dense": ("cublas",), "wsp-r": ("cublas",)}))


def rows_of(path):
    return ResultStore(path).load(all_rows=True)


def quiet(_msg):
    pass


# --- tests ---------------------------------------------------------------------------------------
def test_every_point_lands_once_longest_first_on_every_worker(client, tmp_path):
    pts = points()
    store = ResultStore(tmp_path / "r.jsonl", out_option="--out")
    out = dispatch(client, pts, store, setup(), say=quiet)
    rows = rows_of(store.path)
    assert sorted(r["key"] for r in rows) == sorted(p.key for p in pts)        # once each
    assert all(r["status"] == "ok" and r["gpu"] == GPU and r["host"] == socket.gethostname() for r in rows)
    assert out.written == len(pts) and out.skipped == 0 and out.statuses == {"ok": len(pts)}
    # given out longest first: the estimates never grow along the order of submission
    assert out.submitted == [p.key for p in longest_first(pts)]
    costs = [point_cost(next(p for p in pts if p.key == k)) for k in out.submitted]
    assert costs == sorted(costs, reverse=True) and costs[0] > costs[-1]
    # both worker processes measured (a row's fake bus id is its worker's pid)
    assert len({r["gpu_bus_id"] for r in rows}) == 2 and len(out.per_worker) == 2
    assert sum(out.per_worker.values()) == len(pts)


def test_resume_gives_out_only_the_points_not_in_the_file(client, tmp_path):
    pts = points()
    store = ResultStore(tmp_path / "r.jsonl")
    done = pts[::3]
    for p in done:
        store.append(make_row(p, "ok", median_ms=2.0, gpu=GPU))
    store.append(make_row(pts[1], "ok", median_ms=2.0, gpu="another-GPU"))   # another type: not done on this one
    out = dispatch(client, pts, ResultStore(store.path), setup(), say=quiet)
    assert out.skipped == len(done) and out.written == len(pts) - len(done)
    assert set(out.submitted) == {p.key for p in pts} - {p.key for p in done}
    rows = [r for r in rows_of(store.path) if r["gpu"] == GPU]
    assert sorted(r["key"] for r in rows) == sorted(p.key for p in pts)       # nothing twice
    again = dispatch(client, pts, ResultStore(store.path), setup(), say=quiet)
    assert again.written == 0 and again.skipped == len(pts) and again.submitted == []


def test_a_worker_killed_mid_sweep_loses_no_row_and_its_point_is_an_error_row(client, tmp_path):
    pts = points()
    victim = longest_first(pts)[4]
    store = ResultStore(tmp_path / "r.jsonl")
    out = dispatch(client, pts, store, setup(die_on=victim.key, sleep_s=0.05), say=quiet)
    rows = rows_of(store.path)
    assert sorted(r["key"] for r in rows) == sorted(p.key for p in pts)        # nothing lost, nothing twice
    dead = next(r for r in rows if r["key"] == victim.key)
    assert dead["status"] == "error" and "worker measuring this point died" in dead["reason"]
    assert dead["gpu"] == GPU and dead["host"] == socket.gethostname() and dead["median_ms"] is None
    assert all(r["status"] == "ok" for r in rows if r["key"] != victim.key), [(r["key"], r["reason"]) for r in rows if r["status"] != "ok"]
    assert out.deaths == 1 and out.submitted.count(victim.key) == 1            # given out once, not retried
    # the nanny restarted the dead worker: a third process measured after the death
    assert len({r["gpu_bus_id"] for r in rows if r["status"] == "ok"}) == 3
    client.wait_for_workers(2)


def test_a_worker_that_dies_mid_point_is_blamed_by_its_events_and_its_queued_point_goes_on(client, tmp_path):
    """A worker holds two points; the one it was measuring (its start event reached the scheduler) gets
    the error row, given out once; the one queued behind it is measured by a worker that lives."""
    pts = points()
    victim = longest_first(pts)[5]
    store = ResultStore(tmp_path / "r.jsonl")
    out = dispatch(client, pts, store, setup(die_on=victim.key, die_after_s=0.3, sleep_s=0.05), say=quiet)
    rows = rows_of(store.path)
    assert sorted(r["key"] for r in rows) == sorted(p.key for p in pts)        # nothing lost, nothing twice
    assert [r["key"] for r in rows if r["status"] != "ok"] == [victim.key]
    assert out.deaths == 1 and out.submitted.count(victim.key) == 1            # known at once: never again
    # the point given out right behind the victim on its worker was measured, by a living worker
    behind = out.submitted[out.submitted.index(victim.key) + 1:]
    assert any(out.submitted.count(k) == 2 for k in behind)                    # given out again after the death
    client.wait_for_workers(2)


def test_a_sticky_cuda_error_is_a_row_and_the_worker_is_restarted(client, tmp_path):
    pts = points()
    bad = longest_first(pts)[2]
    store = ResultStore(tmp_path / "r.jsonl")
    out = dispatch(client, pts, store, setup(sticky_on=bad.key), say=quiet)
    rows = {r["key"]: r for r in rows_of(store.path)}
    assert len(rows) == len(pts)
    assert rows[bad.key]["status"] == "error" and "cudaErrorIllegalAddress" in rows[bad.key]["reason"]
    assert out.restarts == 1
    poisoned = rows[bad.key]["gpu_bus_id"]
    # the poisoned process measured nothing after its error: its worker was restarted before it got more
    later = rows_of(store.path)[list(rows).index(bad.key) + 1:]
    assert later and all(r["gpu_bus_id"] != poisoned for r in later)
    assert len({r["gpu_bus_id"] for r in later}) == 2                      # the restarted one measured too
    client.wait_for_workers(2)


def test_the_client_is_the_one_writer_and_holds_the_lock(client, tmp_path):
    path = tmp_path / "r.jsonl"
    pts = points()[:6]
    dispatch(client, pts, ResultStore(path), setup(lock=str(path)), say=quiet)
    rows = rows_of(path)
    assert len(rows) == 6 and {r["kernel"] for r in rows} == {"lock refused"}   # every worker was refused
    # and a second sweep onto the file is refused before anything is given out
    with ResultStore(path).writing():
        with pytest.raises(Busy, match="another cutlass-wsp process"):
            dispatch(client, pts, ResultStore(path, out_option="--out"), setup(), say=quiet)


def test_workers_without_a_gpu_stop_the_sweep_with_their_reason(client, tmp_path):
    store = ResultStore(tmp_path / "r.jsonl")
    with pytest.raises(GpuUnavailable, match="no worker of the Dask cluster can measure.*no CUDA GPU"):
        dispatch(client, points(), store, setup(provenance=no_gpu_provenance), say=quiet, worker_wait_s=1.0)
    assert not store.path.exists() or rows_of(store.path) == []


def test_two_gpu_types_each_measure_every_point_into_one_file(tmp_path):
    """Workers of two GPU types: each type measures every point once, sharded over its workers."""
    from distributed import Client, LocalCluster

    pts = points()[:8]
    store = ResultStore(tmp_path / "r.jsonl")
    with LocalCluster(n_workers=3, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=50) as cluster, Client(cluster) as c:
        c.wait_for_workers(3)
        first = sorted(c.scheduler_info()["workers"])[0]
        # one worker reports GPU type B, the other two type A
        types = {a: ("fake-B" if a == first else "fake-A") for a in c.scheduler_info()["workers"]}
        c.run(_set_fake_gpu, types)
        out = dispatch(c, pts, store, setup(provenance=_env_provenance), say=quiet)
    rows = rows_of(store.path)
    for gpu in ("fake-A", "fake-B"):
        assert sorted(r["key"] for r in rows if r["gpu"] == gpu) == sorted(p.key for p in pts)
    assert len(rows) == 2 * len(pts) and out.written == 2 * len(pts)
    assert len({r["gpu_bus_id"] for r in rows if r["gpu"] == "fake-A"}) == 2    # type A shared by its two
    assert len(ResultStore(store.path).load()) == 2 * len(pts)                 # readers keep both types


def _set_fake_gpu(types, dask_worker=None):
    os.environ["FAKE_GPU"] = types[dask_worker.address]


def _env_provenance() -> dict:
    return fake_provenance(os.environ.get("FAKE_GPU", GPU))


# --- the session: the lock first, then tuning and compiling ahead, then the cluster ------------------
def fake_prepare(points, prep, marker: str):
    with open(marker, "a") as f:
        f.write(f"prepared {len(points)} tune={prep.tune}\n")
    return [f"tuned {len(points)} points"]


def test_one_host_prepares_here_under_the_lock_before_the_workers_start(client, tmp_path):
    import contextlib

    from cutlass_wsp.sweep.cluster_session import run_sweep_on_cluster

    pts = points()[:8]
    path, marker = tmp_path / "r.jsonl", tmp_path / "prepared"
    ResultStore(path).append(make_row(pts[0], "ok", median_ms=1.0, gpu=GPU))      # resumed: pts[0] is done
    seen = {}

    def prepare_local(points_, store, prep, retry_failed, say):
        with pytest.raises(Busy):                      # the sweep holds the results file already
            with ResultStore(path).writing():
                pass
        seen["pending"] = [p.key for p in points_]
        assert "cluster" not in seen                   # before any worker exists
        fake_prepare(points_, prep, str(marker))
        return {(GPU, socket.gethostname())}

    @contextlib.contextmanager
    def open_cluster(workers):
        seen["cluster"] = workers
        yield client

    out = run_sweep_on_cluster(pts, ResultStore(path, out_option="--out"), workers=2, tune="again",
                               open_cluster=open_cluster, prepare_local=prepare_local,
                               setup=setup(needs=str(marker)), provenance=lambda: {"hostname": "the-client"},
                               say=quiet)
    assert seen["cluster"] == 2 and seen["pending"] == [p.key for p in pts]     # pending on this type, in order
    assert marker.read_text() == f"prepared {len(pts)} tune=again\n"            # once, by this process
    rows = ResultStore(path).load()
    assert len(rows) == len(pts) and all(r["status"] == "ok" for r in rows)
    assert out.written == len(pts) - 1 and out.skipped == 1


def test_many_hosts_prepare_on_one_worker_of_each_gpu_type_and_host_first(client, tmp_path):
    from cutlass_wsp.sweep.worker import Prepare

    pts = points()[:8]
    marker = tmp_path / "prepared"
    store = ResultStore(tmp_path / "r.jsonl")
    lines = []
    out = dispatch(client, pts, store, setup(needs=str(marker)), say=lines.append,
                   prepare=Prepare(tune="auto", run=functools.partial(fake_prepare, marker=str(marker))))
    assert marker.read_text() == f"prepared {len(pts)} tune=auto\n"             # one of the two workers, once
    assert any(line.endswith(f"tuned {len(pts)} points") for line in lines)
    rows = rows_of(store.path)
    assert len(rows) == len(pts) and all(r["status"] == "ok" for r in rows)
    assert len(out.per_worker) == 2                                             # then both measured


def test_a_scheduler_that_allows_no_retry_gives_the_same_error_row(tmp_path):
    """What sweep/cluster.py's LocalCUDACluster sets: allowed-failures 0, so the scheduler itself fails
    the dead worker's task (KilledWorker) instead of holding it for another worker."""
    import dask
    from distributed import Client, LocalCluster

    pts = points()[:10]
    victim = longest_first(pts)[3]
    store = ResultStore(tmp_path / "r.jsonl")
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=50) as cluster, Client(cluster) as c:
            c.wait_for_workers(2)
            out = dispatch(c, pts, store, setup(die_on=victim.key, sleep_s=0.05), say=quiet)
    rows = {r["key"]: r for r in rows_of(store.path)}
    assert len(rows) == len(pts) == len(rows_of(store.path))
    assert rows[victim.key]["status"] == "error" and "died" in rows[victim.key]["reason"]
    assert out.deaths == 1 and sum(r["status"] == "ok" for r in rows.values()) == len(pts) - 1


# --- the command line against a running scheduler -------------------------------------------------
def test_sweep_on_a_scheduler_whose_workers_have_no_gpu_stops_in_one_line(client, tmp_path, capsys):
    """The whole `--scheduler` path with the real worker functions: these CPU workers report no GPU."""
    from cutlass_wsp.cli import main

    address = client.scheduler.address
    argv = ["sweep", "--scheduler", address, "--net", "resnet18:layer4.0.conv2", "--pattern", "dense",
            "--out", str(tmp_path / "r.jsonl"), "--no-plots"]
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("cutlass-wsp sweep: error: no worker of the Dask cluster can measure (tcp://")
    assert "cannot measure" in "\n".join(err[:-1]) and not any("Traceback" in line for line in err)
    assert not (tmp_path / "r.jsonl").exists() or rows_of(tmp_path / "r.jsonl") == []


def test_a_scheduler_that_is_not_there_is_one_line(tmp_path, capsys):
    from cutlass_wsp.cli import main
    from cutlass_wsp.errors import InputError
    from cutlass_wsp.sweep.cluster import remote_cluster

    with pytest.raises(InputError, match="could not reach the Dask scheduler at tcp://127.0.0.1:9"):
        with remote_cluster("tcp://127.0.0.1:9", timeout_s=1):
            pass
    assert main(["sweep", "--scheduler", str(tmp_path / "none.json"), "--out", str(tmp_path / "r.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"cutlass-wsp sweep: error: --scheduler {tmp_path / 'none.json'}: no such scheduler "
                                "file (give the file `dask scheduler --scheduler-file` wrote, or tcp://HOST:8786)"]


def _worker_settings():
    import dask

    return os.environ.get("OMP_NUM_THREADS"), dask.config.get("distributed.worker.profile.enabled")


def test_the_one_host_workers_get_their_share_of_cores_and_no_profiler():
    """sweep/cluster.py's worker_config reaches the worker processes through their nannies."""
    import dask
    from distributed import Client, LocalCluster

    from cutlass_wsp.sweep.cluster import worker_config

    cfg = worker_config(2)
    share = str(max(1, (os.cpu_count() or 1) // 2))
    assert cfg["distributed.scheduler.allowed-failures"] == 0
    with dask.config.set(cfg):
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=50) as cluster, Client(cluster) as c:
            c.wait_for_workers(2)
            seen = c.run(_worker_settings)
    assert set(seen.values()) == {(share, False)}, seen


def test_a_worker_that_dies_between_points_blames_none_and_says_so(tmp_path):
    """The scheduler's events show the dead worker's last point ended and the next never started: no error
    row, both points it held go back to the queue, and the sweep says the worker died between points."""
    from collections import deque
    from types import SimpleNamespace

    from cutlass_wsp.sweep.dispatch import _Dispatcher, _Task

    done, held = points()[:2]
    addr = "tcp://127.0.0.1:1"
    events = [(0.0, {"worker": addr, "task": "k-done", "phase": "start"}),
              (0.1, {"worker": addr, "task": "k-done", "phase": "end"})]
    client = SimpleNamespace(get_events=lambda topic: events)
    said: list[str] = []
    d = _Dispatcher(client, [done, held], ResultStore(tmp_path / "r.jsonl"), setup(), retry_failed=False, prepare=None,
                    ready=set(), progress=None, say=said.append, poll_s=0.0, worker_wait_s=0.0, clock=time.monotonic)
    d.workers[addr] = SimpleNamespace(row_fields={"gpu": GPU}, label=addr)
    d.queues[GPU] = deque()                    # both points were given out: none left in the queue
    tasks = [_Task("measure", SimpleNamespace(key="k-done", status="error", cancel=lambda: None), done, gpu=GPU),
             _Task("measure", SimpleNamespace(key="k-held", status="pending", cancel=lambda: None), held, gpu=GPU)]
    d._worker_died(addr, tasks)
    assert not (tmp_path / "r.jsonl").exists() and d.out.deaths == 0          # no error row
    assert sorted(p.key for p in d.queues[GPU]) == sorted([done.key, held.key])    # measured again elsewhere
    assert addr not in d.workers and any("died between points: 2 point(s)" in m for m in said), said
