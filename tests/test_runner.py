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


def test_classify():
    assert classify(VerificationError("x"))[0] == "wrong"
    assert classify(ValueError("bad"))[0] == "error"
    assert classify(ValueError("bad"))[1] == "ValueError: bad"
