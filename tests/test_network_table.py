"""bench/network_table.py: the paper's Table 1 beside our network times, from the committed H100 results."""

from __future__ import annotations

from pathlib import Path

from bench_scripts import load_bench_script

RESULTS = Path(__file__).resolve().parents[1] / "results"
FILES = [str(RESULTS / "sweep-h100-b1.jsonl"), str(RESULTS / "sweep-h100-b32.jsonl")]


def _rows(md: str) -> dict[str, list[str]]:
    out = {}
    for ln in md.splitlines():
        if ln.startswith("| ") and not ln.startswith("| method"):
            cells = [c.strip() for c in ln.strip("|").split("|")]
            out.setdefault(cells[0], []).append(cells[1:])
    return out


def test_table1_puts_the_papers_numbers_beside_ours(capsys):
    mod = load_bench_script("network_table")
    assert mod.main(FILES) == 0
    md = capsys.readouterr().out
    rows = _rows(md)
    head = md.splitlines()[0]
    assert "paper: 2080 Ti ms" in head and "NVIDIA H100 80GB HBM3 batch 1 ms" in head and "batch 32 ms" in head
    assert rows["ResNet-18 dense (ours: cuDNN's dense conv)"][0] == ["—", "—", "7.270", "1.00×", "—", "0.138", "1.00×",
                                                                   "0.292", "1.00×"]
    wsp_c = rows["WSP-C (ours: unbalanced, the paper's WSP)"]
    assert [r[2] for r in wsp_c] == ["3.389", "2.357", "1.864"] and [r[4] for r in wsp_c] == [
        "0.4 every layer", "0.6 every layer", "0.7 every layer"]
    assert wsp_c[0][5] == "not measured" and wsp_c[2][5] == "0.236"      # the H100 sweep has 0.5/0.7/0.9 only
    assert rows["TAS"][0][5] == "not re-run (another paper's filter pruning)"
    assert rows["ABWSP (ours)"][0][5:7] == ["0.169", "0.82×"]
    assert rows["fused WSP-RB (ours)"][0][5] == "not measured"
    assert "13 3×3 stride-1 convs (every one pruned)" in md        # ResNet-18's stem is 7×7: not among them
    assert rows["fused FP (ours)"][0][5] == "not measured"                # every method of network_time is a row
    from cutlass_wsp.network_time import METHODS

    labels = {r.split(" (ours")[0] for r in rows} | {"cuDNN dense", "Winograd dense", "WSP-C"}
    assert {m.label for m in METHODS} <= labels


def test_table1_bad_input_is_one_line(capsys):
    mod = load_bench_script("network_table")
    assert mod.main([*FILES, "--ratios", "0.4,0.6"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("network_table: --ratios '0.4,0.6' has 2 ratios") and len(err.splitlines()) == 1
