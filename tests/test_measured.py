"""The results index of abwsp and network (sweep/measured.py) and the one-line 'what is missing' error
with its sweep command (sweep/missing.py)."""

from __future__ import annotations

import shlex

import pytest
from abwsp_rows import BASE_TIMES, points, row, rows_for

from cutlass_wsp.commands.sweep_options import from_args
from cutlass_wsp.errors import InputError
from cutlass_wsp.layers import resolve_layers
from cutlass_wsp.sweep.measured import GEMM, LAYER, Measured, fused_only, unfused
from cutlass_wsp.sweep.missing import MissingResults, Need, layer_time_error, missing_error, sweep_command
from cutlass_wsp.sweep.plan import expand

SHAPE = (512, 512, 7, 7)
LOOK = dict(shape=SHAPE, batch=32, p=4, dtype="fp16")


def _measured(times=BASE_TIMES, layers=("resnet18:layer4.0.conv2",)):
    return Measured(rows_for(points(layers), times))


def test_fastest_is_the_fastest_ok_row_over_implementations_and_alternative_patterns():
    m = _measured()
    t = m.fastest(**LOOK, patterns=("wsp-r",), ratio=0.7, balance="unbalanced")
    assert (t.impl, t.ms, t.basis) == ("cutlass-grouped", 0.080, LAYER)
    # WSP-C's two sweep patterns are one pruning: the in-transform gather is the fastest of both
    t = m.fastest(**LOOK, patterns=("wsp-c", "wsp-c-fused"), ratio=0.7, balance="balanced", basis=GEMM)
    assert (t.pattern, t.impl, t.ms) == ("wsp-c-fused", "cutlass-xform", 0.025)
    # cuDNN's row has no GEMM batch and no tile size
    assert m.fastest(**LOOK, patterns=("conv",)).ms == 0.050
    assert m.fastest(**LOOK, patterns=("conv",), basis=GEMM) is None


def test_rows_that_are_not_ok_never_give_a_time_and_why_none_says_so():
    times = dict(BASE_TIMES)
    times[("wsp-r", "cutlass-grouped", 0.7, "unbalanced")] = "wrong"
    times[("wsp-r", "cutlass-padded", 0.7, "unbalanced")] = (0.001, None)     # faster, but no layer time
    m = _measured(times)
    q = dict(**LOOK, patterns=("wsp-r",), ratio=0.7, balance="unbalanced")
    assert m.fastest(**q) is None
    assert m.why_none(**q) == "1 wrong, 1 ok row without a layer_ms"
    assert m.fastest(**q, basis=GEMM).ms == 0.001
    assert m.why_none(**dict(q, ratio=0.5)) == "not measured"
    assert not m.has_rows(**dict(q, ratio=0.5)) and m.has_rows(**q)


def test_implementation_filters_and_whole_layer_rows():
    pts = points(("resnet18:layer4.0.conv2",))
    rows = rows_for(pts, BASE_TIMES)
    fused = next(p for p in pts if p.pattern == "wsp-r" and p.balance == "balanced" and p.impl == "cutlass")
    rows.append(row(fused, 0.030, 0.030, impl="fused", key=fused.key.replace("/cutlass/", "/fused/")))
    m = Measured(rows)
    q = dict(**LOOK, patterns=("wsp-r",), ratio=0.7, balance="balanced")
    assert m.fastest(**q).impl == "fused"
    assert m.fastest(**q, impls=unfused).impl == "cutlass"
    assert m.fastest(**q, impls=fused_only).ms == 0.030
    assert m.fastest(**q, basis=GEMM, impls=fused_only) is None      # a whole-layer kernel has no GEMM batch time


def test_rows_are_found_by_shape_so_resnet34_reads_resnet18_rows():
    m = _measured()
    r34 = [x for x in resolve_layers("resnet34") if x.shape == SHAPE]
    assert len(r34) == 5
    assert m.fastest(shape=r34[-1].shape, batch=32, p=4, dtype="fp16", patterns=("dense",)).ms == 0.100


def test_rows_of_two_gpus_are_refused():
    rows = rows_for(points(("resnet18:layer4.0.conv2",)), BASE_TIMES)
    rows[0]["gpu"] = "other GPU"
    with pytest.raises(InputError, match="come from 2 GPUs"):
        Measured(rows)


def test_values_and_ratios():
    m = Measured(rows_for(points(("resnet18:layer4.0.conv2",), ratios=(0.5, 0.7)),
                          {**BASE_TIMES, ("fp", "cutlass", 0.5, None): (0.02, 0.08)}))
    assert m.values("batch") == [32] and m.values("p") == [4] and m.values("dtype") == ["fp16"]
    assert m.ratios() == [0.5, 0.7]


# ------------------------------------------------------------------------------------------ missing
def test_sweep_command_measures_exactly_the_missing_points(tmp_path):
    table = resolve_layers("vgg16")
    c42, c51 = resolve_layers("vgg16:conv4_2")[0], resolve_layers("vgg16:conv5_1")[0]
    needs = [Need(c42, ("wsp-c", "wsp-c-fused"), 0.7, "unbalanced"), Need(c51, ("wsp-c", "wsp-c-fused"), 0.7, "unbalanced"),
             Need(c51, ("dense",))]
    out = tmp_path / "r.jsonl"
    cmd = sweep_command("vgg16", needs, table, batch=32, p=4, dtype="fp16", out=out)
    argv = shlex.split(cmd)
    assert argv[:2] == ["cutlass-wsp", "sweep"]
    spec = from_args(argv[2:argv.index("--out")])          # the command parses as a sweep
    keys = {(p.layers[0], p.pattern, p.ratio, p.balance) for p in expand(spec)}
    assert ("vgg16.conv4_2", "wsp-c", 0.7, "unbalanced") in keys
    assert ("vgg16.conv5_1", "wsp-c-fused", 0.7, "unbalanced") in keys
    assert ("vgg16.conv5_1", "dense", None, None) in keys
    assert {k[0] for k in keys} == {"vgg16.conv4_2", "vgg16.conv5_1"}       # only the layers that lack them
    assert {k[3] for k in keys} <= {"unbalanced", None}
    assert argv[argv.index("--out") + 1] == str(out)


def test_sweep_command_names_the_whole_network_when_every_prunable_shape_is_missing():
    table = resolve_layers("resnet18")
    needs = [Need(x, ("conv",)) for x in table]
    argv = shlex.split(sweep_command("resnet18", needs, table, batch=1, p=None, dtype="fp16", out="r.jsonl"))
    assert argv[argv.index("--net") + 1] == "resnet18" and "--tile" not in argv and "--ratio" not in argv
    fused = [Need(table[0], ("wsp-rb",), 0.7, None, impl="fused")]
    argv = shlex.split(sweep_command("resnet18", fused, table, batch=32, p=4, dtype="fp16", out="r.jsonl"))
    assert argv[argv.index("--impl") + 1] == "wsp-rb=fused" and "--balance" not in argv


def test_missing_error_is_one_line_naming_what_and_the_command():
    table = resolve_layers("vgg16")
    needs = [Need(x, ("wsp-r",), 0.7, "unbalanced") for x in table if x.prunable]
    e = missing_error("r.jsonl", "vgg16", needs, table, batch=32, p=4, dtype="fp16", out="r.jsonl", what="a plan")
    assert isinstance(e, MissingResults) and isinstance(e, InputError)
    text = str(e)
    assert "\n" not in text
    assert text.startswith("r.jsonl lacks what a plan needs (batch 32, p4, fp16): wsp-r unbalanced r0.7 for 8 layer "
                           "shapes (vgg16.conv1_2 64→64@224, vgg16.conv2_1 64→128@112, vgg16.conv2_2 128→128@112, +5 more)")
    assert "(measure it: cutlass-wsp sweep --net vgg16 --batch 32 --tile 4 --dtype fp16 --pattern wsp-r --ratio 0.7 " \
           "--balance unbalanced --out r.jsonl)" in text


def test_layer_time_error_writes_a_new_file():
    table = resolve_layers("resnet18")
    e = layer_time_error("results/r.jsonl", "resnet18", [Need(table[0], ("dense",))], table, batch=32, p=4,
                         dtype="fp16", out="results/r.jsonl")
    assert "--no-layer-time" in e.problem and "--out results/r-layer-time.jsonl" in e.fix and "pass both" in e.fix


def test_what_the_same_layers_miss_is_named_once_with_them():
    table = resolve_layers("resnet18")
    firsts = [table[0], table[5]]
    needs = [Need(x, ("wsp-r",), 0.6, b) for x in firsts for b in ("balanced", "unbalanced")] + [Need(table[0], ("conv",))]
    e = missing_error("r.jsonl", "resnet18", needs, table, batch=1, p=4, dtype="fp16", out="r.jsonl")
    assert e.problem.endswith("wsp-r balanced r0.6, wsp-r unbalanced r0.6 for 2 layer shapes (resnet18.layer1.0.conv1 "
                              "64→64@56, resnet18.layer2.1.conv1 128→128@28); conv for 1 layer shape "
                              "(resnet18.layer1.0.conv1 64→64@56)")
