"""Figures from the committed synthetic sample: files written, titles, skipped rows, CLI; no GPU needed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from cutlass_wsp.cli import main
from cutlass_wsp.errors import InputError
from cutlass_wsp.sweep.plot import plot_results
from cutlass_wsp.sweep.results import ResultStore

SAMPLE = Path(__file__).parent / "data" / "results_sample.jsonl"


@pytest.fixture(scope="module")
def sample_rows():
    return ResultStore(SAMPLE).load()


@pytest.fixture(scope="module")
def drawn(sample_rows, tmp_path_factory):
    out = tmp_path_factory.mktemp("plots")
    return out, plot_results(sample_rows, out, ratio=0.7)


def _svg_text(path: Path) -> str:
    """The text elements of an SVG (titles are kept as text: svg.fonttype = none)."""
    return " ".join(re.findall(r"<text[^>]*>([^<]*)</text>", path.read_text()))


def test_every_figure_kind_is_written_as_png_and_svg(drawn):
    out, paths = drawn
    names = {p.name for p in paths}
    for net in ("vgg16", "resnet18"):
        for stem in (f"speedup_{net}_fp16_b32_p4_r0.7", f"balance_{net}_fp16_b32_p4_r0.7",
                     f"structured-vs-csr_{net}_fp16_b32_p4_r0.7", f"ratio_{net}_fp16_b32_p4"):
            assert {f"{stem}.png", f"{stem}.svg"} <= names
        assert {f"layer_{net}_fp16_b32_r0.7.png", f"layer_{net}_fp16_b32_r0.7.svg"} <= names
    for p in paths:
        assert p.parent == out and p.stat().st_size > 5000
        head = p.read_bytes()[:8]
        assert head == b"\x89PNG\r\n\x1a\n" if p.suffix == ".png" else b"<svg" in p.read_bytes()[:600]


def test_titles_name_gpu_dtype_batch(drawn):
    out, _ = drawn
    text = _svg_text(out / "speedup_vgg16_fp16_b32_p4_r0.7.svg")
    assert "vgg16: speedup over dense at ratio 0.7" in text
    assert "synthetic-H100, fp16, batch 32, p=4" in text
    csr = _svg_text(out / "structured-vs-csr_resnet18_fp16_b32_p4_r0.7.svg")
    assert "structured pruning vs cuSPARSE CSR at ratio 0.7" in csr
    assert "balanced vs unbalanced" in _svg_text(out / "balance_resnet18_fp16_b32_p4_r0.7.svg")
    assert "speedup against ratio" in _svg_text(out / "ratio_vgg16_fp16_b32_p4.svg")


def test_rows_not_ok_are_counted_on_the_figure(drawn, sample_rows):
    out, _ = drawn
    vgg_not_ok = sorted(r["status"] for r in sample_rows if r["net"] == "vgg16" and r["status"] != "ok")
    note = _svg_text(out / "speedup_vgg16_fp16_b32_p4_r0.7.svg")
    assert f"not shown: {len(vgg_not_ok)} rows not ok" in note
    for status in set(vgg_not_ok):
        assert status in note


def test_layer_labels_keep_shared_names_and_skip_unprunable_layers(drawn):
    out, _ = drawn
    text = _svg_text(out / "speedup_vgg16_fp16_b32_p4_r0.7.svg")
    assert "conv4_2 +1" in text            # conv4_2 and conv4_3 share one point
    assert "conv1_1" not in text           # not prunable: no bar to draw


def test_default_ratio_and_a_missing_ratio(sample_rows, tmp_path):
    paths = plot_results(sample_rows, tmp_path / "a", formats=("png",))
    assert any(p.name == "speedup_resnet18_fp16_b32_p4_r0.7.png" for p in paths)
    assert all(p.suffix == ".png" for p in paths)
    with pytest.raises(InputError, match="no ok rows at ratio 0.6.*0.5, 0.7, 0.9"):
        plot_results(sample_rows, tmp_path / "b", ratio=0.6)


def test_nothing_to_plot_is_an_input_error(sample_rows, tmp_path):
    bad = [r for r in sample_rows if r["status"] != "ok"]
    with pytest.raises(InputError, match="none of the 4 rows is ok"):
        plot_results(bad, tmp_path)


def test_plot_cli(tmp_path, capsys):
    out = tmp_path / "plots"
    assert main(["plot", str(SAMPLE), "--out", str(out), "--ratio", "50%", "--format", "png"]) == 0
    printed = capsys.readouterr().out
    assert (out / "speedup_vgg16_fp16_b32_p4_r0.5.png").stat().st_size > 0
    assert "4 rows not ok left out" in printed
    assert main(["plot", str(SAMPLE), "--out", str(out), "--ratio", "0.33"]) == 2
    assert main(["plot", str(tmp_path / "missing.jsonl"), "--out", str(out)]) == 2
    assert main(["plot", str(SAMPLE), "--out", str(out), "--format", "gif"]) == 2


def test_importing_plot_does_not_load_matplotlib():
    code = ("import sys, cutlass_wsp.sweep.plot, cutlass_wsp.commands.plot, cutlass_wsp.cli; "
            "print('matplotlib' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"


def test_layer_figure_shows_cudnn_dense_patterns_and_the_plan_choice(drawn, sample_rows):
    from cutlass_wsp.sweep.planner import plan_layers

    out, _ = drawn
    svg = out / "layer_vgg16_fp16_b32_r0.7.svg"
    text = _svg_text(svg)
    assert "vgg16: whole-layer time vs cuDNN at ratio 0.7" in text
    assert "synthetic-H100, fp16, batch 32" in text
    for label in ("cuDNN", "Winograd dense", "wsp-r r0.7", "fp r0.7", "plan's choice"):
        assert label in text
    # each layer's choice is annotated with its speedup over cuDNN
    for e in plan_layers(sample_rows):
        if e.net == "vgg16":
            assert f"{e.chosen(0.7).speedup_vs_cudnn:.2f}×" in text
    assert "1 no layer time" in text          # the ok row that was not timed as a layer is counted


def test_layer_figure_without_pruned_rows(sample_rows, tmp_path):
    rows = [r for r in sample_rows if r["pattern"] in ("conv", "dense")]
    paths = plot_results(rows, tmp_path, formats=("svg",))
    names = {p.name for p in paths}
    assert names == {"layer_vgg16_fp16_b32.svg", "layer_resnet18_fp16_b32.svg"}
    assert "whole-layer time vs cuDNN" in _svg_text(tmp_path / "layer_vgg16_fp16_b32.svg")


# --- where plots go, and when there are none ------------------------------------------------------

@pytest.mark.parametrize("case", ["proc", "file", "under-a-file", "unwritable"])
def test_plot_out_onto_a_bad_path_is_one_line(tmp_path, capsys, monkeypatch, case):
    (tmp_path / "afile").write_text("x")
    out = {"proc": "/proc/cutlass-wsp/plots", "file": str(tmp_path / "afile"),
           "under-a-file": str(tmp_path / "afile" / "plots"), "unwritable": str(tmp_path / "ro")}[case]
    if case == "unwritable":       # root writes anywhere: make the folder refuse as a read-only one would
        from cutlass_wsp import storage

        def denied(folder):
            raise PermissionError(13, "Permission denied", str(folder))

        monkeypatch.setattr(storage, "_probe_writable", denied)
    assert main(["plot", str(SAMPLE), "--out", out, "--format", "png"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"cutlass-wsp plot: error: ") and f"--out {out}" in err.replace("folder ", "")
    assert err.rstrip().endswith("(give --out a folder you can write to (it is created if missing))")


def test_plot_without_out_writes_beside_the_results_file(tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    results.mkdir()
    copy = results / "sweep.jsonl"
    copy.write_bytes(SAMPLE.read_bytes())
    work = tmp_path / "elsewhere"
    (work / "docs" / "plots").mkdir(parents=True)
    monkeypatch.chdir(work)
    assert main(["plot", str(copy), "--format", "png"]) == 0
    assert (results / "plots" / "speedup_vgg16_fp16_b32_p4_r0.7.png").is_file()
    assert list((work / "docs" / "plots").iterdir()) == []        # nothing written where the command ran
    assert str(results / "plots") in capsys.readouterr().out


def test_plot_of_rows_no_figure_covers_says_why_and_fails(sample_rows, tmp_path, capsys):
    from cutlass_wsp.sweep.results import ResultStore

    dense_only = [dict(r, layer_ms=None, layer_q1_ms=None, layer_q3_ms=None, transform_ms=None)
                  for r in sample_rows if r["pattern"] == "dense" and r["status"] == "ok"]
    path = tmp_path / "dense.jsonl"
    store = ResultStore(path)
    for r in dense_only:
        store.append(r)
    out = tmp_path / "plots"
    assert main(["plot", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert f"no figure can be drawn from the {len(dense_only)} ok rows" in err
    assert "speedup figures need ok rows of a pruned pattern" in err and "found none" in err
    assert "layer figures need ok rows with a whole-layer time (layer_ms)" in err
    assert "--pattern dense,wsp-r --ratio 0.7" in err
    assert not out.exists() or list(out.iterdir()) == []


def test_one_file_of_two_gpu_types_plots_each_gpu_apart(sample_rows, tmp_path):
    """A sweep over a cluster of two GPU types writes one file with each point once per GPU type:
    the file keeps both, and every figure is drawn per GPU (the GPU in its name and title)."""
    rows = [r for r in sample_rows if r["net"] == "resnet18"]
    store = ResultStore(tmp_path / "two.jsonl")
    for r in rows:
        store.append(r)
        store.append({**r, "gpu": "synthetic-A100", "median_ms": r["median_ms"] and r["median_ms"] * 2})
    loaded = ResultStore(store.path).load()
    assert len(loaded) == 2 * len(rows)
    paths = plot_results(loaded, tmp_path / "plots", ratio=0.7, formats=("svg",))
    names = {p.name for p in paths}
    for gpu in ("synthetic-h100", "synthetic-a100"):
        assert f"speedup_resnet18_fp16_b32_p4_{gpu}_r0.7.svg" in names
    a100 = _svg_text(tmp_path / "plots" / "speedup_resnet18_fp16_b32_p4_synthetic-a100_r0.7.svg")
    assert "synthetic-A100, fp16, batch 32, p=4" in a100
