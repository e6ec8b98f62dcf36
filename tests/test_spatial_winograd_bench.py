"""bench/spatial_winograd_sparsity.py's host-side parts (the full table is a CPU bench run by hand)."""

from __future__ import annotations

import pytest
from bench_scripts import load_bench_script

from cutlass_wsp.weights import he_spatial_filters


@pytest.fixture(scope="module")
def bench():
    return load_bench_script("spatial_winograd_sparsity")


def test_layer_row(bench):
    r = bench.layer_row(he_spatial_filters((32, 16), seed=0), 2, 0.63, "support")
    assert r["size"] == 16 * 32 * 16 and r["zeros"] == round(0.63 * r["size"])
    assert 0 < r["transferred"] < r["sparsity"] == pytest.approx(0.63, abs=1e-4)
    assert 0 < r["err_w_only"] < r["err_wwp"]                 # the importance factors help at p = 4
    k = bench.layer_row(he_spatial_filters((32, 16), seed=0), 4, 0.5, "kernel", spatial_ratio=0.5)
    assert k["transferred"] == pytest.approx(k["sparsity"])


def test_bad_network_is_one_line(bench, capsys):
    assert bench.main(["--nets", "alexnet", "--p", "4", "--targets", "0.5"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("spatial_winograd_sparsity: ")
