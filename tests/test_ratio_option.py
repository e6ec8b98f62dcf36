"""One parser for pruning ratios on the command line: 0.7 or 70%, 0 < ratio < 1, one line otherwise;
bench, sweep, plot and plan all use it."""

from __future__ import annotations

from pathlib import Path

import pytest

from cutlass_wsp.cli import main
from cutlass_wsp.commands.sweep_options import from_args
from cutlass_wsp.commands.values import parse_ratio, parse_ratios
from cutlass_wsp.errors import InputError

SAMPLE = Path(__file__).parent / "data" / "results_sample.jsonl"


@pytest.mark.parametrize("text,value", [("0.7", 0.7), ("70%", 0.7), (" 70 % ", 0.7), ("0.5", 0.5), ("5%", 0.05),
                                        ("99.5%", 0.995)])
def test_parse_ratio_accepts_a_fraction_or_a_percentage(text, value):
    assert parse_ratio(text) == pytest.approx(value)


@pytest.mark.parametrize("text,why", [("lots", "not a number"), ("", "not a number"), ("70", "outside"),
                                      ("1", "outside"), ("100%", "outside"), ("0", "outside"), ("-5%", "outside"),
                                      ("nan", "outside"), ("inf", "outside")])
def test_parse_ratio_refuses_anything_else_in_one_line(text, why):
    with pytest.raises(InputError) as e:
        parse_ratio(text, option="--ratio")
    msg = str(e.value)
    assert why in msg and "--ratio" in msg and "0.7 or 70%" in msg and "\n" not in msg


def test_parse_ratios_reads_a_comma_list():
    assert parse_ratios("0.5, 70%,0.9") == pytest.approx((0.5, 0.7, 0.9))
    with pytest.raises(InputError, match="'1.5'.*outside"):
        parse_ratios("0.5,1.5")


@pytest.fixture
def fake_measure(monkeypatch):
    """bench without a GPU: measure_one returns an ok row for the point it was given."""
    from cutlass_wsp.sweep import session
    from cutlass_wsp.sweep.results import make_row

    seen = []

    def measure_one(point, **kw):
        seen.append(point)
        return make_row(point, "ok", median_ms=1.0)

    monkeypatch.setattr(session, "measure_one", measure_one)
    return seen


def test_bench_accepts_a_percentage_like_sweep(fake_measure, capsys):
    assert main(["bench", "vgg16:conv4_2", "--pattern", "wsp-r", "--ratio", "70%"]) == 0
    assert fake_measure[0].ratio == pytest.approx(0.7)
    assert fake_measure[0].key.endswith("/wsp-r/cutlass/r0.7/balanced")
    assert from_args(["--ratio", "70%"]).ratios == from_args(["--ratio", "0.7"]).ratios == (0.7,)


@pytest.mark.parametrize("argv", [
    ["bench", "vgg16:conv4_2", "--pattern", "wsp-r", "--ratio", "1.5"],
    ["sweep", "--dry-run", "--ratio", "0.5,1.5"],
    ["plot", str(SAMPLE), "--ratio", "1.5"],
    ["plan", str(SAMPLE), "--ratio", "1.5"],
])
def test_every_command_refuses_a_bad_ratio_with_the_same_line(argv, fake_measure, capsys, tmp_path):
    if argv[0] == "plot":
        argv = argv + ["--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--ratio '1.5' is outside 0 < ratio < 1 (write the fraction pruned as 0.7 or 70%)" in err
    assert fake_measure == []
