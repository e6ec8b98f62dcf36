"""Network time per method (network_time.py), its figure (network_plot.py) and `cutlass-wsp network`."""

from __future__ import annotations

import argparse
import csv
import io
import json
import shlex
from pathlib import Path

import pytest
from abwsp_rows import BASE_TIMES, points, row, rows_for, write

from cutlass_wsp.cli import main
from cutlass_wsp.layers import resolve_layers
from cutlass_wsp.network_time import BY_NAME, INCOMPLETE, NOT_MEASURED, OK, network_times
from cutlass_wsp.sweep.measured import Measured
from cutlass_wsp.sweep.results import ResultStore, latest_by_key

RESULTS = Path(__file__).resolve().parents[1] / "results"
H100_B1, H100_B32 = RESULTS / "sweep-h100-b1.jsonl", RESULTS / "sweep-h100-b32.jsonl"
CONV5 = "vgg16:conv5_1,conv5_2,conv5_3"


def _times(rows, spec, **kw):
    kw = {"batches": [32], "p": 4, "dtype": "fp16", "ratio": 0.7, **kw}
    return {t.method.name: t for t in network_times(Measured(rows), resolve_layers(spec), **kw)[32]}


def test_a_shape_shared_by_three_layers_counts_three_times():
    pts = points((CONV5,))
    assert {tuple(p.layers) for p in pts} == {("vgg16.conv5_1", "vgg16.conv5_2", "vgg16.conv5_3")}
    t = _times(rows_for(pts, BASE_TIMES), CONV5)
    assert t["cudnn"].total_ms == pytest.approx(3 * 0.050) and t["cudnn"].state == OK
    assert t["dense"].total_ms == pytest.approx(3 * 0.100)
    assert t["bwsp-r"].total_ms == pytest.approx(3 * 0.070)
    assert t["wsp-r"].total_ms == pytest.approx(3 * 0.080)             # fastest unbalanced implementation
    assert t["wsp-c"].total_ms == pytest.approx(3 * 0.088)             # wsp-c-fused's in-transform gather
    assert t["wwp"].total_ms == pytest.approx(3 * 0.480)
    assert t["bwsp-r"].vs_cudnn == pytest.approx(0.050 / 0.070)
    assert len(t["dense"].layers) == 3


def test_resnet34_reads_resnet18_rows_by_shape():
    rows = rows_for(points(("resnet18",)), {k: (lambda v: lambda p: (v[0] * p.c / 64, v[1] * p.c / 64))(v)
                                            for k, v in BASE_TIMES.items()})
    t = _times(rows, "resnet34")
    counts = {64: 6, 128: 7, 256: 11, 512: 5}                            # 3×3 stride-1 convs per width
    assert sum(counts.values()) == len(resolve_layers("resnet34"))
    assert t["cudnn"].total_ms == pytest.approx(sum(n * 0.050 * c / 64 for c, n in counts.items()))
    assert t["bwsp-r"].total_ms == pytest.approx(sum(n * 0.070 * c / 64 for c, n in counts.items()))


def test_the_unprunable_first_layer_runs_each_methods_unpruned_form():
    table = "vgg16:conv1_1,conv1_2"
    pts = points((table,))
    rows = rows_for(pts, BASE_TIMES)
    t = _times(rows, table)
    assert [lt.layer.name for lt in t["bwsp-r"].layers] == ["vgg16.conv1_1", "vgg16.conv1_2"]
    first = t["bwsp-r"].layers[0]
    assert first.timed.pattern == "dense" and first.note is None         # the Winograd dense layer
    assert t["bwsp-r"].total_ms == pytest.approx(0.100 + 0.070)
    assert t["cudnn"].layers[0].timed.pattern == "conv"
    # a fused method whose fused dense layer 1 was not measured stands in the Winograd dense layer, and says so
    c12 = next(p for p in pts if p.layers == ("vgg16.conv1_2",) and p.pattern == "wsp-r" and p.impl == "cutlass")
    rows.append(row(c12, 0.030, 0.030, impl="fused", key=c12.key.replace("/cutlass/", "/fused/")))
    t = _times(rows, table)
    fb = t["fused-bwsp-r"]
    assert fb.state == OK and fb.total_ms == pytest.approx(0.100 + 0.030)
    assert fb.fallbacks[0].note == "never pruned; no fused dense time (not measured), counted at Winograd dense"
    # measured but unsupported (the fused kernel needs c % 8 == 0): the note says so
    c11 = next(p for p in pts if p.layers == ("vgg16.conv1_1",) and p.pattern == "dense" and p.impl == "cutlass")
    rows.append(row(c11, 0, None, status="unsupported", impl="fused", key=c11.key.replace("/cutlass", "/fused")))
    fb = _times(rows, table)["fused-bwsp-r"]
    assert fb.fallbacks[0].note == "never pruned; no fused dense time (1 unsupported), counted at Winograd dense"


def test_methods_not_measured_or_incomplete_have_no_total():
    times = dict(BASE_TIMES)
    pts = points((CONV5,))
    rows = rows_for(pts, times)
    bad = next(r for r in rows if r["pattern"] == "fp")
    rows.append({**bad, "status": "wrong", "median_ms": None, "layer_ms": None, "layer_q1_ms": None,
                 "layer_q3_ms": None, "q1_ms": None, "q3_ms": None, "iqr_ms": None, "min_ms": None, "gflops": None,
                 "pct_of_floor": None, "reason": "synthetic"})
    t = _times(rows, CONV5)
    assert t["fused-wsp-rb"].state == NOT_MEASURED and t["fused-wsp-rb"].total_ms is None
    assert t["bcbp"].state == NOT_MEASURED
    assert t["fp"].state == OK                      # an ok row of the key is still there
    # the fp row of the shape replaced by a wrong one (the last row of a key wins in a results file)
    t = _times(latest_by_key(rows), CONV5)
    assert t["fp"].state == INCOMPLETE and "3 of 3 layers have no time" in t["fp"].note and "1 wrong" in t["fp"].note


def test_abwsp_follows_the_plans_choice_per_layer():
    rows = rows_for(points((CONV5,)), BASE_TIMES)
    choices = {("abwsp", 32): {"vgg16.conv5_1": ("R", "balanced"), "vgg16.conv5_2": ("C", "unbalanced"),
                               "vgg16.conv5_3": ("R", "unbalanced")}}
    t = _times(rows, CONV5, choices=choices)
    assert t["abwsp"].total_ms == pytest.approx(0.070 + 0.088 + 0.080)
    t = _times(rows, CONV5, choices={("abwsp", 32): {"vgg16.conv5_1": ("R", "balanced")}})
    assert t["abwsp"].state == INCOMPLETE and "no ABWSP choice" in t["abwsp"].note
    t = _times(rows, CONV5, plan_errors={("abwsp", 32): "no plan"})
    assert t["abwsp"].state == NOT_MEASURED and t["abwsp"].note == "no plan"


def test_the_figure_is_drawn(tmp_path):
    from cutlass_wsp.network_plot import plot_network

    rows = rows_for(points((CONV5,)), BASE_TIMES)
    times = network_times(Measured(rows), resolve_layers(CONV5), batches=[32], p=4, dtype="fp16", ratio=0.7)
    paths = plot_network(times, tmp_path, net="vgg16", ratio=0.7, gpu="g", dtype="fp16", p=4)
    assert [p.name for p in paths] == ["network_vgg16_r0.7.png", "network_vgg16_r0.7.svg"]
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and "not measured" in paths[1].read_text()


# ------------------------------------------------------------------------------------------ the command
def _grid(out: str) -> dict[str, list[str]]:
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("method"))
    rows = {}
    for ln in lines[start + 2:]:
        if not ln.strip():
            break
        label = ln[:16].strip()
        rows[label] = ln[16:].split()
    return rows


def test_network_on_the_committed_h100_results_at_batch_1_and_32(tmp_path, capsys):
    plots = tmp_path / "plots"
    assert main(["network", str(H100_B1), str(H100_B32), "--net", "resnet18", "--plot-dir", str(plots)]) == 0
    out, err = capsys.readouterr()
    grid = _grid(out)
    assert grid["cuDNN dense"] == ["0.1380", "1.00×", "0.2919", "1.00×"]
    assert grid["fused WSP-RB"] == ["not", "measured", "-", "not", "measured", "-"]
    for label in ("Winograd dense", "FP", "WSP-R", "WSP-C", "BWSP-R", "BWSP-C", "ABWSP", "WWP (CSR)"):
        assert float(grid[label][0]) > 0 and grid[label][1].endswith("×"), label
    # the batch-32 total is the sum over the 13 layers of the file's rows, each shape times its layer count
    rows = ResultStore(H100_B32).load()
    want = sum(len(r["layers"]) * r["layer_ms"] for r in rows if r["pattern"] == "conv" and r["net"] == "resnet18")
    assert float(grid["cuDNN dense"][2]) == pytest.approx(want, abs=1e-4)
    hints = [ln.removeprefix("to measure: ") for ln in out.splitlines() if ln.startswith("to measure: ")]
    assert len(hints) == 2
    for b, hint, path in ((1, hints[0], H100_B1), (32, hints[1], H100_B32)):
        argv = shlex.split(hint)
        assert argv[argv.index("--batch") + 1] == str(b) and argv[argv.index("--out") + 1] == str(path)
        assert "wsp-r=fused" in argv and "wsp-rb=fused" in argv
    assert sorted(p.name for p in plots.iterdir()) == ["network_resnet18_r0.7.png", "network_resnet18_r0.7.svg"]
    assert err.count("cutlass-wsp network: figure ") == 2


def test_network_formats_and_a_plan_file(tmp_path, capsys):
    plan = tmp_path / "plan.json"
    assert main(["abwsp", str(H100_B32), "--net", "vgg16", "--json", str(plan), "--impl", "unfused",
                 "--accuracy-weight", "0"]) == 0
    capsys.readouterr()
    assert main(["network", str(H100_B32), "--net", "vgg16", "--plan", str(plan), "--format", "json",
                 "--no-plot", "--methods", "abwsp,bwsp-r"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert main(["network", str(H100_B32), "--net", "vgg16", "--plan", str(plan), "--ratio", "0.5", "--no-plot"]) == 2
    assert "was made at ratio 0.7, not at --ratio 0.5" in capsys.readouterr().err
    ms = {m["method"]: m for m in doc["batches"]["32"]}
    assert list(ms) == ["cudnn", "abwsp", "bwsp-r"]                        # cuDNN is always there: the ratio needs it
    plan_doc = json.loads(plan.read_text())
    want = sum(e["candidates"][[c["label"] for c in e["candidates"]].index(e["choice"]["label"])]["time"]["ms"]
               for e in plan_doc["layers"])
    dense_first = next(x["ms"] for x in ms["abwsp"]["layers"] if x["layer"] == "vgg16.conv1_1")
    assert ms["abwsp"]["total_ms"] == pytest.approx(want + dense_first)
    assert ms["abwsp"]["vs_cudnn"] == pytest.approx(ms["cudnn"]["total_ms"] / ms["abwsp"]["total_ms"])
    assert main(["network", str(H100_B32), "--net", "vgg16", "--format", "csv", "--no-plot"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["method"] for r in table} == set(BY_NAME) and {r["batch"] for r in table} == {"32"}
    assert main(["network", str(H100_B32), "--net", "vgg16", "--format", "markdown", "--no-plot", "--methods", "dense"]) == 0
    md = capsys.readouterr().out
    assert "| method | batch 32 ms | vs cuDNN |" in md and "| cuDNN dense | 1.7052 | 1.00× |" in md


def test_network_resnet34_from_the_resnet18_sweep(capsys):
    assert main(["network", str(H100_B32), "--net", "resnet34", "--no-plot", "--methods", "cudnn"]) == 0
    rows = [r for r in ResultStore(H100_B32).load() if r["pattern"] == "conv" and r["net"] == "resnet18"]
    per_width = {r["c"]: r["layer_ms"] for r in rows}
    want = sum(per_width[x.c] for x in resolve_layers("resnet34"))
    assert float(_grid(capsys.readouterr().out)["cuDNN dense"][0]) == pytest.approx(want, abs=1e-4)


def test_missing_cudnn_is_one_line_with_the_sweep(tmp_path, capsys):
    rows = rows_for(points((CONV5,)), {k: v for k, v in BASE_TIMES.items() if k[0] != "conv"})
    results = write(tmp_path / "r.jsonl", rows)
    assert main(["network", results, "--net", CONV5, "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "lacks what the network's cuDNN reference needs (batch 32, fp16): conv for 1 layer shape" in err
    assert f"cutlass-wsp sweep --net {CONV5} --batch 32 --dtype fp16 --pattern conv --out {results}" in err


def test_a_ratio_nothing_was_pruned_to_is_one_line(tmp_path, capsys):
    results = write(tmp_path / "r.jsonl", rows_for(points((CONV5,)), BASE_TIMES))
    assert main(["network", results, "--net", CONV5, "--ratio", "0.6", "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "has no pruned rows at ratio 0.6, batch 32 (measured ratios: 0.7)" in err and "--ratio 0.6" in err


@pytest.mark.parametrize("argv, message", [
    (["--methods", "fastest"], "--methods: unknown method 'fastest'"),
    (["--batch", "8"], "has no verified rows at --batch 8"),
    (["--format", "html"], "--format 'html'"),
    (["--plan", "none.json"], "plan file 'none.json' not found"),
])
def test_network_bad_input_is_one_line(tmp_path, capsys, argv, message):
    results = write(tmp_path / "r.jsonl", rows_for(points((CONV5,)), BASE_TIMES))
    assert main(["network", results, "--net", CONV5, "--no-plot", *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and message in err


def test_every_option_of_network_has_help():
    from cutlass_wsp.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    bare = [a.option_strings or a.dest for a in sub.choices["network"]._actions if not (a.help or "").strip()]
    assert bare == []


def test_a_cut_off_file_that_lacks_a_layer_warns_once_and_gives_the_sweep_of_that_layer(tmp_path, capsys):
    """Bad input: a sweep killed before its last layer. The cut-off line is reported once; the methods that
    lack the layer are incomplete (exit 1), and a 'to measure' line sweeps that layer alone onto the file."""
    from cutlass_wsp.sweep.plan import expand
    from cutlass_wsp.commands.sweep_options import from_args

    spec = "vgg16:conv4_2,conv5_1"
    rows = [r for r in rows_for(points((spec,)), BASE_TIMES) if r["pattern"] == "conv" or r["H"] != 14]
    results = write(tmp_path / "r.jsonl", rows)
    with open(results, "a") as f:
        f.write('{"key": "vgg16/c512n512@14x14/b32/p4/fp16/dense/cutlass", "status": "o')
    assert main(["network", results, "--net", spec, "--no-plot"]) == 1
    out, err = capsys.readouterr()
    assert err.count("the last line is cut off") == 1 and len(err.splitlines()) == 1
    grid = _grid(out)
    assert grid["cuDNN dense"][0] != "incomplete" and grid["BWSP-R"][0] == "incomplete"
    assert "BWSP-R: incomplete: 1 of 2 layers have no time: vgg16.conv5_1 (not measured)" in out
    hints = [shlex.split(ln.removeprefix("to measure: ")) for ln in out.splitlines() if ln.startswith("to measure: ")]
    lone = [h for h in hints if h[h.index("--net") + 1] == "vgg16:conv5_1"]
    assert len(lone) == 1 and lone[0][lone[0].index("--out") + 1] == results
    keys = {(p.layers[0], p.pattern) for p in expand(from_args(lone[0][2:lone[0].index("--out")]))}
    assert {k[0] for k in keys} == {"vgg16.conv5_1"}
    assert {"dense", "fp", "wsp-r", "wsp-c", "wwp"} <= {k[1] for k in keys}
    assert main(["abwsp", results, "--net", spec, "--json", str(tmp_path / "plan.json")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "the last line is cut off" in err[0]
    assert "lacks what an ABWSP plan at ratio 0.7 needs" in err[1] and "(vgg16.conv5_1 512→512@14)" in err[1]
    assert "cutlass-wsp sweep --net vgg16:conv5_1 --batch 32 --tile 4 --dtype fp16" in err[1]


def test_a_user_layer_table_is_timed_from_rows_of_its_shapes(tmp_path, capsys):
    """--net takes a layer file: its layers are found by shape among the rows of any network."""
    results = write(tmp_path / "r.jsonl", rows_for(points((CONV5,)), BASE_TIMES))
    table = tmp_path / "mine.csv"
    table.write_text("name,c,n,H,W,prunable\nmine.a,512,512,14,14,\nmine.b,512,512,14,14,\nmine.c,512,512,14,14,\n")
    assert main(["network", results, "--net", str(table), "--no-plot", "--methods", "bwsp-r", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    ms = {m["method"]: m for m in doc["batches"]["32"]}
    assert doc["n_layers"] == 3 and [x["layer"] for x in ms["bwsp-r"]["layers"]] == ["mine.a", "mine.b", "mine.c"]
    assert ms["cudnn"]["total_ms"] == pytest.approx(3 * 0.050) and ms["bwsp-r"]["total_ms"] == pytest.approx(3 * 0.070)
