"""The per-layer plan: which verified option runs the whole layer fastest, per ratio; the plan command."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from cutlass_wsp.cli import main
from cutlass_wsp.sweep.plan import SweepSpec, expand
from cutlass_wsp.sweep.planner import CUDNN, DENSE, NO_LAYER_TIME, PRUNED, plan_layers, plan_ratios
from cutlass_wsp.sweep.results import ResultStore, make_row

SAMPLE = Path(__file__).parent / "data" / "results_sample.jsonl"


def _points():
    """Points of one ResNet-18 shape (512→512@7), p = 4 and 6, cuDNN conv, dense and pruned."""
    spec = SweepSpec(layers=("resnet18:layer4.0.conv2",), batches=(32,), tiles=(4, 6), dtypes=("fp16",),
                     patterns=("conv", "dense", "fp", "wsp-r", "wwp"), ratios=(0.5, 0.7),
                     balances=("balanced", "unbalanced"))
    return {p.key: p for p in expand(spec)}


POINTS = _points()


def pt(pattern, impl, p=4, ratio=None, balance=None):
    key = "/".join(["resnet18", "c512n512@7x7", "b32", "p-" if pattern == "conv" else f"p{p}", "fp16", pattern, impl]
                   + ([f"r{ratio:g}"] if ratio is not None else []) + ([balance] if balance else []))
    return POINTS[key]


def row(point, layer_ms=None, status="ok", gpu="GPU-A", **kw):
    if status != "ok":
        return make_row(point, status, reason="x", gpu=gpu, **kw)
    fields = dict(median_ms=0.01, gpu=gpu)
    if layer_ms is not None:
        fields.update(layer_ms=layer_ms, layer_q1_ms=layer_ms * 0.98, layer_q3_ms=layer_ms * 1.03)
    return make_row(point, "ok", **{**fields, **kw})


def only(entries):
    assert len(entries) == 1
    return entries[0]


CUDNN_PT = pt("conv", "cudnn")
DENSE4, DENSE6 = pt("dense", "cutlass", 4), pt("dense", "cutlass", 6)
WSPR_07 = pt("wsp-r", "cutlass", 4, 0.7, "balanced")
WSPR_07_P6 = pt("wsp-r", "cutlass-grouped", 6, 0.7, "unbalanced")
FP_07 = pt("fp", "cutlass", 4, 0.7)
FP_05 = pt("fp", "cutlass", 4, 0.5)
WWP_07 = pt("wwp", "cusparse-block-diag", 4, 0.7)


def test_fastest_verified_option_wins_and_speedups_are_over_the_baselines():
    rows = [row(CUDNN_PT, 0.040), row(DENSE4, 0.050), row(DENSE6, 0.036), row(WSPR_07, 0.030), row(FP_07, 0.032),
            row(WWP_07, 0.100), row(FP_05, 0.045)]
    e = only(plan_layers(rows))
    assert (e.c, e.n, e.H, e.W, e.batch, e.dtype, e.gpu) == (512, 512, 7, 7, 32, "fp16", "GPU-A")
    assert e.layers == ("resnet18.layer4.0.conv2",)
    assert e.cudnn.kind == CUDNN and e.cudnn.layer_ms == 0.040
    # each p is a candidate; the best Winograd dense is p = 6 here
    assert {p: o.layer_ms for p, o in e.dense_by_p.items()} == {4: 0.050, 6: 0.036}
    assert e.winograd_dense.p == 6 and e.winograd_dense.kind == DENSE
    assert e.baseline.key == DENSE6.key
    r07 = e.at(0.7)
    assert r07.best_pruned.key == WSPR_07.key and r07.best_pruned.kind == PRUNED
    assert {k: v.key for k, v in r07.best_per_pattern.items()} == {"wsp-r": WSPR_07.key, "fp": FP_07.key,
                                                                   "wwp": WWP_07.key}
    assert r07.chosen.key == WSPR_07.key
    assert r07.chosen.speedup_vs_cudnn == pytest.approx(0.040 / 0.030)
    assert r07.chosen.speedup_vs_dense == pytest.approx(0.036 / 0.030)
    # at 0.5 the only pruned option is slower than dense p6: the baseline stays the choice
    r05 = e.at(0.5)
    assert r05.best_pruned.key == FP_05.key and r05.chosen.key == DENSE6.key
    assert e.chosen(0.5).speedup_vs_cudnn == pytest.approx(0.040 / 0.036)
    assert e.note is None


def test_a_wrong_or_unsupported_row_never_wins_even_when_faster():
    rows = [row(CUDNN_PT, 0.040), row(DENSE4, 0.050), row(WSPR_07, 0.030),
            row(FP_07, status="wrong", rel_error=0.4),     # carries no time at all
            row(WSPR_07_P6, status="unsupported")]
    fast_but_wrong = dict(row(WWP_07, 0.001))
    fast_but_wrong["status"] = "wrong"                    # a row marked wrong though it kept a time
    e = only(plan_layers(rows + [fast_but_wrong]))
    assert e.at(0.7).best_pruned.key == WSPR_07.key
    assert e.chosen(0.7).key == WSPR_07.key
    assert e.ignored == {"wrong": 2, "unsupported": 1}


def test_rows_without_a_layer_time_are_counted_not_used():
    rows = [row(CUDNN_PT, 0.040), row(DENSE4, 0.050), row(WSPR_07)]   # WSP-R timed as a GEMM only
    e = only(plan_layers(rows))
    assert e.at(0.7) is None and plan_ratios(rows) == []
    assert e.ignored == {NO_LAYER_TIME: 1}
    assert e.chosen(0.7).key == CUDNN_PT.key


def test_ties_go_to_the_simpler_option():
    rows = [row(CUDNN_PT, 0.040), row(DENSE6, 0.040), row(DENSE4, 0.040), row(WSPR_07, 0.040)]
    e = only(plan_layers(rows))
    assert e.chosen(0.7).key == CUDNN_PT.key               # cuDNN over Winograd over pruned
    assert e.winograd_dense.p == 4                         # the smaller p on a tie
    e2 = only(plan_layers([row(DENSE6, 0.040), row(DENSE4, 0.040), row(WSPR_07, 0.040)]))
    assert e2.chosen(0.7).key == DENSE4.key
    # Winograd dense at p = 6 still beats a pruned p = 4 option of equal time (kind before p)
    e4 = only(plan_layers([row(WSPR_07, 0.040), row(DENSE6, 0.040)]))
    assert e4.chosen(0.7).key == DENSE6.key and e4.at(0.7).best_pruned.key == WSPR_07.key
    # order of the rows does not matter
    e3 = only(plan_layers(list(reversed(rows))))
    assert e3.chosen(0.7).key == CUDNN_PT.key and e3.winograd_dense.p == 4


def test_missing_cudnn_keeps_the_plan_and_says_so():
    e = only(plan_layers([row(DENSE4, 0.050), row(WSPR_07, 0.030)]))
    assert e.cudnn is None and e.chosen(0.7).key == WSPR_07.key
    assert e.chosen(0.7).speedup_vs_cudnn is None
    assert e.chosen(0.7).speedup_vs_dense == pytest.approx(0.050 / 0.030)
    assert "no cuDNN layer time" in e.note


def test_a_layer_without_candidates_gets_an_entry_saying_why():
    e = only(plan_layers([row(CUDNN_PT, status="error"), row(DENSE4), row(WSPR_07, status="wrong")]))
    assert not e.has_candidates and e.chosen(0.7) is None and e.baseline is None
    assert e.note.startswith("no candidate:")
    assert "1 ok rows without a layer time" in e.note and "1 error" in e.note and "1 wrong" in e.note


def test_pruned_options_compete_only_at_their_ratio():
    rows = [row(CUDNN_PT, 0.040), row(DENSE4, 0.050), row(FP_05, 0.038), row(FP_07, 0.039),
            row(pt("wsp-r", "cutlass", 4, 0.5, "balanced"), 0.020)]   # a fast option at 0.5 only
    e = only(plan_layers(rows))
    assert plan_ratios(rows) == [0.5, 0.7]
    assert e.at(0.5).chosen.pattern == "wsp-r" and e.at(0.5).chosen.ratio == 0.5
    # the faster 0.5 option does not leak into 0.7
    assert e.at(0.7).best_pruned.key == FP_07.key and e.at(0.7).chosen.key == FP_07.key
    assert e.at(0.9) is None and e.chosen(0.9).key == CUDNN_PT.key


def test_groups_by_gpu_and_last_row_of_a_key_wins():
    rows = [row(CUDNN_PT, 0.040), row(DENSE4, 0.030), row(CUDNN_PT, 0.020, gpu="GPU-B"),
            row(DENSE4, 0.060)]          # DENSE4 re-measured on GPU-A: the later row replaces it
    entries = {e.gpu: e for e in plan_layers(rows)}
    assert set(entries) == {"GPU-A", "GPU-B"}
    assert entries["GPU-A"].chosen(None).key == CUDNN_PT.key
    assert entries["GPU-A"].winograd_dense.layer_ms == 0.060
    assert entries["GPU-B"].winograd_dense is None


def test_sample_plan_matches_its_rows():
    rows = ResultStore(SAMPLE).load()
    entries = plan_layers(rows)
    assert {(e.net, e.c, e.n, e.H) for e in entries} == {(r["net"], r["c"], r["n"], r["H"]) for r in rows}
    for e in entries:
        mine = [r for r in rows if (r["net"], r["c"], r["n"], r["H"]) == (e.net, e.c, e.n, e.H)]
        timed = [r for r in mine if r["status"] == "ok" and r["layer_ms"] is not None]
        fastest = min(r["layer_ms"] for r in timed if r["ratio"] is None or r["ratio"] == 0.7)
        assert e.chosen(0.7).layer_ms == fastest
        conv = [r for r in timed if r["pattern"] == "conv"]
        assert e.cudnn.layer_ms == conv[0]["layer_ms"]


# --- the plan command ------------------------------------------------------------------------------

def _write(tmp_path, rows, name="r.jsonl"):
    store = ResultStore(tmp_path / name)
    for r in rows:
        store.append(r)
    return str(store.path)


def test_plan_cli_table(capsys):
    assert main(["plan", str(SAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "synthetic-H100, fp16, batch 32" in out
    assert "best pruned r0.5" in out and "best pruned r0.9" in out and "chosen @0.7" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith(("vgg16.", "resnet18."))}
    assert set(lines) == {"vgg16.conv1_1", "vgg16.conv1_2", "vgg16.conv4_2", "resnet18.layer4.0.conv2"}
    assert "512→512@28" in lines["vgg16.conv4_2"] and "+1" in lines["vgg16.conv4_2"]
    # unprunable conv1_1: no pruned option at any ratio
    assert lines["vgg16.conv1_1"].count(" - ") >= 3


def test_plan_cli_csv_and_json_agree_with_the_planner(capsys):
    entries = plan_layers(ResultStore(SAMPLE).load())
    assert main(["plan", str(SAMPLE), "--format", "csv", "--ratio", "90%"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(table) == len(entries)
    for t, e in zip(table, entries):
        c = e.chosen(0.9)
        assert float(t["chosen_ms"]) == c.layer_ms and t["chosen_key"] == c.key and t["chosen_at_ratio"] == "0.9"
        assert float(t["cudnn_ms"]) == e.cudnn.layer_ms and int(t["dense_p"]) == e.winograd_dense.p
    assert main(["plan", str(SAMPLE), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ratio"] == 0.7 and doc["ratios"] == [0.5, 0.7, 0.9]
    assert [d["chosen"]["key"] for d in doc["entries"]] == [e.chosen(0.7).key for e in entries]


def test_plan_cli_exit_codes(tmp_path, capsys):
    # a layer without candidates: plan printed, exit 1
    other = pt("dense", "cublas", 4)
    two_layers = [row(CUDNN_PT, 0.04), row(DENSE4, 0.05)]
    vgg = next(p for p in expand(SweepSpec(layers=("vgg16:conv5_1",), batches=(32,), tiles=(4,), dtypes=("fp16",),
                                           patterns=("dense",))))
    path = _write(tmp_path, two_layers + [row(vgg, status="oom"), row(other)])
    assert main(["plan", path]) == 1
    out = capsys.readouterr().out
    assert "vgg16.conv5_1" in out and "no candidate: 1 oom" in out
    # nothing to plan at all: exit 2, one line on stderr
    path = _write(tmp_path, [row(DENSE4), row(WSPR_07)], "none.jsonl")
    assert main(["plan", path]) == 2
    err = capsys.readouterr().err
    assert "nothing to plan" in err and "--layer-time" in err
    # bad input
    assert main(["plan", str(SAMPLE), "--ratio", "0.6"]) == 2
    assert "pick one of the measured ratios: 0.5, 0.7, 0.9" in capsys.readouterr().err
    assert main(["plan", str(SAMPLE), "--ratio", "lots"]) == 2
    assert main(["plan", str(SAMPLE), "--format", "xml"]) == 2
    assert main(["plan", str(tmp_path / "missing.jsonl")]) == 2


def test_plan_cli_without_pruned_rows_chooses_among_baselines(tmp_path, capsys):
    path = _write(tmp_path, [row(CUDNN_PT, 0.04), row(DENSE6, 0.03)])
    assert main(["plan", path]) == 0
    out = capsys.readouterr().out
    assert "nothing pruned" in out and "dense cutlass p6" in out and "1.33x" in out
    assert main(["plan", path, "--ratio", "0.7"]) == 2
