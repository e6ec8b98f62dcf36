"""Layer tables, user layer files, selection, the GEMM batch of a layer, and `cutlass-wsp layers`."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest

from cutlass_wsp.cli import main
from cutlass_wsp.errors import InputError, Unsupported
from cutlass_wsp.layers import (NETWORKS, Layer, layer_problem, load_layer_table, network, resolve_layers,
                                unique_shapes)

DATA = Path(__file__).parent / "data"


def _counts(layers) -> dict[tuple[int, int, int], int]:
    out: dict[tuple[int, int, int], int] = {}
    for layer in layers:
        key = (layer.c, layer.n, layer.H)
        out[key] = out.get(key, 0) + 1
    return out


# ---------------------------------------------------------------------------------------------
# Built-in tables
# ---------------------------------------------------------------------------------------------

def test_vgg16_table():
    vgg = network("vgg16")
    assert len(vgg) == 13
    assert _counts(vgg) == {(3, 64, 224): 1, (64, 64, 224): 1, (64, 128, 112): 1, (128, 128, 112): 1,
                            (128, 256, 56): 1, (256, 256, 56): 2, (256, 512, 28): 1, (512, 512, 28): 2,
                            (512, 512, 14): 3}
    assert [x.name for x in vgg if not x.prunable] == ["vgg16.conv1_1"]  # layer 1 is never pruned
    assert vgg[1].name == "vgg16.conv1_2"
    assert all(x.H == x.W and x.kernel == 3 and x.stride == 1 for x in vgg)


def test_resnet18_table():
    r18 = network("resnet18")
    assert _counts(r18) == {(64, 64, 56): 4, (128, 128, 28): 3, (256, 256, 14): 3, (512, 512, 7): 3}
    assert r18[0].name == "resnet18.layer1.0.conv1"
    names = {x.name for x in r18}
    for stage in (2, 3, 4):  # first conv of stages 2-4 is stride 2: not a Winograd layer
        assert f"resnet18.layer{stage}.0.conv1" not in names
        assert f"resnet18.layer{stage}.0.conv2" in names
    assert all(x.prunable for x in r18)


def test_resnet34_table():
    r34 = network("resnet34")
    assert _counts(r34) == {(64, 64, 56): 6, (128, 128, 28): 7, (256, 256, 14): 11, (512, 512, 7): 5}
    assert len({x.name for x in r34}) == len(r34) == 29
    assert "resnet34.layer3.5.conv2" in {x.name for x in r34}


def test_network_name_forms_and_unknown():
    assert network("ResNet-18") is NETWORKS["resnet18"]
    with pytest.raises(InputError) as e:
        network("alexnet")
    msg = str(e.value)
    assert "alexnet" in msg and all(n in msg for n in NETWORKS) and "\n" not in msg


def test_unique_shapes_groups_layers():
    groups = unique_shapes(network("vgg16"))
    assert len(groups) == 9
    assert [x.name for x in groups[(512, 512, 14, 14)]] == ["vgg16.conv5_1", "vgg16.conv5_2", "vgg16.conv5_3"]
    assert list(groups)[0] == (3, 64, 224, 224)  # first-seen order
    assert len(unique_shapes(network("resnet34"))) == 4


# ---------------------------------------------------------------------------------------------
# GEMM batch of a layer
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [4, 6, 8])
@pytest.mark.parametrize("batch", [1, 32])
def test_layer_problem_all_builtin_layers(p, batch):
    m = p - 2
    for layers in NETWORKS.values():
        for layer in layers:
            prob = layer_problem(layer, batch, p)
            assert (prob.L, prob.M, prob.K) == (p * p, layer.n, layer.c)
            assert prob.N == batch * math.ceil(layer.H / m) * math.ceil(layer.W / m)


def test_layer_problem_known_values():
    r18_last = network("resnet18")[-1]                     # 512→512 @ 7×7
    assert layer_problem(r18_last, 1, 6).N == 4             # m=4: 2×2 tiles, partial tiles count
    assert layer_problem(r18_last, 1, 4).N == 16            # m=2: 4×4
    assert layer_problem(r18_last, 1, 8).N == 4             # m=6: 2×2
    assert layer_problem(network("vgg16")[1], 32, 4).N == 32 * 112 * 112
    odd = Layer("x", "odd", 8, 8, 5, 9)
    assert layer_problem(odd, 3, 6).N == 3 * 2 * 3


@pytest.mark.parametrize("batch", [0, -1, 1.5, "2"])
def test_layer_problem_bad_batch(batch):
    with pytest.raises(InputError, match="batch"):
        layer_problem(network("vgg16")[0], batch, 4)


def test_layer_problem_bad_tile_and_non_winograd_layer():
    with pytest.raises(InputError, match="p=5"):
        layer_problem(network("vgg16")[0], 1, 5)
    with pytest.raises(Unsupported, match="3×3 stride-1"):
        layer_problem(Layer("x", "down", 64, 128, 56, 56, stride=2), 1, 4)


@pytest.mark.parametrize("field", ["c", "n", "H", "W"])
def test_layer_rejects_non_positive_sizes(field):
    sizes = dict(c=4, n=4, H=4, W=4)
    sizes[field] = 0
    with pytest.raises(InputError, match=f"{field}=0"):
        Layer("x", "bad", **sizes)


# ---------------------------------------------------------------------------------------------
# User tables
# ---------------------------------------------------------------------------------------------

EXPECTED_EXAMPLE = [("stem", 3, 32, 64, 64, False), ("block1", 32, 32, 64, 64, True),
                    ("block2", 32, 64, 32, 32, True), ("block3", 64, 64, 7, 7, True)]


@pytest.mark.parametrize("suffix", ["csv", "json", "yaml"])
def test_load_layer_table_formats(suffix):
    layers = load_layer_table(DATA / f"layers_example.{suffix}")
    assert [(x.name, x.c, x.n, x.H, x.W, x.prunable) for x in layers] == EXPECTED_EXAMPLE
    assert layers[0].net == ("tiny" if suffix == "json" else "layers_example")


def _write(tmp_path, name, text) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name,text,expect", [
    ("t.csv", "name,c,n,H\nA,3,4,5\n", "column 'W' is missing"),
    ("t.csv", "name,c,n,H,W\nA,3,4,5,5\nB,3,x,5,5\n", "row 2: column 'n' is 'x'"),
    ("t.csv", "name,c,n,H,W\nA,3,0,5,5\n", "row 1: column 'n' is 0"),
    ("t.csv", "name,c,n,H,W\nA,3,4,5,5,9\n", "more cells than the header"),
    ("t.csv", "name,c,n,H,W,chanels\nA,3,4,5,5,9\n", "unknown column 'chanels'"),
    ("t.csv", "name,c,n,H,W,prunable\nA,3,4,5,5,maybe\n", "'prunable' is 'maybe'"),
    ("t.csv", "name,c,n,H,W,kernel\nA,3,4,5,5,3\nB,3,4,5,5,5\n", "row 2 (B): a 5×5 stride-1"),
    ("t.csv", "name,c,n,H,W,stride\nA,3,4,5,5,2\n", "stride-2 conv is not a Winograd layer"),
    ("t.csv", "name,c,n,H,W\nA,3,4,5,5\nA,3,4,5,5\n", "'A' appears twice"),
    ("t.csv", "", "empty"),
    ("t.json", '[{"name": "A", "c": 3, "n": 4, "H": 5, "W": 5},]', "not valid JSON"),
    ("t.json", '{"layers": 3}', "expected a list of layers"),
    ("t.json", '[[3, 4, 5, 5]]', "row 1 is a list"),
    ("t.json", '[{"name": "A", "c": true, "n": 4, "H": 5, "W": 5}]', "column 'c' is True"),
    ("t.json", '[]', "no layers"),
    ("t.yaml", "- {name: A, c: 3, n: 4, H: 5, W: [5\n", "not valid YAML"),
    ("t.txt", "name,c,n,H,W\n", "unknown layer-file type"),
])
def test_load_layer_table_errors(tmp_path, name, text, expect):
    path = _write(tmp_path, name, text)
    with pytest.raises(InputError) as e:
        load_layer_table(path)
    assert expect in str(e.value)
    assert "\n" not in str(e.value)


def test_load_layer_table_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_layer_table(tmp_path / "nope.csv")


# ---------------------------------------------------------------------------------------------
# resolve_layers
# ---------------------------------------------------------------------------------------------

def test_resolve_layers_network_and_selections():
    assert resolve_layers("vgg16") == NETWORKS["vgg16"]
    assert [x.name for x in resolve_layers("vgg16:conv4_2")] == ["vgg16.conv4_2"]
    assert [x.name for x in resolve_layers("vgg16:vgg16.conv4_2")] == ["vgg16.conv4_2"]
    assert [x.name for x in resolve_layers("vgg16:0,conv5_3,-2")] == ["vgg16.conv1_1", "vgg16.conv5_3",
                                                                       "vgg16.conv5_2"]
    assert [x.name for x in resolve_layers("resnet18:layer2.0.conv2")] == ["resnet18.layer2.0.conv2"]


def test_resolve_layers_file_and_file_selection():
    path = DATA / "layers_example.csv"
    assert len(resolve_layers(str(path))) == 4
    assert [x.name for x in resolve_layers(f"{path}:block2,3")] == ["block2", "block3"]


@pytest.mark.parametrize("spec,expect", [("vgg16:conv9_9", "has no layer 'conv9_9'"),
                                         ("vgg16:13", "has no layer '13'"),
                                         ("lenet:0", "unknown network 'lenet'"),
                                         ("", "no layers named")])
def test_resolve_layers_errors(spec, expect):
    with pytest.raises(InputError) as e:
        resolve_layers(spec)
    assert expect in str(e.value)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def test_cli_table(capsys):
    assert main(["layers", "vgg16", "--batch", "32", "--tile", "4"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    header = [ln for ln in out if not ln.startswith("#")][0].split()
    assert header == ["layer", "c", "n", "H", "W", "T", "GFLOP", "MB", "pruned"]
    body = [ln.split() for ln in out if ln.startswith("vgg16.")]
    assert len(body) == 13
    first, second = body[0], body[1]
    assert first[0] == "vgg16.conv1_1" and first[-1] == "no" and second[-1] == "yes"
    assert int(second[5]) == 32 * 112 * 112


def test_cli_csv_values(capsys):
    assert main(["layers", "resnet18", "--batch", "1", "--tile", "6", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 13
    last = rows[-1]
    assert last["layer"] == "resnet18.layer4.1.conv2" and int(last["T"]) == 4
    L, n, c, T = 36, 512, 512, 4
    assert float(last["GFLOP"]) == pytest.approx(2 * L * n * c * T / 1e9)
    assert float(last["MB"]) == pytest.approx(L * 2 * (n * c + c * T + n * T) / 1e6)  # fp16


def test_cli_json_dtype_and_file(capsys):
    path = DATA / "layers_example.yaml"
    assert main(["layers", str(path), "--format", "json", "--dtype", "fp32", "--batch", "2"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["dtype"] == "fp32" and [r["layer"] for r in doc["layers"]] == [e[0] for e in EXPECTED_EXAMPLE]
    r = doc["layers"][3]                                     # 64→64 @ 7×7, p=4: 4×4 tiles
    assert r["T"] == 2 * 16
    assert r["MB"] == pytest.approx(16 * 4 * (64 * 64 + 64 * 32 + 64 * 32) / 1e6)
    assert doc["layers"][0]["pruned"] == "no"


def test_cli_lists_networks_without_argument(capsys):
    assert main(["layers"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in NETWORKS)


@pytest.mark.parametrize("argv,expect", [(["layers", "alexnet"], "unknown network 'alexnet'"),
                                         (["layers", "vgg16", "--batch", "0"], "batch 0"),
                                         (["layers", "vgg16", "--tile", "5"], "p=5"),
                                         (["layers", "missing.csv"], "not found")])
def test_cli_bad_input_one_line_nonzero(capsys, argv, expect):
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert expect in err and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("suffix", [".csv", ".json", ".yaml"])
def test_a_binary_layer_file_is_one_line(tmp_path, capsys, suffix):
    path = tmp_path / f"layers{suffix}"
    path.write_bytes(b"name,c,n,H,W\n\x89PNG\xff\xfe\x00\x01")
    assert main(["layers", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"cutlass-wsp layers: error: {path}: not a text file (byte 13 is not UTF-8) "
                                "(save the layer table as UTF-8 text: .csv, .json or .yaml)"]


def test_a_layer_file_saved_with_a_byte_order_mark_reads(tmp_path):
    path = tmp_path / "layers.csv"
    path.write_bytes("name,c,n,H,W\nconv,64,64,56,56\n".encode("utf-8-sig"))
    (layer,) = load_layer_table(path)
    assert (layer.name, layer.c, layer.n, layer.H, layer.W) == ("conv", 64, 64, 56, 56)
