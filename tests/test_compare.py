"""Regression comparison: verdicts, thresholds, different GPUs, and `cutlass-wsp compare` exit codes."""

from __future__ import annotations

import pytest

from cutlass_wsp.cli import main
from cutlass_wsp.errors import InputError
from cutlass_wsp.sweep.compare import compare, parse_threshold
from cutlass_wsp.sweep.results import ResultStore, make_row


def row(key, ms=None, status="ok", gpu="GPU-A", **kw):
    return make_row(None, status, key=key, median_ms=ms, min_ms=None if ms is None else ms * 0.9, gpu=gpu, **kw)


def write(path, rows, provenance=None):
    store = ResultStore(path, provenance=provenance)
    for r in rows:
        store.append(r)
    return str(path)


BASE = [row("a", 1.0), row("b", 1.0), row("c", 1.0), row("d", 1.0), row("e", None, "unsupported"),
        row("only-base", 1.0)]
NEW = [row("a", 1.06), row("b", 1.04), row("c", 0.90), row("d", None, "wrong"), row("e", 2.0),
       row("only-new", 1.0)]


def test_verdicts_by_threshold():
    result = compare(BASE, NEW, threshold=0.05)
    verdicts = {e.key: e.verdict for e in result.entries}
    assert verdicts == {"a": "slower", "b": "same", "c": "faster", "d": "broke", "e": "fixed"}
    ratios = {e.key: e.ratio for e in result.entries}
    assert ratios["a"] == pytest.approx(1.06) and ratios["d"] is None
    assert {e.key for e in result.regressions} == {"a", "d"}
    assert result.only_base == ["only-base"] and result.only_new == ["only-new"]
    assert {e.key for e in compare(BASE, NEW, threshold=0.10).regressions} == {"d"}


def test_metric_choice_changes_the_ratio():
    base = [row("a", 1.0)]
    new = [make_row(None, "ok", key="a", median_ms=1.0, min_ms=1.5, gpu="GPU-A")]
    assert compare(base, new, metric="median_ms").entries[0].verdict == "same"
    e = compare(base, new, metric="min").entries[0]
    assert e.verdict == "slower" and e.ratio == pytest.approx(1.5 / 0.9)


@pytest.mark.parametrize("text,expected", [("5%", (None, 0.05)), ("0.05", (None, 0.05)),
                                           ("min:10%", ("min_ms", 0.10)), ("150%", (None, 1.5))])
def test_parse_threshold(text, expected):
    metric, value = parse_threshold(text)
    assert metric == expected[0] and value == pytest.approx(expected[1])


@pytest.mark.parametrize("text,match", [("abc", "not a number"), ("5", "percentage"), ("-5%", "negative"),
                                        ("max:5%", "unknown metric")])
def test_parse_threshold_errors(text, match):
    with pytest.raises(InputError, match=match):
        parse_threshold(text)


def test_different_gpus_are_refused_unless_allowed():
    other = [row("a", 1.0, gpu="GPU-B")]
    with pytest.raises(InputError, match="GPU-A.*GPU-B.*--allow-different-gpu"):
        compare([row("a", 1.0)], other)
    assert compare([row("a", 1.0)], other, allow_different_gpu=True).entries[0].verdict == "same"


def test_cli_exit_1_on_regression_and_prints_table(tmp_path, capsys):
    base, new = write(tmp_path / "base.jsonl", BASE), write(tmp_path / "new.jsonl", NEW)
    assert main(["compare", base, new]) == 1
    out = capsys.readouterr().out
    line_a = next(x for x in out.splitlines() if x.startswith("a "))
    assert "1.0000" in line_a and "1.0600" in line_a and "1.060" in line_a and "slower" in line_a
    assert "broke (ok -> wrong)" in out
    assert "only in BASE: only-base" in out and "only in NEW:  only-new" in out
    assert "REGRESSION: 2 point(s)" in out


def test_cli_exit_0_without_regression(tmp_path, capsys):
    base = write(tmp_path / "base.jsonl", [row("a", 1.0), row("b", 1.0)])
    new = write(tmp_path / "new.jsonl", [row("a", 1.04), row("b", 0.5)])
    assert main(["compare", base, new]) == 0
    assert main(["compare", base, new, "--threshold", "3%"]) == 1
    assert main(["compare", base, new, "--threshold", "0.05", "--changed"]) == 0
    out = capsys.readouterr().out
    assert "no regression" in out


def test_cli_exit_2_on_bad_input(tmp_path, capsys):
    base = write(tmp_path / "base.jsonl", [row("a", 1.0)])
    other_gpu = write(tmp_path / "h200.jsonl", [row("a", 1.0, gpu="GPU-B")])
    assert main(["compare", base, str(tmp_path / "missing.jsonl")]) == 2
    assert main(["compare", base, base, "--threshold", "lots"]) == 2
    assert main(["compare", base, other_gpu]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "not a number" in err and "different GPUs" in err
    assert main(["compare", base, other_gpu, "--allow-different-gpu"]) == 0


def test_cli_uses_header_gpu_when_rows_have_none(tmp_path):
    base = write(tmp_path / "base.jsonl", [row("a", 1.0, gpu=None)], provenance={"gpu": "GPU-A"})
    new = write(tmp_path / "new.jsonl", [row("a", 1.0, gpu=None)], provenance={"gpu_name": "GPU-B"})
    assert main(["compare", base, new]) == 2
    same = write(tmp_path / "same.jsonl", [row("a", 1.0, gpu=None)], provenance={"gpu_name": "GPU-A"})
    assert main(["compare", base, same]) == 0


def test_cli_on_the_committed_sample_compares_equal(capsys):
    from pathlib import Path

    sample = str(Path(__file__).parent / "data" / "results_sample.jsonl")
    assert main(["compare", sample, sample]) == 0
    assert "0 slower, 0 faster" in capsys.readouterr().out


def test_whole_layer_metric():
    base = [row("a", 1.0, layer_ms=2.0), row("b", 1.0)]
    new = [row("a", 1.0, layer_ms=2.3), row("b", 1.0, layer_ms=1.0)]
    result = compare(base, new, metric="layer")
    verdicts = {e.key: e.verdict for e in result.entries}
    assert result.metric == "layer_ms"
    assert verdicts == {"a": "slower", "b": "no metric"}       # b had no layer time in BASE
    assert compare(base, new).entries[0].verdict == "same"     # the GEMM batch alone did not move
    assert parse_threshold("layer:5%") == ("layer_ms", 0.05)


# --- a gate that cannot fail is a defect --------------------------------------------------------

def _empty(path, header=True):
    import json

    from cutlass_wsp.sweep.results import new_header

    path.write_text(json.dumps(new_header()) + "\n" if header else "")
    return str(path)


@pytest.mark.parametrize("header", [True, False], ids=["header-only", "zero-bytes"])
def test_cli_empty_new_file_compares_nothing_and_fails(tmp_path, capsys, header):
    base = write(tmp_path / "base.jsonl", [row("a", 1.0), row("b", 1.0)])
    new = _empty(tmp_path / "new.jsonl", header)
    assert main(["compare", base, new]) == 2
    assert main(["compare", base, new, "--allow-missing"]) == 2
    captured = capsys.readouterr()
    assert "no regression" not in captured.out
    lines = captured.err.splitlines()
    assert lines == [f"cutlass-wsp compare: error: nothing compared: {new} has no rows (compare two files that "
                     "measured the same points)"] * 2


def test_cli_files_with_no_point_in_common_fail(tmp_path, capsys):
    base = write(tmp_path / "base.jsonl", [row("a", 1.0), row("b", 1.0)])
    new = write(tmp_path / "new.jsonl", [row("c", 1.0)])
    assert main(["compare", base, new]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"cutlass-wsp compare: error: nothing compared: {base} (2 points) and {new} (1 point) "
                           "have no point in common (compare two files that measured the same points)")


def test_cli_points_of_base_missing_from_new_fail_unless_allowed(tmp_path, capsys):
    base = write(tmp_path / "base.jsonl", [row("a", 1.0), row("b", 1.0), row("c", 1.0)])
    new = write(tmp_path / "new.jsonl", [row("a", 1.0), row("new-only", 1.0)])
    assert main(["compare", base, new]) == 1
    out = capsys.readouterr().out
    assert "no regression" not in out
    assert out.splitlines()[-1] == ("MISSING: 2 point(s) of BASE are not in NEW (measure them into NEW, or pass "
                                    "--allow-missing to gate on the 1 common point only)")
    assert main(["compare", base, new, "--allow-missing"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "no regression (2 point(s) of BASE not in NEW, allowed by --allow-missing)"
    # points only in NEW never fail the gate
    subset = write(tmp_path / "subset.jsonl", [row("a", 1.0)])
    assert main(["compare", subset, new]) == 0


# --- one file of several GPUs (a sweep over a Dask cluster of several GPU types) -------------------

def test_a_file_of_several_gpus_is_compared_gpu_by_gpu():
    base = [row("a", 1.0, gpu="GPU-A"), row("a", 2.0, gpu="GPU-B"), row("b", 1.0, gpu="GPU-B")]
    new = [row("a", 2.0, gpu="GPU-A"), row("a", 2.0, gpu="GPU-B"), row("b", 1.0, gpu="GPU-B")]
    result = compare(base, new)
    by = {(e.gpu, e.key): e.verdict for e in result.entries}
    # the same key on two GPUs is two points: GPU-A's got slower, GPU-B's did not move
    assert by == {("GPU-A", "a"): "slower", ("GPU-B", "a"): "same", ("GPU-B", "b"): "same"}
    assert result.gpus == ["GPU-A", "GPU-B"]
    assert result.geomean_ratio("GPU-B") == pytest.approx(1.0) and result.geomean_ratio("GPU-A") == pytest.approx(2.0)


def test_a_gpu_only_one_file_has_is_only_in_that_file_not_refused():
    base = [row("a", 1.0, gpu="GPU-A"), row("a", 1.0, gpu="GPU-B")]
    result = compare(base, [row("a", 1.0, gpu="GPU-A")])
    assert [(e.gpu, e.verdict) for e in result.entries] == [("GPU-A", "same")]
    assert result.only_base == ["a [GPU-B]"] and result.only_new == []


def test_pairing_across_gpus_needs_one_gpu_on_each_side():
    base = [row("a", 1.0, gpu="GPU-A"), row("a", 1.0, gpu="GPU-B")]
    with pytest.raises(InputError, match="BASE holds GPU-A, GPU-B"):
        compare(base, [row("a", 1.0, gpu="GPU-C")], allow_different_gpu=True)


def test_rows_without_a_gpu_pair_with_the_other_files_one_gpu():
    assert compare([row("a", 1.0, gpu=None)], [row("a", 1.0)]).entries[0].verdict == "same"


def test_cli_splits_a_file_of_several_gpus(tmp_path, capsys):
    base = write(tmp_path / "base.jsonl", [row("a", 1.0, gpu="GPU-A"), row("a", 1.0, gpu="GPU-B")])
    new = write(tmp_path / "new.jsonl", [row("a", 1.0, gpu="GPU-A"), row("a", 1.5, gpu="GPU-B")])
    assert main(["compare", base, new]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["gpu", "key"]
    assert any(line.split()[:2] == ["GPU-B", "a"] and line.endswith("slower") for line in lines)
    assert "GPU-A: 1 points, 0 regressed" in out and "GPU-B: 1 points, 1 regressed" in out
