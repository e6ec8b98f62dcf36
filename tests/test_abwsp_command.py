"""ABWSP plans from result rows (abwsp_plan.py) and `cutlass-wsp abwsp`: the choice per layer from speed and
proxy, the missing-data line, the JSON plan, end to end on the committed H100 results."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
from abwsp_rows import BASE_TIMES, points, rows_for, write

from cutlass_wsp.abwsp_plan import ProxySource, Settings, build_plan, read_choices
from cutlass_wsp.cli import main
from cutlass_wsp.commands.values import parse_fraction
from cutlass_wsp.errors import InputError
from cutlass_wsp.layer_inputs import WeightFile
from cutlass_wsp.layers import resolve_layers
from cutlass_wsp.sweep.measured import GEMM, LAYER, Measured
from cutlass_wsp.sweep.missing import MissingResults

RESULTS = Path(__file__).resolve().parents[1] / "results"
H100_B32 = RESULTS / "sweep-h100-b32.jsonl"


@pytest.fixture
def net(tmp_path) -> str:
    """A small network: an unprunable first layer and two prunable layers of one shape."""
    path = tmp_path / "toy.csv"
    path.write_text("name,c,n,H,W,prunable\nconv1,3,32,8,8,false\nconv2,32,32,8,8,\nconv3,32,32,8,8,\n")
    return str(path)


@pytest.fixture
def hot_weights(tmp_path) -> str:
    """conv2: Winograd position 5 holds most of the energy; conv3: plain random."""
    rng = np.random.default_rng(3)
    hot = rng.standard_normal((16, 32, 32)).astype(np.float32)
    hot[5] *= 10
    path = tmp_path / "w.npz"
    np.savez(path, conv2=hot, conv3=rng.standard_normal((16, 32, 32)).astype(np.float32))
    return str(path)


def _plan(net, rows, weight=0.5, weights=None, **kw):
    table = resolve_layers(net)
    s = Settings(ratio=0.7, accuracy_weight=weight, **kw)
    proxies = ProxySource(4, weights=WeightFile(weights) if weights else None)
    return build_plan(Measured(rows), table, s, proxies, net_spec=net, source="r.jsonl", out="r.jsonl")


def _by_name(plan):
    return {lp.layer.name.split(".")[-1]: lp for lp in plan.layers}


# ------------------------------------------------------------------------------------------ the plan
def test_accuracy_weight_sends_a_layer_whose_bwsp_mask_destroys_a_hot_position_to_wsp(net, hot_weights):
    rows = rows_for(points((net,)), BASE_TIMES)           # BWSP-R is the fastest candidate everywhere
    accurate = _by_name(_plan(net, rows, weight=0.9, weights=hot_weights))
    lp = accurate["conv2"]
    bwsp, wsp = (next(c for c in lp.candidates if c.label == lab) for lab in ("BWSP-R", "WSP-R"))
    assert bwsp.speedup > wsp.speedup and wsp.output_error < bwsp.output_error - 0.2
    assert lp.chosen.balance == "unbalanced" and "accuracy wins" in lp.why
    fastest = _by_name(_plan(net, rows, weight=0.0, weights=hot_weights))
    assert fastest["conv2"].chosen.label == "BWSP-R"
    assert all(lp.chosen.speedup == max(c.speedup for c in lp.candidates) for lp in fastest.values())


def test_every_prunable_layer_is_planned_the_first_is_not(net):
    plan = _plan(net, rows_for(points((net,)), BASE_TIMES))
    assert [lp.layer.name for lp in plan.layers] == ["conv2", "conv3"]
    assert [x.name for x in plan.not_pruned] == ["conv1"] and plan.complete
    lp = plan.layers[0]
    assert lp.basis == LAYER and lp.baseline.pattern == "dense" and lp.baseline.ms == 0.100
    by = {c.label: c for c in lp.candidates}
    assert set(by) == {"BWSP-R", "WSP-R", "BWSP-C", "WSP-C"}
    assert by["WSP-C"].time.impl == "cutlass-xform" and by["WSP-C"].speedup == pytest.approx(0.100 / 0.088)
    assert by["BWSP-R"].speedup == pytest.approx(0.100 / 0.070)


def test_against_cudnn_scales_speedups_but_never_changes_the_choice(net):
    rows = rows_for(points((net,)), BASE_TIMES)
    dense, cudnn = _plan(net, rows), _plan(net, rows, against="cudnn")
    for a, b in zip(dense.layers, cudnn.layers):
        assert a.chosen.label == b.chosen.label and b.baseline.pattern == "conv"
        assert b.chosen.speedup == pytest.approx(a.chosen.speedup * 0.050 / 0.100)


def test_a_candidate_without_a_layer_time_puts_the_layer_on_the_gemm_basis(net):
    times = dict(BASE_TIMES)
    times[("wsp-r", "cutlass-grouped", 0.7, "unbalanced")] = (0.019, None)
    times[("wsp-r", "cutlass-padded", 0.7, "unbalanced")] = (0.022, None)
    plan = _plan(net, rows_for(points((net,)), times))
    lp = plan.layers[0]
    assert lp.basis == GEMM and lp.baseline.ms == 0.040
    assert {c.label: c.time.ms for c in lp.candidates}["WSP-R"] == 0.019
    assert "compared on the GEMM batch only" in plan.notes[0]
    with pytest.raises(MissingResults, match="no whole-layer time .* --no-layer-time"):
        _plan(net, rows_for(points((net,)), times), against="cudnn")


def test_failed_candidates_are_left_out_and_a_layer_with_none_stays_unpruned(net):
    times = dict(BASE_TIMES)
    for key in [k for k in times if k[0] in ("wsp-r",)]:
        times[key] = "wrong"
    plan = _plan(net, rows_for(points((net,)), times), axes=("R",))
    lp = plan.layers[0]
    assert lp.chosen is None and not plan.complete
    assert "no candidate can be chosen" in lp.why and "2 wrong" in lp.why and "stays unpruned" in lp.why


def test_missing_points_are_one_line_with_the_sweep_that_measures_them(net):
    times = {k: v for k, v in BASE_TIMES.items() if not (k[0].startswith("wsp-c") and k[3] == "unbalanced")}
    rows = rows_for(points((net,)), times)
    with pytest.raises(MissingResults) as e:
        _plan(net, rows)
    text = str(e.value)
    assert "\n" not in text
    assert "lacks what an ABWSP plan at ratio 0.7 needs (batch 32, p4, fp16): wsp-c/wsp-c-fused unbalanced r0.7 " \
           "for 1 layer shape (conv2 32→32@8)" in text
    assert f"cutlass-wsp sweep --net {net} --batch 32 --tile 4 --dtype fp16 --pattern wsp-c,wsp-c-fused --ratio 0.7 " \
           "--balance unbalanced --out r.jsonl" in text
    assert _plan(net, rows, axes=("R",)).complete           # R alone needs none of them
    with pytest.raises(MissingResults, match="ratio 0.5 needs .*--ratio 0.5"):
        build_plan(Measured(rows), resolve_layers(net), Settings(ratio=0.5, axes=("R",)), ProxySource(4),
                   net_spec=net, source="r.jsonl", out="r.jsonl")


def test_measured_drops_override_the_proxy(net, tmp_path):
    from cutlass_wsp.accuracy_drops import AccuracyDrops

    csv = tmp_path / "acc.csv"
    csv.write_text("layer,pattern,ratio,balance,drop\nconv2,wsp-r,0.7,balanced,3.0\nconv2,wsp-r,0.7,unbalanced,0.5\n")
    table = resolve_layers(net)
    proxies = ProxySource(4, drops=AccuracyDrops(csv, table))
    plan = build_plan(Measured(rows_for(points((net,)), BASE_TIMES)), table, Settings(ratio=0.7, accuracy_weight=0.5),
                      proxies, net_spec=net, source="r.jsonl", out="r.jsonl")
    lp = _by_name(plan)["conv2"]
    assert lp.chosen.label == "WSP-R" and lp.chosen.proxy == "drop"      # 2.5 points weigh more than 14% speed
    assert all(c.unavailable and "no measured drop" in c.unavailable for c in lp.candidates if c.axis == "C")
    assert _by_name(plan)["conv3"].chosen.proxy == "output"                # the CSV does not cover conv3


def test_settings_refuse_what_cannot_be_served():
    with pytest.raises(InputError, match="serves no WSP-C"):
        Settings(ratio=0.7, implementations="fused").check()
    assert Settings(ratio=0.7, implementations="fused", axes=("R",)).check()
    with pytest.raises(InputError, match="proxy 'psnr'"):
        Settings(ratio=0.7, proxy="psnr").check()


# ------------------------------------------------------------------------------------------ the command
def test_abwsp_command_prints_every_layer_and_writes_the_plan(net, hot_weights, tmp_path, capsys):
    results = write(tmp_path / "r.jsonl", rows_for(points((net,)), BASE_TIMES))
    assert main(["abwsp", results, "--net", net, "--weights", hot_weights, "--accuracy-weight", "90%"]) == 0
    out, err = capsys.readouterr()
    assert "ABWSP plan: " in out and "a = --accuracy-weight 0.9" in out
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("conv")}
    assert lines["conv2"].split()[2] == "WSP-R" and "never pruned: conv1 (c=3)" in out
    assert "why:\n  conv2: WSP-R has" in out
    plan_path = tmp_path / "abwsp_toy_b32_r0.7.json"
    assert err.strip() == f"cutlass-wsp abwsp: plan written to {plan_path}"
    doc = json.loads(plan_path.read_text())
    assert doc["schema"] == "cutlass-wsp/abwsp-plan" and doc["accuracy_weight"] == 0.9
    assert doc["weights"] == hot_weights and [e["layer"] for e in doc["layers"]] == ["conv2", "conv3"]
    header, choices = read_choices(plan_path)
    assert header["ratio"] == 0.7 and choices["conv2"] == ("R", "unbalanced")


def test_abwsp_command_csv_and_json(net, tmp_path, capsys):
    results = write(tmp_path / "r.jsonl", rows_for(points((net,)), BASE_TIMES))
    assert main(["abwsp", results, "--net", net, "--format", "csv", "--json", str(tmp_path / "p.json"),
                 "--proxy", "energy"]) == 0
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["layer"] for r in rows] == ["conv2", "conv3"]
    assert float(rows[0]["BWSP-R_speedup"]) == pytest.approx(0.100 / 0.070)
    assert float(rows[0]["WSP-R_loss"]) == pytest.approx(1 - float(rows[0]["WSP-R_energy_retained"]))
    assert main(["abwsp", results, "--net", net, "--format", "json", "--json", str(tmp_path / "p.json")]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((tmp_path / "p.json").read_text())


@pytest.mark.parametrize("argv, message", [
    (["--accuracy-weight", "1.5"], "--accuracy-weight '1.5' is outside 0..1"),
    (["--ratio", "0.5"], "lacks what an ABWSP plan at ratio 0.5 needs"),
    (["--batch", "1"], "has no verified rows at --batch 1"),
    (["--against", "fastest"], "--against 'fastest'"),
    (["--axis", "rows"], "--axis 'rows'"),
    (["--impl", "fused"], "serves no WSP-C"),
    (["--format", "yaml"], "--format 'yaml'"),
    (["--weights", "none.npz"], "weights file 'none.npz' not found"),
    (["--calibration-images", "0"], "--calibration-images '0' is not a whole number >= 1"),
])
def test_abwsp_bad_input_is_one_line(net, tmp_path, capsys, argv, message):
    results = write(tmp_path / "r.jsonl", rows_for(points((net,)), BASE_TIMES))
    assert main(["abwsp", results, "--net", net, "--json", str(tmp_path / "p.json"), *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err


def test_abwsp_needs_a_net_when_the_results_hold_two_or_a_layer_file(net, tmp_path, capsys):
    rows = rows_for(points(("resnet18:layer4.0.conv2", "vgg16:conv5_1")), BASE_TIMES)
    results = write(tmp_path / "r.jsonl", rows)
    assert main(["abwsp", results]) == 2
    assert "holds 2 networks (resnet18, vgg16) (pick one with --net" in capsys.readouterr().err
    results = write(tmp_path / "toy.jsonl", rows_for(points((net,)), BASE_TIMES))
    assert main(["abwsp", results]) == 2
    assert "rows name network 'toy', not a built-in network (pass the layer file" in capsys.readouterr().err


def test_parse_fraction_takes_both_ends_and_percent():
    assert parse_fraction("0", "--w") == 0 and parse_fraction("1", "--w") == 1 and parse_fraction("25%", "--w") == 0.25
    with pytest.raises(InputError, match="'x' is not a number"):
        parse_fraction("x", "--w")


def test_every_option_of_abwsp_has_help():
    from cutlass_wsp.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    bare = [a.option_strings or a.dest for a in sub.choices["abwsp"]._actions if not (a.help or "").strip()]
    assert bare == []


# ------------------------------------------------------------------------------------------ H100 results
@pytest.mark.parametrize("net_name, n_layers", [("vgg16", 12), ("resnet18", 13)])
def test_abwsp_on_the_committed_h100_results(net_name, n_layers, tmp_path, capsys):
    plan_path = tmp_path / "plan.json"
    assert main(["abwsp", str(H100_B32), "--net", net_name, "--json", str(plan_path), "--accuracy-weight", "0"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(plan_path.read_text())
    assert doc["gpu"] == "NVIDIA H100 80GB HBM3" and len(doc["layers"]) == n_layers
    assert ("vgg16.conv1_1" in doc["not_pruned"]) == (net_name == "vgg16")
    for e in doc["layers"]:
        assert e["basis"] == "layer" and e["choice"] and e["why"]
        assert len(e["candidates"]) == 4 and all(c["speedup"] and c["output_error"] for c in e["candidates"])
        fastest = max(e["candidates"], key=lambda c: c["speedup"])
        assert e["choice"]["label"] == fastest["label"]                  # weight 0: the fastest
        assert e["baseline"]["pattern"] == "dense"
        assert math.isclose(fastest["speedup"], e["baseline"]["ms"] / fastest["time"]["ms"])
    assert out.count(f"{net_name}.") >= 2 * n_layers                    # a table row and a why line per layer
