"""`sweep --workers` / `--scheduler` without a GPU: the one-line answers (the extra not installed, bad
values, no scheduler there), the cost order, and the session's order of work on a CPU LocalCluster."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

from cutlass_wsp.cli import main
from cutlass_wsp.errors import InputError
from cutlass_wsp.sweep.cluster import parse_workers, require_engine
from cutlass_wsp.sweep.cost import longest_first, point_cost
from cutlass_wsp.sweep.plan import SweepSpec, expand


def _without(monkeypatch, *modules):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in modules else real(name, *a))


@pytest.mark.parametrize("argv,option", [(["--workers", "2"], "--workers"), (["--workers", "all"], "--workers"),
                                         (["--scheduler", "tcp://127.0.0.1:8786"], "--scheduler")])
def test_without_the_extra_the_options_say_in_one_line_what_to_install(monkeypatch, capsys, tmp_path, argv, option):
    _without(monkeypatch, "distributed", "dask_cuda")
    assert main(["sweep", *argv, "--out", str(tmp_path / "r.jsonl"), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"cutlass-wsp sweep: error: {option} runs the sweep on Dask")
    assert "pip install -e '.[cuda13,distributed]'" in err
    assert not (tmp_path / "r.jsonl").exists()            # nothing started


def test_the_scheduler_needs_no_dask_cuda_on_the_client(monkeypatch):
    real = importlib.util.find_spec
    present = {"distributed": object(), "dask_cuda": None}        # distributed there, dask-cuda not
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: present[name] if name in present else real(name, *a))
    with pytest.raises(InputError, match="on Dask, and dask-cuda is not installed"):
        require_engine("--workers", cuda=True)
    require_engine("--scheduler", cuda=False)        # the workers need dask-cuda, this process does not


def test_the_sweep_command_imports_no_dask_unless_asked(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from cutlass_wsp.cli import main
        main(["sweep", "--dry-run", "--out", {str(tmp_path / "r.jsonl")!r}])
        assert not [m for m in sys.modules if m.split(".")[0] in ("dask", "distributed", "dask_cuda")], "dask imported"
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONWARNINGS": ""})
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("text,value", [("2", 2), ("all", "all"), (" ALL ", "all")])
def test_parse_workers(text, value):
    assert parse_workers(text) == value


@pytest.mark.parametrize("text,match", [("0", "at least one worker"), ("two", "not a number of GPUs"),
                                        ("-1", "at least one worker")])
def test_parse_workers_refuses_in_one_line(text, match):
    with pytest.raises(InputError, match=match):
        parse_workers(text)


def test_a_bad_workers_value_is_one_line(capsys, tmp_path):
    assert main(["sweep", "--workers", "two", "--dry-run", "--out", str(tmp_path / "r.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["cutlass-wsp sweep: error: --workers 'two' is not a number of GPUs (give a number (2) or all)"]


def test_longest_first_orders_by_the_size_proxy_and_keeps_ties_in_order():
    pts = expand(SweepSpec(layers=("vgg16", "resnet18"), batches=(1, 32), tiles=(4,), dtypes=("fp16",),
                           patterns=("dense", "wsp-r"), ratios=(0.5,), balances=("balanced",)))
    order = longest_first(pts)
    assert sorted(order, key=lambda p: p.key) == sorted(pts, key=lambda p: p.key)
    costs = [point_cost(p) for p in order]
    assert costs == sorted(costs, reverse=True)
    big = order[0]
    assert point_cost(big) == big.c * big.n * big.H * big.W * big.batch and big.batch == 32
    ties = [p for p in pts if point_cost(p) == costs[0]]
    assert order[:len(ties)] == ties                      # equal estimates keep the sweep's order


# --- what a worker runs, called directly (no Dask) ----------------------------------------------
def _pt():
    return expand(SweepSpec(layers=("resnet18",), batches=(1,), tiles=(4,), dtypes=("fp16",), patterns=("dense",),
                            implementations={"dense": ("cublas",)}))[0]


def _ok(setup):
    return lambda pt: {"median_ms": 1.0, "method": "fake", "reps": 1}


def _sticky(setup):
    def measure(pt):
        raise RuntimeError("cudaErrorLaunchFailure: unspecified launch failure")
    return measure


def _no_measurer(setup):
    from cutlass_wsp.errors import GpuUnavailable

    raise GpuUnavailable("no CUDA GPU or driver (fake)")


PROV = {"gpu_name": "GPU-A", "hostname": "node1", "gpu_pci_bus_id": "00000000:19:00.0"}


def test_a_worker_reports_its_gpu_and_host_and_whether_it_can_measure():
    from cutlass_wsp.sweep.worker import MeasureSetup, probe_task

    ok = probe_task(MeasureSetup(session="probe-ok", provenance=lambda: PROV))
    assert ok["usable"] and ok["row_fields"]["gpu"] == "GPU-A" and ok["row_fields"]["host"] == "node1"
    bad = probe_task(MeasureSetup(session="probe-bad", provenance=lambda: {"hostname": "n", "gpu_error": "no GPU"}))
    assert not bad["usable"] and bad["why"] == "no GPU"
    boom = probe_task(MeasureSetup(session="probe-boom", provenance=lambda: 1 / 0))
    assert not boom["usable"] and "ZeroDivisionError" in boom["why"]


def test_a_worker_measures_into_a_row_with_its_provenance():
    from cutlass_wsp.sweep.worker import MeasureSetup, measure_task

    out = measure_task(_pt(), MeasureSetup(session="m-ok", make_measure=_ok, provenance=lambda: PROV))
    row = out["row"]
    assert row["status"] == "ok" and row["key"] == _pt().key and not out["sticky"]
    assert (row["gpu"], row["host"], row["gpu_bus_id"]) == ("GPU-A", "node1", "00000000:19:00.0") and row["timestamp"]
    sticky = measure_task(_pt(), MeasureSetup(session="m-sticky", make_measure=_sticky, provenance=lambda: PROV))
    assert sticky["row"]["status"] == "error" and sticky["sticky"]
    none = measure_task(_pt(), MeasureSetup(session="m-none", make_measure=_no_measurer, provenance=lambda: PROV))
    assert none == {"unusable": "no CUDA GPU or driver (fake)"}      # the client gives its points to others


def test_a_dead_workers_row_names_the_worker_host_and_gpu():
    from cutlass_wsp.sweep.results import row_provenance
    from cutlass_wsp.sweep.worker import death_reason

    text = death_reason(row_provenance(PROV), "tcp://10.0.0.7:40000")
    assert text.startswith("the Dask worker measuring this point died (tcp://10.0.0.7:40000, node1, GPU-A, "
                           "00000000:19:00.0)") and "--retry-failed" in text


def test_more_workers_than_gpus_stops_before_anything_is_tuned(monkeypatch, tmp_path):
    from cutlass_wsp.sweep import cluster
    from cutlass_wsp.sweep.cluster_session import run_sweep_on_cluster
    from cutlass_wsp.sweep.results import ResultStore

    monkeypatch.setattr(cluster, "_visible_gpus", lambda: 2)
    tuned = []
    with pytest.raises(InputError, match="--workers 3: this host has 2 GPUs"):
        run_sweep_on_cluster([_pt()], ResultStore(tmp_path / "r.jsonl"), workers=3, provenance=dict,
                             prepare_local=lambda *a: tuned.append(a))
    assert tuned == []
