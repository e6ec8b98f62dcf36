"""The bank-conflict model of the fused kernels' pixel loads (cutlass_wsp/fused_banks.py) against the templates it
mirrors: the host's tile rectangle (compiled from the rendered source with the host C++ compiler) and the column
orders of generations 4 and 5."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from cutlass_wsp.families.fused import cp_desc
from cutlass_wsp.fused_banks import (RAW_PIX, TILES, gen4_load_wavefronts, gen5_load_wavefronts, load_wavefronts,
                                     pick_rectangle, rotated, tile_pixels, wavefronts)
from cutlass_wsp.layers import network
from cutlass_wsp.winograd import tile_grid

# (batch, H, W): the VGG-16 / ResNet-18 layers with c >= 64 at batch 32, and the GPU tests' odd shapes and batches
SHAPES = sorted({(32, l.H, l.W) for net in ("vgg16", "resnet18") for l in network(net) if l.c >= 64}
                | {(b, h, w) for b in (1, 3) for h, w in ((7, 7), (13, 9), (28, 28), (17, 31), (2, 2), (1, 40))})
# F(2,3)'s B^T rows as (+1 at j0, sgn at j1): generation 5's four columns
GEN5_COLUMNS = [(0, 2), (1, 2), (2, 1), (3, 1)]


def test_wavefronts_count_distinct_words_per_bank_per_half_warp():
    assert wavefronts([0] * 32) == 2                                    # a broadcast: one per half-warp
    assert wavefronts([8 * i for i in range(32)]) == 2                  # 2 x 128 contiguous bytes
    assert wavefronts([128 * i for i in range(32)]) == 32               # every lane in banks 0, 1
    # four tiles of a half-warp 64 bytes apart: two of them share each 32-byte bank group
    assert wavefronts([64 * (lane // 4) + 8 * (lane % 4) for lane in range(32)]) == 4


@pytest.fixture(scope="module")
def host_pick_rectangle(tmp_path_factory):
    """The rendered kernels' pick_rectangle, compiled as it is with the host C++ compiler."""
    from cutlass_wsp.kernels.emitter import render

    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no host C++ compiler (c++ or g++) on PATH")
    src = render(cp_desc("fp16"))
    fn = re.search(r"static void pick_rectangle\(.*?\n}\n", src, re.S)[0]
    # generation 5's vertical pairs: the same function from an even tile-row count (vpair_pick)
    fn += re.search(r"static void pick_rectangle\(.*?\n}\n", render(cp_desc("fp16", bc=32, vpair=True)), re.S)[0] \
        .replace("pick_rectangle", "vpair_pick")
    consts = {k: int(re.search(rf"constexpr int {k} = (\d+);", src)[1]) for k in ("BT", "RAW_PIX")}
    consts["MO"] = 2
    d = tmp_path_factory.mktemp("pick")
    (d / "pick.cpp").write_text(
        "#include <cstdio>\n#include <cstdlib>\n"
        + "".join(f"constexpr int {k} = {v};\n" for k, v in consts.items()) + fn
        + "int main(int argc, char** argv) {\n  for (int i = 1; i + 2 < argc; i += 3) {\n"
          "    int BI = 0, BY = 0, BX = 0;\n"
          "    (argv[i][0] == 'v' ? vpair_pick : pick_rectangle)(atoi(argv[i] + (argv[i][0] == 'v')), atoi(argv[i + 1]),"
          " atoi(argv[i + 2]), BI, BY, BX);\n"
          "    printf(\"%d %d %d\\n\", BI, BY, BX);\n  }\n}\n")
    subprocess.run([cxx, "-O1", "-o", str(d / "pick"), str(d / "pick.cpp")], check=True)

    def pick(cases):
        args = [str(x) for c in cases for x in c]
        out = subprocess.run([str(d / "pick"), *args], check=True, capture_output=True, text=True).stdout
        return [tuple(map(int, line.split())) for line in out.splitlines()]
    assert consts == {"BT": TILES, "RAW_PIX": RAW_PIX, "MO": 2}
    return pick


def test_the_rectangle_is_the_hosts(host_pick_rectangle):
    cases = [(b, *tile_grid(h, w, 2)) for b, h, w in SHAPES]
    got = [pick_rectangle(*c) for c in cases]
    assert got == host_pick_rectangle(cases)
    for bi, by, bx in got:
        assert bi * by * bx == TILES and bi * (2 * by + 2) * (2 * bx + 2) <= RAW_PIX
    paired = [pick_rectangle(*c, vpair=True) for c in cases]
    assert paired == host_pick_rectangle([(f"v{b}", th, tw) for b, th, tw in cases])
    assert all(by % 2 == 0 and bi * by * bx == TILES for bi, by, bx in paired)
    assert paired != got and sum(a == b for a, b in zip(paired, got)) > len(got) // 2   # most shapes pick BY >= 2


def test_vertical_pairs_order_the_tiles_so_a_threads_two_share_their_middle_rows():
    """M rows g and g + 8 of each warp's 16 are tile rows 2k and 2k + 1 of one column of one image (the kernel's table),
    every tile once; the pairs' pixel loads keep generation 5's bank pattern per load (the adjacent columns conflict-
    free, 0 and 3 2-way) with 12 loads a chunk instead of 16."""
    from cutlass_wsp.fused_banks import tile_order

    for bi_, by_, bx_ in {pick_rectangle(b, *tile_grid(h, w, 2), vpair=True) for b, h, w in SHAPES}:
        order = tile_order(bi_, by_, bx_, vpair=True)
        assert sorted(order) == sorted(tile_order(bi_, by_, bx_))
        for t in range(64):
            if (t >> 3) & 1 == 0:
                (i0, y0, x0), (i1, y1, x1) = order[t], order[t + 8]
                assert (i1, y1, x1) == (i0, y0 + 1, x0) and y0 % 2 == 0
        w = tile_pixels(bi_, by_, bx_, vpair=True)
        RW = 2 * bx_ + 2
        assert all(w[t + 8] == w[t] + 2 * RW for t in range(64) if (t >> 3) & 1 == 0)
        for j0, j1 in GEN5_COLUMNS:
            got, ideal = gen5_load_wavefronts(w, j0, j1, channels=32, vpair=True)
            assert ideal == 2 * 4 * 32 // 8 and got == (ideal if abs(j0 - j1) == 1 else 2 * ideal), (bi_, by_, bx_, j0)
            # a tile's second (g + 8) row swaps as its first: the epilogue's sign per tile is the loads' swap
            assert all(rotated(w, t, 64) == rotated(w, t + 8, 64) for t in range(64) if (t >> 3) & 1 == 0)


def _rectangles():
    return sorted({pick_rectangle(b, *tile_grid(h, w, 2)) for b, h, w in SHAPES})


def test_generation_4s_rotation_makes_its_loads_conflict_free():
    """docs/fused.md measured 30.7 M wavefronts against 29.1 M ideal with the rotation; without it a 2-way
    conflict."""
    for rect in _rectangles():
        w = tile_pixels(*rect)
        got, ideal = gen4_load_wavefronts(w)
        plain, _ = gen4_load_wavefronts(w, rotate=False)
        assert plain == 2 * ideal, rect
        if rect[2] > 1:   # a rectangle one tile wide puts all of a half-warp's tiles in one bank group
            assert got == ideal, rect


def test_generation_5s_swap_makes_its_adjacent_columns_conflict_free_and_no_order_helps_the_others():
    for rect in _rectangles():
        w = tile_pixels(*rect)
        for j0, j1 in GEN5_COLUMNS:
            got, ideal = gen5_load_wavefronts(w, j0, j1)
            plain, _ = gen5_load_wavefronts(w, j0, j1, swap=False)
            assert plain == 2 * ideal, (rect, j0)
            if abs(j0 - j1) == 1 and rect[2] > 1:
                assert got == ideal, (rect, j0)
            elif abs(j0 - j1) != 1:
                # j0 and j1 = j0 + 2 sit in the same pair of bank groups for tiles on even pixels: swapping them
                # (forcing it on every rotated tile) moves nothing
                forced = load_wavefronts(w, lambda t: (j1, j0) if rotated(w, t) else (j0, j1))
                assert got == forced == 2 * ideal, (rect, j0)


def test_generation_5_at_32_channels_serves_two_tiles_per_phase_and_the_swap_still_spreads_them():
    """64-byte pixels, one 16-byte load per lane: a phase is a quarter-warp, its 2 tiles start in the same half of a
    128-byte period (2-way conflict); the adjacent columns' swap puts them in both halves, the others stay 2-way. The
    kernel's TPH and PXG are the module's phase and slot counts."""
    from cutlass_wsp.kernels.emitter import render

    assert wavefronts([16 * i for i in range(32)], 16) == 4                          # 512 contiguous bytes
    assert wavefronts([128 * (lane // 4) + 16 * (lane % 4) for lane in range(32)], 16) == 8   # 2 tiles 128 B apart
    for rect in _rectangles():
        w = tile_pixels(*rect)
        for j0, j1 in GEN5_COLUMNS:
            got, ideal = gen5_load_wavefronts(w, j0, j1, channels=32)
            plain, _ = gen5_load_wavefronts(w, j0, j1, swap=False, channels=32)
            assert ideal == 2 * 4 * len(w) // 8 and plain == 2 * ideal, (rect, j0)
            assert got == (ideal if abs(j0 - j1) == 1 else 2 * ideal), (rect, j0)
    src = render(cp_desc("fp16", bc=32))
    assert "constexpr int TPH = 128 / (4 * CPI * 2);" in src and "constexpr int PXG = 128 / (RAW_CH * 2);" in src
    assert "for (int j = g & ~(TPH - 1); j < g; ++j) before += ((tiles[t + j].w ^ tiles[t + g].w) & (PXG - 1)) == 0;" \
        in src


def test_the_region_in_planes_makes_every_columns_loads_conflict_free():
    """Region "planes" (64-byte pixels, vertical pairs): every column's two loads are pixels in different halves of a
    128-byte period (a plane is whole periods: RH even), so the swap spreads any phase, columns 0 and 3 too (2-way
    before), and a rectangle one tile wide (VGG-16's and ResNet-18's 14 x 14 layers), whose tiles all start in one
    half. Per CTA and chunk the pixel reads fall from 3/2 of the ideal to the ideal (576 to 384 wavefronts)."""
    from cutlass_wsp.kernels.emitter import render

    seen = set()
    for b, h, w_ in SHAPES:
        bi_, by_, bx_ = pick_rectangle(b, *tile_grid(h, w_, 2), vpair=True)
        plane = bi_ * (2 * by_ + 2) * (bx_ + 1)
        assert plane * 64 % 128 == 0
        w = tile_pixels(bi_, by_, bx_, vpair=True, planes=True)
        before = after = ideal_all = 0
        for j0, j1 in GEN5_COLUMNS:
            got, ideal = gen5_load_wavefronts(w, j0, j1, channels=32, vpair=True, plane_pixels=plane)
            plain, _ = gen5_load_wavefronts(w, j0, j1, channels=32, vpair=True, plane_pixels=plane, swap=False)
            old, _ = gen5_load_wavefronts(tile_pixels(bi_, by_, bx_, vpair=True), j0, j1, channels=32, vpair=True)
            assert got == ideal and plain == (ideal if bx_ > 1 else 2 * ideal), ((bi_, by_, bx_), j0)
            before, after, ideal_all = before + old, after + got, ideal_all + ideal
        assert 2 * before == 3 * ideal_all and after == ideal_all, (bi_, by_, bx_)
        seen.add(bx_ > 1)
    assert seen == {True, False}
    src = render(cp_desc("fp16", bc=32, vpair=True, epi="tma", region="planes"))
    assert "(bi * p.RH + by * MO) * p.PW + bx);" in src and "p.PW = p.RW / 2;" in src
    assert "int off0 = (j0 & 1) * p.plane + (j0 >> 1) * (RAW_CH * 2)" in src


def test_tile_pixels_follow_the_kernels_tile_table():
    # tiles[t].w = (bi * RH + by * MO) * RW + bx * MO, t = (bi * BY + by) * BX + bx
    w = tile_pixels(2, 2, 16)
    RW, RH = 34, 6
    assert len(w) == 64 and w[1] == 2 and w[16] == 2 * RW and w[32] == RH * RW and w[63] == (RH + 2) * RW + 30
    assert all(x % 2 == 0 for rect in _rectangles() for x in tile_pixels(*rect))   # tiles start on even pixels
