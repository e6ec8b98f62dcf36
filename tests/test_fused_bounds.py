"""The bound model of fused Winograd layers (cutlass_wsp/fused_bounds.py) and its table (bench/fused_bounds.py)."""

from __future__ import annotations

import json

import pytest

from bench_scripts import load_bench_script
from cutlass_wsp.errors import InputError
from cutlass_wsp.fused_bounds import (Design, Hopper, best_bound, chunk_cost, designs, instructions_per_warp,
                                      layer_bound, lines_read, pixels_read_per_tile, transform_ops)
from cutlass_wsp.layers import Layer

CONV4_2 = Layer("vgg16", "vgg16.conv4_2", 512, 512, 28, 28)
GEN4 = Design(4, row_groups=2, col_groups=1, filters=32)


def test_lines_read_come_from_the_transform_matrix():
    # F(2,3): V's rows 0, 1 read patch rows 0-2 and rows 2, 3 read 1-3 (generation 4's "3 of the 4 patch rows");
    # one row alone reads two
    assert lines_read(4, 1) == 4 and lines_read(4, 2) == 6 and lines_read(4, 4) == 8
    # F(4,3): B^T's first row reads rows 0, 2, 4, its last 1, 3, 5, the middle four 1-4
    assert lines_read(6, 1) == 6 and lines_read(6, 2) == 10 and lines_read(6, 3) == 14 and lines_read(6, 6) == 22
    assert pixels_read_per_tile(GEN4) == 24
    with pytest.raises(InputError, match="divisor"):
        lines_read(6, 4)


def test_generation_4s_chunk_counts_match_its_kernel():
    # docs/fused.md: per chunk 384 conflict-free load wavefronts, U read by wgmma 128, TMA (576 pixels) + bulk
    # writes 272, for 256 cycles of tensor work
    c = chunk_cost(GEN4, 576)
    assert (c.tensor_cycles, c.transform_read, c.u_read) == (256, 384, 128)
    assert c.region_write + c.u_write == 272
    assert c.l2_bytes == 576 * 32 + 16 * 32 * 32


def test_the_transform_and_issue_counts_come_from_the_matrices_and_match_generation_4():
    # generation 4: its two V rows of F(2,3) from 3 patch rows, rows first: 8 column-pass and 8 row-pass adds per tile
    # and packed half2 (64 HADD2 per thread for 2 tiles x 2 half2), 8 first-pass results (32 SEL), 12 pixels (24 LDS)
    assert transform_ops(4, (0, 1), (0, 1, 2, 3)) == (16, 8)
    assert instructions_per_warp(GEN4) == 286                  # calibrated on its SASS / Nsight Compute count
    assert chunk_cost(GEN4, 576).issue_cycles == 8 * 286 / 4   # 8 warps at 4 per cycle: 2.2x the tensor cycles
    # F(4,3)'s rows need multiplies (coefficients 4, 5, 2): more operations per position than F(2,3)'s adds
    ops4, _ = transform_ops(4, (0,), (0,))
    ops6, _ = transform_ops(6, (0,), (0,))
    assert ops6 > ops4
    # wider N per transform: fewer instructions per FMA (one column of V per warpgroup, a cluster pair, N = 88)
    pair = Design(4, 1, 4, 88, cluster=2)
    fma = lambda d: d.positions_per_group * d.filters   # noqa: E731
    assert instructions_per_warp(pair) / fma(pair) < 0.6 * instructions_per_warp(GEN4) / fma(GEN4)
    # V in shared memory: not modelled
    assert chunk_cost(Design(4, 2, 1, 32, shared_v=True), 576).issue_cycles == 0


def test_the_register_file_decides_which_designs_exist():
    assert GEN4.why_not() is None and GEN4.regs_per_thread() == 128 + 4 + 64
    # one warpgroup holding all 36 positions of F(4,3) at N = 32: 576 accumulators per thread
    assert "registers per thread" in Design(6, 1, 1, 32).why_not()
    # three warpgroups at 200 registers overflow the 64K register file
    assert Design(6, 3, 1, 16, overhead=100).regs_per_thread() == 200
    assert "register file" in Design(6, 3, 1, 16, overhead=100).why_not()
    assert Design(6, 4, 1, 16).why_not().startswith("the groups")
    ps = {d.p for d in designs(6)}
    assert ps == {6} and all(d.why_not() is None for d in designs(4))


def test_a_layer_bound_is_at_least_its_tensor_time_and_multicast_only_lowers_l2():
    hw = Hopper()
    b = layer_bound(GEN4, CONV4_2, 32, hw)
    fmas = 16 * 512 * 512 * 32 * 14 * 14          # p^2 n c T
    assert b.tensor_s >= fmas / (hw.fma_per_clk * hw.sms * hw.clock_hz) * (1 - 1e-9)
    one, two = chunk_cost(GEN4, 576), chunk_cost(Design(4, 2, 1, 32, mcast=2), 576)
    assert two.l2_bytes == one.l2_bytes - 576 * 32 / 2 and two.port_cycles == one.port_cycles
    assert layer_bound(Design(4, 2, 1, 32, mcast=2), CONV4_2, 32, hw).l2_s < b.l2_s
    slow = layer_bound(GEN4, CONV4_2, 32, Hopper(l2_Bps=hw.l2_Bps / 2))
    assert slow.l2_s == pytest.approx(2 * b.l2_s)
    assert b.seconds == max(b.tensor_s, b.port_s, b.l2_s, b.issue_s) and b.issue_s > b.tensor_s
    # at generation 4's measured 1.33 instructions per cycle, issue alone is most of its measured 0.359 ms
    assert 0.3e-3 < layer_bound(GEN4, CONV4_2, 32, Hopper(issue_per_clk=1.33)).issue_s < 0.359e-3
    # the family's best is never above any one of its designs
    assert best_bound(CONV4_2, 32, 4).seconds <= b.seconds


def test_row_pruning_in_wide_blocks_divides_the_work_items():
    # WSP-RB 0.7 in generation 4's blocks of 96: the same chunk as dense (32 packed rows), 6 filter blocks of 512
    # instead of 16, so the same rectangle's steps fall by 16 / 6
    wide = Design(4, 2, 1, 32, kept=1 / 3)
    assert wide.block_filters == 96 and wide.why_not() is None and "32 of 96 rows kept" in wide.label()
    assert chunk_cost(wide, 576) == chunk_cost(GEN4, 576)
    dense, pruned = layer_bound(GEN4, CONV4_2, 32), layer_bound(wide, CONV4_2, 32)
    assert pruned.seconds <= dense.seconds * 6 / 16 * (1 + 1e-9)
    assert Design(4, 2, 1, 32, kept=0).why_not().startswith("the kept share")
    assert best_bound(CONV4_2, 32, 4, kept=0.3).seconds <= pruned.seconds


def test_bounds_table_reads_the_measured_rows(tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps(r) for r in [
        {"layer": "vgg16:conv4_2", "impl": "cudnn", "median_ms": 0.16},
        {"layer": "vgg16:conv4_2", "impl": "p4 gen4 dense", "median_ms": 0.36},
        {"layer": "vgg16:conv4_2", "impl": "p4 gen4 wsp-rb", "ratio": 0.7, "median_ms": 0.2},
        {"layer": "vgg16:conv4_2", "impl": "p4 gen4 wsp-rb", "ratio": 0.7, "median_ms": 0.19},   # the fastest counts
        {"layer": "vgg16:conv4_2", "impl": "p4 gen4 wsp-rb", "ratio": 0.9, "median_ms": 0.1}]) + "\n")
    mod = load_bench_script("fused_bounds")
    assert mod.main(["--rows", str(rows), "--nets", "vgg16"]) == 0
    out = capsys.readouterr().out
    dense, pruned = out.split("WSP-RB 0.7 (p = 4)")
    line = next(x for x in dense.splitlines() if x.startswith("| vgg16:conv4_2"))
    assert "0.360 (0.44)" in line and "L2 -> SM" in line
    line = next(x for x in pruned.splitlines() if x.startswith("| vgg16:conv4_2"))
    assert "0.190 (0.84)" in line and "32 of 96 rows kept" in pruned
    assert dense.strip().splitlines()[-1].startswith("| geomean") and out.splitlines()[-1].startswith("| geomean")
    for argv, msg in ((["--rows", str(tmp_path / "missing.jsonl")], "cannot read the timed rows"),
                      (["--rows", str(rows), "--ratio", "1"], "use a pruning ratio in [0, 1)"),
                      (["--rows", str(rows), "--ipc", "5"], "between 0 and 4 warp instructions per cycle"),
                      (["--rows", str(rows), "--nets", "resnet18"], "pass the nets the rows measured")):
        assert mod.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0]


def test_the_load_conflict_no_column_order_avoids_matches_the_bank_model():
    """A warpgroup making F(2,3)'s columns 0 or 3 alone reads input columns of one parity: 2 wavefronts per ideal
    one whatever the order (generation 5's columns, cutlass_wsp/fused_banks); blocks of columns, and F(4,3)'s
    columns other than the first and last, reach all four bank groups."""
    from cutlass_wsp.fused_banks import gen5_load_wavefronts, pick_rectangle, tile_pixels
    from cutlass_wsp.fused_bounds import load_conflict, read_wavefronts_per_tile

    w = tile_pixels(*pick_rectangle(32, 14, 14))
    for c, (j0, j1) in enumerate([(0, 2), (1, 2), (2, 1), (3, 1)]):
        got, ideal = gen5_load_wavefronts(w, j0, j1)
        assert load_conflict(4, (c,)) == got // ideal
    assert load_conflict(4, (0, 1)) == load_conflict(4, (0, 1, 2, 3)) == 1
    assert [load_conflict(6, (c,)) for c in range(6)] == [2, 1, 1, 1, 1, 2]
    # generation 4 (all four columns per warpgroup) is unchanged: 24 pixels per tile, one wavefront per 4
    assert read_wavefronts_per_tile(GEN4) == 24 * 32 / 128
    # generation 5: per CTA two warpgroups of one column each (8 pixels per tile), one of them 2-way
    g5 = Design(4, row_groups=1, col_groups=4, filters=64, cluster=2, mcast=2)
    assert read_wavefronts_per_tile(g5) == (4 * (2 * 2 + 2 * 1 + 2 * 1 + 2 * 2)) / 2 * 32 / 128 == 6
    assert chunk_cost(g5, 576).transform_read == 64 * 6 == 384


def test_two_k_steps_per_chunk_share_the_fixed_instructions_and_the_loads():
    """Generation 5 at 32 channels a chunk: per 16 channels the wgmmas and the transform are the same, the fixed part
    (ISSUE_FIXED) and the loads (one 16-byte load per pixel for both steps) are halved: 210 -> 139 instructions per
    warp. Bytes per channel do not change: the port and L2 terms stay, only the issue term moves. Each further step
    holds its A fragments and its half of the pixels: 196 -> 244 registers (the build: 197 -> 240)."""
    g5 = Design(4, row_groups=1, col_groups=4, filters=64, cluster=2, mcast=2)
    k32 = Design(4, row_groups=1, col_groups=4, filters=64, cluster=2, mcast=2, k_steps=2)
    assert instructions_per_warp(g5) == 126 + 4 * 4 + 4 + 2 * 2 * (8 + 4) + 2 * 8 == 210
    assert instructions_per_warp(k32) == (126 + 2 * (4 * 4 + 4 + 2 * 2 * (8 + 4)) + 2 * 8) / 2 == 139
    assert (g5.regs_per_thread(), k32.regs_per_thread()) == (196, 244) and k32.why_not() is None
    hw = Hopper(issue_per_clk=2.0)
    a, b = layer_bound(g5, CONV4_2, 32, hw), layer_bound(k32, CONV4_2, 32, hw)
    assert (a.port_s, a.l2_s, a.tensor_s) == (b.port_s, b.l2_s, b.tensor_s)
    assert b.issue_s == pytest.approx(a.issue_s * 139 / 210)
    assert a.limit == "issue" and b.limit == "shared-memory port"
    assert Design(4, 1, 4, 64, cluster=2, k_steps=3).why_not() == "1 or 2 k16 steps per chunk"
