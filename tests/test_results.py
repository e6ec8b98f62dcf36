"""The JSON-lines result store: schema, round trip, crash tolerance, resume, CSV, speedups."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import warnings
from pathlib import Path

import pytest

from cutlass_wsp.errors import InputError
from cutlass_wsp.sweep import results as R
from cutlass_wsp.sweep.plan import SweepSpec, expand
from cutlass_wsp.sweep.results import ROW_FIELDS, ResultStore, ResultsWarning, make_row

DATA = Path(__file__).parent / "data"
DOC = Path(__file__).parents[1] / "docs" / "results-schema.md"


def points():
    return expand(SweepSpec(layers=("resnet18",), batches=(32,), tiles=(4,), dtypes=("fp16",),
                            patterns=("dense", "wsp-r"), ratios=(0.5, 0.7), balances=("balanced",)))


def ok_row(point, ms=1.0, **kw):
    fields = dict(median_ms=ms, q1_ms=ms * 0.9, q3_ms=ms * 1.2, reps=50, method="cuda-events",
                  flops=2_000_000_000, floor_ms=ms / 2, gpu="GPU-A")
    return make_row(point, "ok", **{**fields, **kw})


def test_row_fields_match_the_documented_schema():
    # a table row may list several fields: "| `c`, `n`, `H`, `W` | ..."
    names = []
    for line in DOC.read_text().splitlines():
        m = re.match(r"^\| ((?:`[^`]+`(?:, )?)+) \|", line)
        if m:
            names += re.findall(r"`([^`]+)`", m.group(1))
    statuses = [n for n in names if n in R.STATUSES]
    fields = [n for n in names if n not in R.STATUSES and n not in R.HEADER_FIELDS]
    assert fields == list(ROW_FIELDS)
    assert set(statuses) == set(R.STATUSES)


def test_round_trip_keeps_every_field(tmp_path):
    store = ResultStore(tmp_path / "r.jsonl", provenance={"gpu": "GPU-A"})
    pts = points()
    rows = [ok_row(p, ms=0.1 * (i + 1), kept_m=[3] * 16, kernel_config={"tile": [128, 64, 32]})
            for i, p in enumerate(pts[:5])]
    rows.append(make_row(pts[5], "wrong", reason="rel_error 0.4", rel_error=0.4))
    for r in rows:
        store.append(r)
    loaded = ResultStore(tmp_path / "r.jsonl").load()
    assert loaded == rows
    assert all(list(r) == list(ROW_FIELDS) for r in loaded)
    header = json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0])
    assert header["schema"] == "cutlass-wsp/results" and header["version"] == R.SCHEMA_VERSION == 1
    assert header["provenance"] == {"gpu": "GPU-A"}


def test_make_row_derives_iqr_gflops_and_pct_of_floor():
    r = ok_row(points()[0], ms=2.0)
    assert r["iqr_ms"] == pytest.approx(2.0 * 1.2 - 2.0 * 0.9)
    assert r["gflops"] == pytest.approx(2e9 / 2e-3 / 1e9)
    assert r["pct_of_floor"] == pytest.approx(50.0)
    assert r["key"] == points()[0].key and r["layers"] == list(points()[0].layers)


def test_rows_that_break_the_schema_are_refused(tmp_path):
    store = ResultStore(tmp_path / "r.jsonl")
    p = points()[0]
    with pytest.raises(ValueError, match="no field 'speed'"):
        make_row(p, "ok", speed=3)
    with pytest.raises(ValueError, match="status 'fine'"):
        store.append(make_row(p, "fine"))
    with pytest.raises(ValueError, match="must carry no time"):
        store.append(make_row(p, "wrong", median_ms=1.0))
    with pytest.raises(ValueError, match="positive median_ms"):
        store.append(make_row(p, "ok"))
    assert not (tmp_path / "r.jsonl").exists()


def test_non_finite_numbers_are_stored_as_null(tmp_path):
    store = ResultStore(tmp_path / "r.jsonl")
    store.append(make_row(points()[0], "wrong", rel_error=float("nan")))
    assert store.load()[0]["rel_error"] is None
    json.loads((tmp_path / "r.jsonl").read_text().splitlines()[1])   # strict JSON


def test_every_append_is_fsynced(tmp_path, monkeypatch):
    synced = []
    real = R.os.fsync
    monkeypatch.setattr(R.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    store = ResultStore(tmp_path / "r.jsonl")
    for p in points()[:3]:
        store.append(ok_row(p))
    assert len(synced) >= 3
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 4


def test_resume_after_a_crash_mid_line(tmp_path):
    path = tmp_path / "r.jsonl"
    pts = points()
    half = len(pts) // 2
    store = ResultStore(path)
    for p in pts[:half]:
        store.append(ok_row(p))
    # the sweep is killed while writing the next row
    line = json.dumps(ok_row(pts[half]))
    with open(path, "a") as f:
        f.write(line[: len(line) // 2])

    resumed = ResultStore(path)
    with pytest.warns(ResultsWarning, match="cut off") as seen:
        assert [r["key"] for r in resumed.load()] == [p.key for p in pts[:half]]
    assert str(seen[0].message).endswith("it is ignored")      # a reader promises nothing it does not do
    with pytest.warns(ResultsWarning):
        todo = resumed.pending(pts)
    assert [p.key for p in todo] == [p.key for p in pts[half:]]
    with pytest.warns(ResultsWarning, match="removed the cut-off last line"):
        resumed.append(ok_row(todo[0]))
    for p in todo[1:]:
        resumed.append(ok_row(p))

    with warnings.catch_warnings():
        warnings.simplefilter("error")            # the file is whole again: no warning
        rows = ResultStore(path).load(all_rows=True)
    assert [r["key"] for r in rows] == [p.key for p in pts]
    lines = path.read_text().splitlines()
    assert len(lines) == len(pts) + 1 and all(json.loads(x) for x in lines)
    assert ResultStore(path).pending(pts) == []


def test_complete_last_row_without_newline_is_kept(tmp_path):
    path = tmp_path / "r.jsonl"
    pts = points()
    store = ResultStore(path)
    store.append(ok_row(pts[0]))
    store.append(ok_row(pts[1]))
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(ResultStore(path).load()) == 2
    again = ResultStore(path)
    again.append(ok_row(pts[2]))
    assert [r["key"] for r in ResultStore(path).load()] == [p.key for p in pts[:3]]


def test_cut_off_header_gives_an_empty_file_that_appends_cleanly(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"schema": "cutlass-wsp/res')
    with pytest.warns(ResultsWarning):
        assert ResultStore(path).load() == []
    with pytest.warns(ResultsWarning, match="removed the cut-off last line"):
        ResultStore(path).append(ok_row(points()[0]))
    assert len(ResultStore(path).load()) == 1


def test_damaged_middle_line_is_an_error_not_a_silent_drop(tmp_path):
    path = tmp_path / "r.jsonl"
    store = ResultStore(path)
    for p in points()[:3]:
        store.append(ok_row(p))
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:20]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="line 3 is not a result row"):
        ResultStore(path).load()


def test_other_schema_version_is_refused(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"schema": "cutlass-wsp/results", "version": 2, "provenance": {}}) + "\n")
    with pytest.raises(InputError) as e:
        ResultStore(path).load()
    assert str(e.value) == (f"{path} is schema version 2; this cutlass-wsp reads version 1 "
                            "(read it with the cutlass-wsp that wrote it, or measure again with this one)")
    with pytest.raises(InputError, match=r"schema version 2.*\(give --out a new file\)"):
        ResultStore(path, out_option="--out").append(ok_row(points()[0]))
    assert len(path.read_text().splitlines()) == 1


def test_a_file_that_is_not_results_is_refused(tmp_path):
    path = tmp_path / "other.jsonl"
    path.write_text('{"hello": 1}\n')
    with pytest.raises(InputError, match="not a cutlass-wsp results file"):
        ResultStore(path).load()
    with pytest.raises(InputError, match="not found"):
        ResultStore(tmp_path / "missing.jsonl").load()
    assert ResultStore(tmp_path / "missing.jsonl").done_keys() == set()


@pytest.mark.parametrize("content", [b"garbage garbage", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe",
                                     b"\xff\xfe\x00\x01\x02 binary \xc3\x28", b'{"hello": 1'],
                         ids=["text", "png", "binary", "other-json"])
def test_a_garbage_file_is_not_a_results_file_not_a_cut_off_line(tmp_path, content):
    path = tmp_path / "r.jsonl"
    path.write_bytes(content)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                # no "the last line is cut off"
        with pytest.raises(InputError, match="is not a cutlass-wsp results file"):
            ResultStore(path).load()
        with pytest.raises(InputError, match="is not a cutlass-wsp results file"):
            ResultStore(path, out_option="--out").append(ok_row(points()[0]))
    assert path.read_bytes() == content               # never truncated or appended to


def test_a_binary_file_says_so(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"\xff\xfe\x00\x01\x02\x03")
    with pytest.raises(InputError, match="binary data, not JSON lines"):
        ResultStore(path).load()


def test_garbage_after_the_rows_is_damage_not_a_cut_off_line(tmp_path):
    path = tmp_path / "r.jsonl"
    store = ResultStore(path)
    for p in points()[:2]:
        store.append(ok_row(p))
    with open(path, "ab") as f:
        f.write(b"\x00\x00garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match="line 4 is not a result row"):
            ResultStore(path).load()


@pytest.mark.parametrize("cut", [5, 17, 40, 200, -3])
def test_a_row_cut_anywhere_is_recognised_as_cut_off(tmp_path, cut):
    path = tmp_path / "r.jsonl"
    pts = points()
    ResultStore(path).append(ok_row(pts[0]))
    line = R._row_line(ok_row(pts[1], reason="a \"quoted\" reason × →"))
    path.write_bytes(path.read_bytes() + line[:cut])
    with pytest.warns(ResultsWarning, match="cut off"):
        assert [r["key"] for r in ResultStore(path).load()] == [pts[0].key]


def test_fix_hints_fit_readers_and_writers(tmp_path):
    """plan/compare/plot have no --out: their hint must not send users to one; sweep and bench do."""
    path = tmp_path / "other.jsonl"
    path.write_text('{"hello": 1}\n{"key": "x"}\n')
    with pytest.raises(InputError) as read:
        ResultStore(path).load()
    with pytest.raises(InputError) as write:
        ResultStore(path, out_option="--out").load()
    assert "--out" not in str(read.value) and read.value.fix == "pass a .jsonl file written by cutlass-wsp sweep"
    assert write.value.fix == "give --out a new file, or one written by cutlass-wsp sweep"
    damaged = tmp_path / "damaged.jsonl"
    ResultStore(damaged).append(ok_row(points()[0]))
    damaged.write_text(damaged.read_text() + "oops\n")
    with pytest.raises(InputError) as read:
        ResultStore(damaged).load()
    assert "--out" not in str(read.value) and "line 3" in str(read.value)
    with pytest.raises(InputError, match="give --out a new file"):
        ResultStore(damaged, out_option="--out").load()


def test_retry_failed_reruns_only_error_and_oom(tmp_path):
    pts = points()[:6]
    store = ResultStore(tmp_path / "r.jsonl")
    statuses = ["ok", "wrong", "unsupported", "compile_error", "error", "oom"]
    for p, s in zip(pts, statuses):
        store.append(ok_row(p) if s == "ok" else make_row(p, s, reason="x"))
    assert store.pending(pts) == []
    assert [p.key for p in store.pending(pts, retry_failed=True)] == [pts[4].key, pts[5].key]
    store.append(ok_row(pts[4]))        # the retried point now works
    assert [p.key for p in store.pending(pts, retry_failed=True)] == [pts[5].key]
    latest = {r["key"]: r["status"] for r in store.load()}
    assert latest[pts[4].key] == "ok" and len(latest) == 6
    assert len(store.load(all_rows=True)) == 7


def test_row_provenance_maps_gpu_info_names():
    prov = {"gpu_name": "NVIDIA H100 80GB HBM3", "sm_count": 132, "sm_clock_mhz": 1980, "mem_clock_mhz": 2619,
            "driver_version": "580.65", "cuda_runtime_version": "13.0", "cupy": "14.2.0",
            "cutlass_version": "4.2.0", "nvcc_version": "13.0.48", "git_commit": "abc1234", "git_dirty": True,
            "timestamp_utc": "2026-11-21T10:00:00+00:00", "hostname": "box"}
    mapped = R.row_provenance(prov)
    assert list(mapped) == list(R.PROVENANCE_FIELDS)
    assert mapped["gpu"] == "NVIDIA H100 80GB HBM3" and mapped["driver"] == "580.65"
    assert mapped["git_commit"] == "abc1234-dirty" and mapped["timestamp"] == prov["timestamp_utc"]
    assert R.row_provenance(mapped) == mapped          # already mapped: unchanged
    make_row(points()[0], "ok", median_ms=1.0, **mapped)   # every mapped name is a row field


def test_to_csv_has_stable_columns(tmp_path):
    pts = points()
    rows = [ok_row(pts[0], kept_m=[1, 2]), make_row(pts[1], "oom", reason="out of memory")]
    out = R.to_csv(rows, tmp_path / "r.csv")
    with open(out, newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == list(ROW_FIELDS)
    first = dict(zip(table[0], table[1]))
    assert first["key"] == pts[0].key and float(first["median_ms"]) == 1.0
    assert first["kept_m"] == "[1,2]" and json.loads(first["layers"]) == list(pts[0].layers)
    second = dict(zip(table[0], table[2]))
    assert second["status"] == "oom" and second["median_ms"] == ""


def test_to_csv_replaces_the_file_atomically(tmp_path, monkeypatch):
    from cutlass_wsp import storage

    pts = points()
    path = R.to_csv([ok_row(pts[0])], tmp_path / "r.csv")
    before = path.read_bytes()

    def boom(a, b):
        raise OSError("disk full")

    monkeypatch.setattr(storage.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        R.to_csv([ok_row(p) for p in pts], path)
    assert path.read_bytes() == before                      # never half a CSV
    assert [p.name for p in tmp_path.iterdir()] == ["r.csv"]


def test_load_many_later_file_wins_per_gpu(tmp_path):
    pts = points()
    a, b = ResultStore(tmp_path / "a.jsonl"), ResultStore(tmp_path / "b.jsonl")
    a.append(ok_row(pts[0], ms=1.0))
    a.append(ok_row(pts[1], ms=1.0))
    b.append(ok_row(pts[0], ms=2.0))
    b.append(make_row(pts[1], "ok", median_ms=3.0, gpu="GPU-B"))
    rows = R.load_many([a.path, b.path])
    got = {(r["gpu"], r["key"]): r["median_ms"] for r in rows}
    assert got == {("GPU-A", pts[0].key): 2.0, ("GPU-A", pts[1].key): 1.0, ("GPU-B", pts[1].key): 3.0}


def test_fill_speedups_uses_fastest_ok_dense_of_the_same_batch():
    pts = points()
    dense = [p for p in pts if p.pattern == "dense" and p.impl != "fused" and (p.c, p.H) == (64, 56)]
    wsp = next(p for p in pts if p.pattern == "wsp-r" and (p.c, p.H) == (64, 56))
    other = next(p for p in pts if p.pattern == "wsp-r" and (p.c, p.H) == (512, 7))
    rows = [ok_row(dense[0], ms=2.0, floor_ms=1.0), ok_row(dense[1], ms=1.5, floor_ms=1.0),
            ok_row(wsp, ms=1.0, floor_ms=0.4), ok_row(other, ms=1.0, floor_ms=0.1)]
    out = R.fill_speedups(rows)
    assert out[2]["dense_ms"] == 1.5 and out[2]["speedup"] == pytest.approx(1.5)
    assert out[2]["floor_speedup"] == pytest.approx(2.5)
    assert out[3]["speedup"] is None          # no dense row of that shape
    assert rows[2]["speedup"] is None         # inputs are not modified


def _sample_generator():
    spec = importlib.util.spec_from_file_location("make_results_sample", DATA / "make_results_sample.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_sample_follows_the_schema_and_its_generator(tmp_path):
    rows = ResultStore(DATA / "results_sample.jsonl").load(all_rows=True)
    for r in rows:
        assert list(r) == list(ROW_FIELDS)
        R.check_row(r)
    assert {r["status"] for r in rows} >= {"ok", "wrong", "unsupported", "error", "oom"}
    gen = _sample_generator()
    assert gen.main([str(tmp_path / "again.jsonl")]) == 0
    again = ResultStore(tmp_path / "again.jsonl").load(all_rows=True)
    assert again == rows, "tests/data/results_sample.jsonl is stale: run python tests/data/make_results_sample.py"


# --- whole-layer fields ------------------------------------------------------------------------------

def test_layer_fields_follow_quality_and_derive_transform_pct():
    i = ROW_FIELDS.index
    assert i("layer_ms") == i("gflops") + 1 and ROW_FIELDS[i("layer_ms"):i("layout") + 1] == R.LAYER_FIELDS
    r = ok_row(points()[0], layer_ms=3.0, layer_q1_ms=2.9, layer_q3_ms=3.2, transform_ms=1.6,
               transform_floor_ms=0.4, layer_rel_error=1e-3, layout="nhwc")
    assert r["transform_pct_of_floor"] == pytest.approx(25.0)
    R.check_row(r)
    assert ok_row(points()[0])["transform_pct_of_floor"] is None     # not timed: nothing derived


def test_layer_fields_are_checked(tmp_path):
    store = ResultStore(tmp_path / "r.jsonl")
    p = points()[0]
    with pytest.raises(ValueError, match="layer_ms must be a positive number"):
        store.append(ok_row(p, layer_ms=-1.0))
    with pytest.raises(ValueError, match="layer quartiles without layer_ms"):
        store.append(ok_row(p, layer_q1_ms=1.0))
    with pytest.raises(ValueError, match="layout 'NHWC'"):
        store.append(ok_row(p, layer_ms=1.0, layout="NHWC"))
    with pytest.raises(ValueError, match="must carry no time, but layer_ms"):
        store.append(make_row(p, "wrong", layer_ms=1.0))
    # a layer that failed its check is wrong: it keeps its error, never a time
    store.append(make_row(p, "wrong", reason="layer rel_error 0.2", layer_rel_error=0.2, layout="nchw"))
    assert store.load()[0]["layer_rel_error"] == 0.2


def test_conv_rows_round_trip(tmp_path):
    conv = next(p for p in expand(SweepSpec(layers=("resnet18",), batches=(32,), tiles=(4,), dtypes=("fp16",),
                                            patterns=("conv",))))
    r = make_row(conv, "ok", median_ms=0.03, layer_ms=0.03, layout="nhwc", gpu="GPU-A")
    assert r["p"] is None and r["key"].split("/")[3] == "p-"
    store = ResultStore(tmp_path / "r.jsonl")
    store.append(r)
    assert ResultStore(store.path).load() == [r]


def test_sample_has_layer_fields_on_some_rows():
    rows = ResultStore(DATA / "results_sample.jsonl").load()
    timed = [r for r in rows if r["layer_ms"] is not None]
    assert 0 < len(timed) < len(rows)
    assert {r["pattern"] for r in timed} >= {"conv", "dense", "wsp-r"}
    assert {r["p"] for r in timed if r["pattern"] == "dense"} == {4, 6}
    assert any(r["status"] == "ok" and r["layer_ms"] is None and r["reason"] for r in rows)
    for r in timed:
        assert r["layer_q1_ms"] <= r["layer_ms"] <= r["layer_q3_ms"] and r["layout"] in R.LAYOUTS
        if r["pattern"] == "conv":
            assert r["layer_ms"] == r["median_ms"] and r["transform_ms"] is None
        else:
            # the whole layer holds the GEMM batch and the transforms
            assert r["layer_ms"] > r["median_ms"] and r["layer_ms"] > r["transform_ms"] > r["transform_floor_ms"]


# --- several GPU types in one file (a sweep over a Dask cluster) -------------------------------------

def test_rows_record_the_host_and_the_gpu_of_their_host():
    prov = {"gpu_name": "GPU-A", "gpu_pci_bus_id": "00000000:19:00.0", "hostname": "node7"}
    fields = R.row_provenance(prov)
    assert fields["host"] == "node7" and fields["gpu_bus_id"] == "00000000:19:00.0" and fields["gpu"] == "GPU-A"
    assert {"host", "gpu_bus_id"} <= set(R.PROVENANCE_FIELDS)


def test_one_file_keeps_one_row_per_gpu_and_key(tmp_path):
    p = points()[0]
    store = ResultStore(tmp_path / "r.jsonl")
    store.append(ok_row(p, gpu="GPU-A"))
    store.append(ok_row(p, gpu="GPU-B"))
    store.append(make_row(p, "error", reason="again", gpu="GPU-B"))
    rows = ResultStore(store.path).load()
    assert [(r["gpu"], r["status"]) for r in rows] == [("GPU-A", "ok"), ("GPU-B", "error")]


def test_pending_per_gpu_type(tmp_path):
    pts = points()[:3]
    store = ResultStore(tmp_path / "r.jsonl")
    store.append(ok_row(pts[0], gpu="GPU-A"))
    store.append(make_row(pts[1], "oom", reason="out of memory", gpu="GPU-B"))
    # any GPU (the single-GPU sweep's rule): a key measured anywhere is done
    assert store.pending(pts) == [pts[2]]
    # per GPU type (a sweep over a cluster): each type measures each point once
    assert store.pending(pts, gpu="GPU-A") == pts[1:]
    assert store.pending(pts, gpu="GPU-B") == [pts[0], pts[2]]
    assert store.pending(pts, retry_failed=True, gpu="GPU-B") == pts
    assert store.pending(pts, gpu="GPU-C") == pts
    # append_pending refuses a second row of the same (gpu, key) only when asked per GPU
    assert store.append_pending(ok_row(pts[0], gpu="GPU-B"), per_gpu=True)
    assert not store.append_pending(ok_row(pts[0], gpu="GPU-B"), per_gpu=True)
    assert not store.append_pending(ok_row(pts[0], gpu="GPU-C"))      # any GPU: pts[0] is done
    assert store.pending(pts, gpu="GPU-B") == [pts[2]]


def test_the_sweep_command_writes_the_csv_the_readme_promises(tmp_path, monkeypatch, capsys):
    """`cutlass-wsp sweep --out X.jsonl` leaves X.csv beside it with every row (README: "What you get");
    the measuring itself is faked (no GPU here)."""
    from cutlass_wsp import cli
    from cutlass_wsp.sweep import session

    out = tmp_path / "sweep.jsonl"

    def fake_run_sweep(pts, store, **kw):
        for pt in pts:
            store.append(ok_row(pt))
        return type("Outcome", (), {"summary": f"{len(pts)} points measured"})()

    monkeypatch.setattr(session, "run_sweep", fake_run_sweep)
    rc = cli.main(["sweep", "--net", "resnet18:layer4.0.conv2", "--pattern", "dense", "--impl", "dense=cublas",
                   "--out", str(out), "--no-plots", "--no-tune"])
    assert rc == 0
    with open(tmp_path / "sweep.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["key"] for r in table] == [r["key"] for r in ResultStore(out).load()] and len(table) == 1
    assert "rows also in" in capsys.readouterr().err
