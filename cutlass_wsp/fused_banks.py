"""Shared-memory bank conflicts of the fused kernels' pixel loads (generations 4 and 5), from their addressing.

Both generations read the input region's 32-byte pixels (16 fp16 channels) with one 8-byte load per thread: lane
4g + q reads channels 4q .. 4q + 3 of tile g's pixel, and every lane of a load reads the same relative pixel (patch
row, patch column) of its own tile. A 64-bit load is served per half-warp (4 tiles x 4 lanes = 128 bytes, one
wavefront when every bank holds one word). Tiles start on even pixels, so a half-warp's tiles fall in only 2 of the
four 32-byte bank groups of a 128-byte period. The kernels spread them by giving every second tile of a half-warp in
the same group another column order: generation 4 reads its 4 patch columns rotated by one (load slot i reads
column (i + 1) % 4), generation 5 swaps its two columns where they are adjacent. This module mirrors that rule and
the host's tile rectangle (templates/_fused_ws_host.cu.j2's pick_rectangle) and counts the wavefronts, so the
templates' choice can be checked without a GPU (docs/fused.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

PIXEL_BYTES = 32      # 16 fp16 channels of a raw-ring pixel (RAW_CH = 16)
BANK_BYTES = 4
BANKS = 32
LOAD_BYTES = 8        # one thread's 4 channels
TILES = 64            # tiles per CTA: wgmma M
RAW_PIX = 576         # the largest input region a rectangle may need (WS_RAW_PIX)


def pick_rectangle(batch: int, th: int, tw: int, *, m: int = 2, tiles: int = TILES,
                   raw_pix: int = RAW_PIX) -> tuple[int, int, int]:
    """(BI, BY, BX): images x tile rows x tile columns of a CTA's rectangle, as the kernels' host picks it (the fewest
    rectangles over the layer whose region fits; ties to the wider)."""
    best, out = -1, (0, 0, 0)
    by = 1
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


def tile_pixels(BI: int, BY: int, BX: int, *, m: int = 2) -> list[int]:
    """Each tile's first patch pixel in the region (the kernels' tiles[t].w), tiles in the kernels' order."""
    RH, RW = BY * m + 2, BX * m + 2
    return [(bi * RH + by * m) * RW + bx * m for bi in range(BI) for by in range(BY) for bx in range(BX)]


def rotated(w: Sequence[int], t: int) -> bool:
    """Whether tile t reads its columns in the second order: an odd number of earlier tiles of its half-warp (tile
    rows g of a warp's 8, half-warps g 0-3 and 4-7) start in the same 32-byte bank group."""
    base, g = t - t % 8, t % 8
    return sum((w[base + j] ^ w[t]) & 3 == 0 for j in range(g & ~3, g)) % 2 == 1


def wavefronts(byte_addresses: Sequence[int]) -> int:
    """Wavefronts of one 8-byte load of a warp: per half-warp, the most distinct 4-byte words one bank serves."""
    total = 0
    for h in (0, 16):
        per_bank: dict[int, set[int]] = {}
        for a in byte_addresses[h:h + 16]:
            for word in (a // BANK_BYTES, a // BANK_BYTES + 1):
                per_bank.setdefault(word % BANKS, set()).add(word)
        total += max(len(s) for s in per_bank.values())
    return total


def load_wavefronts(w: Sequence[int], order: Callable[[int], Sequence[int]]) -> int:
    """Wavefronts of one patch row's loads over the CTA's warp row-groups (8 consecutive tiles each: a warp's tile
    rows g), where order(t) lists the patch columns tile t reads, one per load slot. Patch rows add the same offset
    to every lane: left out."""
    total = 0
    for t0 in range(0, len(w), 8):
        cols = [order(t0 + g) for g in range(8)]
        for s in range(len(cols[0])):
            total += wavefronts([(w[t0 + lane // 4] + cols[lane // 4][s]) * PIXEL_BYTES + (lane % 4) * LOAD_BYTES
                                 for lane in range(32)])
    return total


def ideal_wavefronts(w: Sequence[int], slots: int) -> int:
    """Two wavefronts (256 bytes) per 8-byte load of a warp."""
    return slots * 2 * len(w) // 8


def gen4_load_wavefronts(w: Sequence[int], *, rotate: bool = True) -> tuple[int, int]:
    """(wavefronts, ideal) of generation 4's 4 column slots of one patch row over the rectangle's tiles: slot i reads
    column i, or (i + 1) % 4 for a rotated tile (rawch 16)."""
    def order(t):
        r = rotate and rotated(w, t)
        return [(i + r) % 4 for i in range(4)]
    return load_wavefronts(w, order), ideal_wavefronts(w, 4)


def gen5_load_wavefronts(w: Sequence[int], j0: int, j1: int, *, swap: bool = True) -> tuple[int, int]:
    """(wavefronts, ideal) of generation 5's two loads (columns j0, j1) of one patch row over the rectangle's tiles;
    a rotated tile swaps them where they are adjacent (swap)."""
    adjacent = swap and abs(j0 - j1) == 1
    return (load_wavefronts(w, lambda t: (j1, j0) if adjacent and rotated(w, t) else (j0, j1)),
            ideal_wavefronts(w, 2))
