"""Shared-memory bank conflicts of the fused kernels' pixel loads (generations 4 and 5), from their addressing.

Both generations read the input region's pixels (16 fp16 channels, 32 bytes; generation 5 also 32 channels, 64
bytes) with one load per thread and pixel: lane 4g + q reads its quarter of tile g's pixel (8 or 16 bytes), and every
lane of a load reads the same relative pixel (patch row, patch column) of its own tile. Shared memory serves a load
128 bytes per phase (a half-warp's 4 tiles of 8-byte loads, a quarter-warp's 2 tiles of 16-byte ones; one wavefront
when every bank holds one word). Tiles start on even pixels, so a phase's tiles fall in only half of the pixel slots
of a 128-byte period. The kernels spread them by giving every second tile of a phase in the same slot another column
order: generation 4 reads its 4 patch columns rotated by one (load slot i reads column (i + 1) % 4), generation 5
swaps its two columns where they are adjacent. This module mirrors that rule and the host's tile rectangle
(templates/_fused_ws_host.cu.j2's pick_rectangle) and counts the wavefronts, so the templates' choice can be checked
without a GPU (docs/fused.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

PIXEL_BYTES = 32      # 16 fp16 channels of a raw-ring pixel (RAW_CH = 16; generation 5 at 32 channels: 64)
BANK_BYTES = 4
BANKS = 32
PHASE_BYTES = 128     # what shared memory serves in one wavefront
TILES = 64            # tiles per CTA: wgmma M
RAW_PIX = 576         # the largest input region a rectangle may need (WS_RAW_PIX)


def pick_rectangle(batch: int, th: int, tw: int, *, m: int = 2, tiles: int = TILES,
                   raw_pix: int = RAW_PIX, vpair: bool = False) -> tuple[int, int, int]:
    """(BI, BY, BX): images x tile rows x tile columns of a CTA's rectangle, as the kernels' host picks it (the fewest
    rectangles over the layer whose region fits; ties to the wider); `vpair` (generation 5's vertical pairs): an even
    number of tile rows."""
    best, out = -1, (0, 0, 0)
    by = 2 if vpair else 1
    while by <= tiles:
        bx = 1
        while bx * by <= tiles:
            bi = tiles // (by * bx)
            if (by * m + 2) * (bx * m + 2) * bi <= raw_pix:
                n = -(-batch // bi) * -(-th // by) * -(-tw // bx)
                if best < 0 or n < best or (n == best and bx > out[2]):
                    best, out = n, (bi, by, bx)
            bx *= 2
        by *= 2
    return out


def tile_order(BI: int, BY: int, BX: int, *, vpair: bool = False) -> list[tuple[int, int, int]]:
    """(image, tile row, tile column) of the rectangle for each M row t, as the kernels' tile table orders them: in
    order, or with `vpair` (generation 5) t = 16 w4 + 8 tt + g holding tile row tt of pair 8 w4 + g, the pairs (image,
    pair of tile rows, column) in order."""
    if not vpair:
        return [(bi, by, bx) for bi in range(BI) for by in range(BY) for bx in range(BX)]
    half, out = BY // 2, []
    for t in range(BI * BY * BX):
        pr, tt = (t >> 4) * 8 + (t & 7), (t >> 3) & 1
        bi, rem = divmod(pr, half * BX)
        out.append((bi, 2 * (rem // BX) + tt, rem % BX))
    return out


def tile_pixels(BI: int, BY: int, BX: int, *, m: int = 2, vpair: bool = False, planes: bool = False) -> list[int]:
    """Each tile's first patch pixel in the region (the kernels' tiles[t].w), tiles in the kernels' order; with
    `planes` (generation 5's region "planes", m = 2) its pixel in the plane of the region's even columns, whose rows
    are PW = BX + 1 pixels."""
    RH, RW = BY * m + 2, BX * m + 2
    if planes:
        return [(bi * RH + by * m) * (BX + 1) + bx for bi, by, bx in tile_order(BI, BY, BX, vpair=vpair)]
    return [(bi * RH + by * m) * RW + bx * m for bi, by, bx in tile_order(BI, BY, BX, vpair=vpair)]


def plane_offset(j: int, plane_pixels: int) -> int:
    """Region "planes": patch column j of a tile is pixel j // 2 past its own in plane j % 2 (plane_pixels apart)."""
    return (j & 1) * plane_pixels + (j >> 1)


def rotated(w: Sequence[int], t: int, pixel_bytes: int = PIXEL_BYTES) -> bool:
    """Whether tile t reads its columns in the second order: an odd number of earlier tiles of its phase (tile rows
    g of a warp's 8; a load of pixel_bytes / 4 per lane is served PHASE_BYTES at a time) start in the same pixel slot
    of a 128-byte period (the kernels' TPH and PXG)."""
    # tiles per phase (4 lanes, each a quarter pixel) and pixels per 128-byte period: both 128 / pixel_bytes
    tph = pxg = PHASE_BYTES // pixel_bytes
    base, g = t - t % 8, t % 8
    return sum((w[base + j] ^ w[t]) & (pxg - 1) == 0 for j in range(g & ~(tph - 1), g)) % 2 == 1


def wavefronts(byte_addresses: Sequence[int], load_bytes: int = 8) -> int:
    """Wavefronts of one load of a warp (load_bytes per lane): per phase of PHASE_BYTES / load_bytes lanes, the
    most distinct 4-byte words one bank serves."""
    lanes = PHASE_BYTES // load_bytes
    total = 0
    for h in range(0, 32, lanes):
        per_bank: dict[int, set[int]] = {}
        for a in byte_addresses[h:h + lanes]:
            for word in range(a // BANK_BYTES, (a + load_bytes) // BANK_BYTES):
                per_bank.setdefault(word % BANKS, set()).add(word)
        total += max(len(s) for s in per_bank.values())
    return total


def load_wavefronts(w: Sequence[int], order: Callable[[int], Sequence[int]], pixel_bytes: int = PIXEL_BYTES) -> int:
    """Wavefronts of one patch row's loads over the CTA's warp row-groups (8 consecutive tiles each: a warp's tile
    rows g), where order(t) lists the patch columns tile t reads, one per load slot; lane q reads the q-th quarter of
    the pixel. Patch rows add the same offset to every lane: left out."""
    load = pixel_bytes // 4
    total = 0
    for t0 in range(0, len(w), 8):
        cols = [order(t0 + g) for g in range(8)]
        for s in range(len(cols[0])):
            total += wavefronts([(w[t0 + lane // 4] + cols[lane // 4][s]) * pixel_bytes + (lane % 4) * load
                                 for lane in range(32)], load)
    return total


def ideal_wavefronts(w: Sequence[int], slots: int, pixel_bytes: int = PIXEL_BYTES) -> int:
    """A warp's load moves 32 quarter pixels: 8 x pixel_bytes / 128 wavefronts at best."""
    return slots * (8 * pixel_bytes // PHASE_BYTES) * len(w) // 8


def gen4_load_wavefronts(w: Sequence[int], *, rotate: bool = True) -> tuple[int, int]:
    """(wavefronts, ideal) of generation 4's 4 column slots of one patch row over the rectangle's tiles: slot i reads
    column i, or (i + 1) % 4 for a rotated tile (rawch 16)."""
    def order(t):
        r = rotate and rotated(w, t)
        return [(i + r) % 4 for i in range(4)]
    return load_wavefronts(w, order), ideal_wavefronts(w, 4)


def gen5_load_wavefronts(w: Sequence[int], j0: int, j1: int, *, swap: bool = True,
                         channels: int = 16, vpair: bool = False, plane_pixels: int = 0) -> tuple[int, int]:
    """(wavefronts, ideal) of generation 5's two loads (columns j0, j1) of one patch row over the rectangle's tiles,
    `channels` per chunk (16: 32-byte pixels, 8-byte loads; 32: 64-byte pixels, 16-byte loads); a rotated tile swaps
    them where they are adjacent (swap). With `vpair` the second tile of each thread (M rows 8-15 of a warp's 16) loads
    nothing of its own: its rows come with its pair's (per patch row, only the first tiles' warp rows count). With
    `plane_pixels` (region "planes": w from tile_pixels(planes=True), the planes that many pixels apart) column j is
    read at plane_offset(j): every column's two loads then sit in different pixel slots, so every column swaps (what
    a rectangle one tile wide needs: its tiles all start in one slot)."""
    pb = 2 * channels
    adjacent = swap and (abs(j0 - j1) == 1 or bool(plane_pixels))
    if vpair:   # the warp rows g of tiles 16 w4 + g, which load for both tiles of their pairs
        w = [x for t0 in range(0, len(w), 16) for x in w[t0:t0 + 8]]
    o0, o1 = (plane_offset(j0, plane_pixels), plane_offset(j1, plane_pixels)) if plane_pixels else (j0, j1)
    return (load_wavefronts(w, lambda t: (o1, o0) if adjacent and rotated(w, t, pb) else (o0, o1), pb),
            ideal_wavefronts(w, 2, pb))
