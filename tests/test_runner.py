"""The sweep loop without a GPU: a fake measure function stands in for the GPU side."""

from __future__ import annotations

import pytest

from cutlass_wsp.errors import CompileError, Unsupported, VerificationError
from cutlass_wsp.sweep.plan import SweepSpec, expand
from cutlass_wsp.sweep.results import ResultStore
from cutlass_wsp.sweep.runner import ContextLost, classify, run_points


def _points():
    spec = SweepSpec(layers=("resnet18",), batches=(1,), tiles=(4,), dtypes=("fp16",),
                     patterns=("dense", "wsp-r"), ratios=(0.5,), balances=("balanced",),
                     implementations={"dense": ("cublas",), "wsp-r": ("cublas",)})
    return expand(spec)


def _ok(pt):
    return {"median_ms": 1.0 + pt.c / 1000, "q1_ms": 0.9, "q3_ms": 1.2, "reps": 10, "method": "fake"}


def test_failures_become_rows_and_the_sweep_goes_on(tmp_path):
    pts = _points()
    errors = {pts[0].key: VerificationError("kernel x: relative error 1e-1 > 5e-3"),
              pts[1].key: Unsupported("no tf32 here"),
              pts[2].key: CompileError("nvcc failed"),
              pts[3].key: MemoryError("cudaErrorMemoryAllocation: out of memory")}

    def measure(pt):
        if pt.key in errors:
            raise errors[pt.key]
        return _ok(pt)

    store = ResultStore(tmp_path / "r.jsonl")
    out = run_points(pts, store, measure, provenance_fields={"gpu": "fake"})
    rows = {r["key"]: r for r in store.load()}
    assert len(rows) == len(pts) == out.written
    assert [rows[k]["status"] for k in list(errors)] == ["wrong", "unsupported", "compile_error", "oom"]
    assert rows[pts[0].key]["median_ms"] is None and "relative error" in rows[pts[0].key]["reason"]
    assert all(rows[p.key]["status"] == "ok" and rows[p.key]["gpu"] == "fake" for p in pts[4:])
    assert all(r["timestamp"] for r in rows.values())


def test_resume_measures_only_missing_points(tmp_path):
    pts = _points()
    seen = []

    def measure(pt):
        seen.append(pt.key)
        if len(seen) == 3:
            raise KeyboardInterrupt   # the user stops the sweep midway
        return _ok(pt)

    store = ResultStore(tmp_path / "r.jsonl")
    with pytest.raises(KeyboardInterrupt):
        run_points(pts, store, measure, provenance_fields={})
    assert len(store.load()) == 2
    seen.clear()
    out = run_points(pts, ResultStore(tmp_path / "r.jsonl"), lambda pt: (seen.append(pt.key), _ok(pt))[1],
                     provenance_fields={})
    assert out.skipped == 2 and len(seen) == len(pts) - 2
    keys = [r["key"] for r in ResultStore(tmp_path / "r.jsonl").load(all_rows=True)]
    assert sorted(keys) == sorted(p.key for p in pts)   # nothing lost, nothing twice


def test_lost_cuda_context_stops_with_rows_saved(tmp_path):
    pts = _points()

    def measure(pt):
        if pt is pts[2]:
            raise RuntimeError("cudaErrorIllegalAddress: an illegal memory access was encountered")
        return _ok(pt)

    store = ResultStore(tmp_path / "r.jsonl")
    with pytest.raises(ContextLost, match="resumes"):
        run_points(pts, store, measure, provenance_fields={})
    rows = store.load()
    assert [r["status"] for r in rows] == ["ok", "ok", "error"]


def test_a_ratio_the_layer_cannot_realise_is_final_not_retried(tmp_path):
    """WSP-CB 0.9 of a 64-channel layer (4 blocks of 16) keeps no block: the pruning's own error, recorded as
    `unsupported` with its one line, and --retry-failed leaves it alone while it measures an `error` row again."""
    import numpy as np

    from cutlass_wsp.errors import InputError
    from cutlass_wsp.pruning import prune
    from cutlass_wsp.weights import he_winograd_weights

    W = he_winograd_weights((32, 64), p=4, seed=0)
    pts = _points()
    seen = []

    def measure(pt):
        seen.append(pt.key)
        if pt is pts[0]:
            prune(W, "wsp-cb", 0.9)
        if pt is pts[1] and len(seen) == 2:   # a failure of the first run only
            raise ValueError("a transient failure")
        return _ok(pt)

    store = ResultStore(tmp_path / "r.jsonl")
    run_points(pts, store, measure, provenance_fields={})
    rows = {r["key"]: r for r in store.load()}
    assert rows[pts[0].key]["status"] == "unsupported" and rows[pts[1].key]["status"] == "error"
    assert rows[pts[0].key]["reason"].startswith("pruning ratio 0.9 leaves no 16-channel block of 4 in each W_i")
    seen.clear()
    run_points(pts, ResultStore(tmp_path / "r.jsonl"), measure, provenance_fields={}, retry_failed=True)
    assert seen == [pts[1].key]
    with pytest.raises(InputError):   # to a caller it is still bad input for this layer
        prune(W, "wsp-cb", np.float64(0.9))


def test_classify():
    assert classify(VerificationError("x"))[0] == "wrong"
    assert classify(ValueError("bad"))[0] == "error"
    assert classify(ValueError("bad"))[1] == "ValueError: bad"


# ------------------------------------------------------------------------- one writer per results file
def _sweep_process(path: str, started, log: str, delay: float, release=None) -> None:
    """One `sweep` in its own process: the fake measurer takes `delay` per point and, given `release`, holds its
    first point until that event is set (so it still holds the file's lock however slowly another process starts).
    Writes its outcome ('measured N' or the error line) to `log`."""
    import time
    from pathlib import Path

    from cutlass_wsp.errors import WspError

    def measure(pt):
        started.set()
        if release is not None:
            release.wait(60)
        time.sleep(delay)
        return _ok(pt)

    try:
        out = run_points(_points(), ResultStore(path, out_option="--out"), measure, provenance_fields={})
        Path(log).write_text(f"measured {out.written}")
    except WspError as e:
        Path(log).write_text(f"refused: {e}")


def test_two_sweeps_on_one_file_never_measure_a_point_twice(tmp_path):
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    path = tmp_path / "r.jsonl"
    first_started, second_started, release = ctx.Event(), ctx.Event(), ctx.Event()
    # the first sweep holds its first point (and the lock) until the second has run: with a fixed delay per point
    # the first could finish before a slow machine started the second (8 points at 0.05 s: it did, on a loaded CI)
    first = ctx.Process(target=_sweep_process, args=(str(path), first_started, str(tmp_path / "a"), 0.0, release))
    first.start()
    assert first_started.wait(60)
    second = ctx.Process(target=_sweep_process, args=(str(path), second_started, str(tmp_path / "b"), 0.0))
    second.start()
    second.join(60)
    release.set()
    first.join(60)
    n = len(_points())
    assert (tmp_path / "a").read_text() == f"measured {n}"
    refused = (tmp_path / "b").read_text()
    assert refused.startswith(f"refused: {path} is being written by another cutlass-wsp process (pid {first.pid})")
    assert "give --out another file" in refused and not second_started.is_set()   # refused before measuring
    keys = [r["key"] for r in ResultStore(path).load(all_rows=True)]
    assert len(keys) == len(set(keys)) == n


def test_a_point_another_writer_recorded_meanwhile_is_not_appended_again(tmp_path):
    """Re-checked under the lock before each append: a row that reached the file by another way (a
    writer that ignores the lock) is not written twice."""
    import json

    from cutlass_wsp.sweep.results import make_row

    pts = _points()
    path = tmp_path / "r.jsonl"
    measured = []

    def measure(pt):
        measured.append(pt.key)
        if len(measured) == 2:                # meanwhile, this very point lands in the file
            with open(path, "a") as f:
                f.write(json.dumps(make_row(pt, "ok", **_ok(pt))) + "\n")
        if len(measured) == 3:                # and so does the next one
            nxt = pts[3]
            with open(path, "a") as f:
                f.write(json.dumps(make_row(nxt, "ok", **_ok(nxt))) + "\n")
        return _ok(pt)

    out = run_points(pts, ResultStore(path), measure, provenance_fields={})
    keys = [r["key"] for r in ResultStore(path).load(all_rows=True)]
    assert len(keys) == len(set(keys)) == len(pts)
    assert pts[3].key not in measured                     # re-checked before measuring, too
    assert out.written == len(pts) - 2 and out.skipped == 2
