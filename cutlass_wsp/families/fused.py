"""The fused Winograd layer: NHWC input -> NHWC output in one launch (templates/fused_sm90.cu.j2).

No X or Y in memory: each CTA loads its tiles' input patches, transforms them in shared memory,
multiplies every Winograd position's weights with tensor cores and applies the output transform to
its accumulators (docs/fused.md). The filter transform stays offline: the host turns the Winograd-domain
weights W[p², n, c] (masked by a pruning pattern) into the kernel's compact form:

  U[block][i][MI][Cpad]   for filter block b (FB output channels) and position i, the rows the position
                          keeps in that block, packed first, zero pad rows after (MI rows in all);
  inv[block][i][FB]       int16: the packed row of (position i, filter f of the block), -1 where pruned;
  mtiles[block][i]        int32: how many 16-row MMA tiles of position i hold a kept row (the kernel
                          skips the rest);
  ckeep[block][i][chunk]  bool: position i multiplies the 16 channels of the chunk (False: its weights are zero;
                          generation 4 built with the chunk map, rs_desc(cmap=True), skips that product).

Dense: every position keeps the block's FB filters (MI = FB). FP: the kept filters, as a dense layer of
n' outputs. WSP-R: each position's kept rows of the block, packed; the padding of each (block, position)
up to a multiple of 16 rows is MMA work that computes zeros: `pad_waste` reports it. WSP-RB (row pruning
balanced per (position, filter block), pruning.py) keeps the same count in every (block, position): with
a count that is a multiple of 16 the waste is zero. WSP-CB (blocks of 16 input channels, the same count in every
position) keeps every row: U stays dense with the pruned chunks zero, and ckeep says which products to skip.

Five kernels (`KernelDesc.extra` "gen"): generation 1 (`fused_desc`, any p: one CTA holds all positions),
generation 2 (`pair_desc`, p = 4: a cluster pair splits the tile's rows), generation 3 (`ws_desc`, p = 4:
warp-specialized producer / transform / wgmma consumers), generation 4 (`rs_desc`, p = 4: each wgmma
warpgroup transforms its rows of V into its A registers) and generation 5 (`cp_desc`, p = 4: a wgmma cluster pair
splits V's columns, N = 64; the dense map, or the full map for row-pruned layouts). p = 4's defaults (default_desc,
identity_filter_block): dense fp16 layers of c >= 64 and FP ones of c >= 128 whose blocks of 64 pad little run
generation 5 at 32 channels a chunk with vertical tile pairs, the tma epilogue, the light producer and (fp16) the
exchanges in fp16, in filter blocks of 64 (persistent pairs up to c = 256), other dense and FP layers generation 4's
dense map in filter blocks of 32; the row-pruned forms (row_filter_block) generation 5's full map with the push gather
(64 rows a position) from c = 128 where it pads at most 1.5x the rows per filter generation 4 does (2x from c = 256),
else generation 4 in filter blocks as wide as their kept rows allow (wide_filter_block); generation 2 remains the
fallback and a tuning candidate. The registry part at the end declares the `fused` kernel family (config menu, tune
problem, tuner measurement) and the sweep's whole-layer points (implementation `fused` of dense, fp, wsp-r, wsp-rb and
wsp-cb, the last with generation 4's chunk map).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from cutlass_wsp.errors import InputError, Unsupported
from cutlass_wsp.families.base import (ANY, LAYER, CandidateMeasure, Cost, Family, KernelFamily, KernelPlan, Op,
                                       PointContext, Serves, kernel_config)
from cutlass_wsp.kernels.description import KernelDesc
from cutlass_wsp.pruning import WSP_RB_BLOCKS, block_menu, wsp_rb_block

FUSED_FAMILY = "fused"
FUSED_DTYPES = ("fp16", "bf16")
FUSED_PS = (4, 6)
WARPS = {4: 8, 6: 12}           # warps per CTA: each owns p²/warps positions
MAX_ACCUMULATORS = 128          # fp32 accumulator registers per thread (past it the kernel spills)
SMEM_LIMIT = 227 * 1024         # opt-in shared memory per CTA on sm90
BC = 16                         # channels per mainloop chunk


# ---------------------------------------------------------------------------------------------
# Kernel descriptions
# ---------------------------------------------------------------------------------------------

def accumulators(p: int, mi: int, bt: int) -> int:
    """fp32 accumulators per thread: positions per warp x (mi/16 row tiles) x (bt/8 column tiles) x 4."""
    return (p * p // WARPS[p]) * (mi // 16) * (bt // 8) * 4


def smem_bytes(p: int, mi: int, bt: int, fb: int, stages: int) -> int:
    """Shared memory of one CTA, as the template lays it out (see its constants)."""
    pp = p * p
    main = stages * (pp * bt * BC * 2 + pp * mi * BC * 2) + pp * bt * BC * 2
    epi = pp * bt * (mi + 4) * 4
    return max(main, epi) + bt * 16 + -(-pp * fb * 2 // 16) * 16 + -(-pp * 4 // 16) * 16


# Generation 2 ("pair", p = 4): two CTAs of a cluster split the p x p positions by rows (templates/_fused_pair.cu.j2).
PAIR_RAW_PIX = {64: 576, 32: 288}   # input-region pixels a tile rectangle of BT tiles may need


def pair_smem_bytes(mi: int, bt: int, fb: int, stages: int, raw: int) -> int:
    """Shared memory of one generation-2 CTA, as _fused_pair.cu.j2 lays it out."""
    pph = 8
    main = stages * (raw * BC * 2 + pph * mi * BC * 2) + 2 * pph * bt * BC * 2
    ms = pph * bt * (mi + 4) * 4
    x_off = -(-max(ms, main) // 128) * 128
    return x_off + 2 * bt * (fb // 4) * 8 * 4 + bt * 16 + -(-pph * fb * 2 // 16) * 16 + 64


def _check_pair(desc: KernelDesc, extra: dict) -> KernelDesc:
    mi, bt, bc = desc.tile
    fb, raw = extra.get("fb"), extra.get("raw")
    warps = extra.get("warps")
    if extra.get("p") != 4 or warps not in (8, 16):
        raise Unsupported(f"the generation-2 fused kernel is built for p=4 with 8 or 16 warps, not p={extra.get('p')} "
                          f"with {warps}", "use p=4 (F(2,3)) and warps 8 or 16")
    if desc.dtype not in FUSED_DTYPES:
        raise Unsupported(f"the fused layer kernel has no {desc.dtype} version", f"use one of {', '.join(FUSED_DTYPES)}")
    if bc != BC or mi % 16 or not 16 <= mi <= 64 or bt not in PAIR_RAW_PIX:
        raise Unsupported(f"generation-2 fused tile {desc.tile}", f"use (MI in 16..64, BT in {tuple(PAIR_RAW_PIX)}, 16)")
    if not isinstance(fb, int) or fb % 4 or fb < mi:
        raise Unsupported(f"filter block {fb!r} with MI={mi}", "use a multiple of 4 channels, at least MI")
    if extra.get("map", "rows") not in ("rows", "dense") or (extra.get("map") == "dense" and mi != fb):
        raise Unsupported(f"row map {extra.get('map')!r}", "use 'rows', or 'dense' with MI == FB")
    if raw != PAIR_RAW_PIX[bt]:
        raise Unsupported(f"input region of {raw} pixels for BT={bt}", f"use {PAIR_RAW_PIX[bt]}")
    if desc.stages < 3:
        raise Unsupported(f"{desc.stages} stages", "the generation-2 pipeline needs 3 or more")
    acc = (mi // 16) * (bt // 8) * 4 * 8 // warps
    if warps == 16 and (mi // 16) % 2:
        raise Unsupported(f"16 warps split a position's MI={mi} rows in two", "use MI a multiple of 32 with 16 warps")
    if acc > MAX_ACCUMULATORS // (warps // 8):
        raise Unsupported(f"tile {mi}x{bt} holds {acc} accumulators per thread", "use fewer rows or tiles")
    need = pair_smem_bytes(mi, bt, fb, desc.stages, raw)
    if need > SMEM_LIMIT:
        raise Unsupported(f"generation-2 tile {mi}x{bt}, FB={fb}, {desc.stages} stages needs {need // 1024} KB",
                          "use fewer stages, a smaller filter block or tile")
    return desc


def pair_desc(dtype: str, mi: int, *, fb: int | None = None, bt: int = 64, stages: int = 3,
              dense_map: bool = False, warps: int = 8) -> KernelDesc:
    """A generation-2 (cluster pair, p = 4) fused kernel for MI packed rows per position. `dense_map`: the
    layout is the identity (FusedLayout.identity); otherwise the kernel reads the inverse row map."""
    mi = -(-int(mi) // 16) * 16
    fb = mi if fb is None else int(fb)
    desc = KernelDesc(family=FUSED_FAMILY, dtype=dtype, arch="sm90", tile=(mi, bt, BC), stages=stages,
                      extra=(("p", 4), ("fb", fb), ("warps", warps), ("gen", 2), ("map", "dense" if dense_map else "rows"),
                             ("raw", PAIR_RAW_PIX.get(bt, 0))))
    return check_fused_desc(desc)


# Generation 3 ("ws", p = 4): warp-specialized, wgmma (templates/_fused_ws.cu.j2). One CTA holds all 16 positions:
# a transform warpgroup (its thread 0 keeps the TMA ring of input regions full) and 2 consumer warpgroups (8
# positions each, their own bulk-copy ring of weights; wgmma M = the 64 tiles, N = the MI packed rows).
WS_BT = 64                       # tiles per CTA: wgmma M of one consumer warpgroup
WS_WARPS = 12                    # producer/transform warpgroup + 2 consumer warpgroups
WS_MI = (16, 32)                 # packed rows per position: wgmma N (4 * MI fp32 accumulators per consumer thread)
WS_RAW_PIX = 576                 # input-region pixels a rectangle of 64 tiles may need (generation 2's bound)
WS_STAGES = (2, 3, 4)


def _align1k(b: int) -> int:
    return -(-b // 1024) * 1024


def ws_smem_bytes(mi: int, fb: int, stages: int, bt: int = WS_BT, raw: int = WS_RAW_PIX) -> int:
    """Shared memory of one generation-3 CTA, as _fused_ws.cu.j2 lays it out (see its constants)."""
    pp = 16
    raw_b = _align1k(raw * BC * 2)                      # raw ring: `stages` input regions
    u_ring = 2 * (stages + 1) * (pp // 2) * mi * BC * 2  # a weight ring of stages + 1 per consumer warpgroup
    main = stages * raw_b + u_ring + 2 * pp * bt * BC * 2
    ms = pp * bt * (mi + 4) * 4
    bars = -(-((2 * stages + 2 * (stages + 1) + 4) * 8) // 16) * 16
    return max(main, ms) + bars + bt * 16 + -(-pp * fb * 2 // 16) * 16 + pp * 4


def _check_wgmma(desc: KernelDesc, extra: dict, gen: int, warps: int, smem: Callable[[int, int, int], int],
                 depths: tuple[int, ...] = WS_STAGES) -> KernelDesc:
    """What generations 3 and 4 share: p = 4, their warp count, the (MI, 64, 16) tile, FB, the row map, the
    input region, the ring depth and the shared memory `smem(mi, fb, stages)` needs."""
    mi, bt, bc = desc.tile
    fb, raw = extra.get("fb"), extra.get("raw")
    if extra.get("p") != 4 or extra.get("warps") != warps:
        raise Unsupported(f"the generation-{gen} fused kernel is built for p=4 with {warps} warps, not "
                          f"p={extra.get('p')} with {extra.get('warps')}", f"use p=4 (F(2,3)) and warps {warps}")
    if desc.dtype not in FUSED_DTYPES:
        raise Unsupported(f"the fused layer kernel has no {desc.dtype} version", f"use one of {', '.join(FUSED_DTYPES)}")
    if bc != BC or mi not in WS_MI or bt != WS_BT:
        raise Unsupported(f"generation-{gen} fused tile {desc.tile}",
                          f"use (MI in {WS_MI}, {WS_BT}, {BC}): wgmma M = {WS_BT} tiles, N = MI rows; "
                          f"layouts of more rows per position take filter blocks of 32")
    if not isinstance(fb, int) or fb % 2 or fb < mi:
        raise Unsupported(f"filter block {fb!r} with MI={mi}", "use an even number of channels, at least MI")
    maps = ("rows", "dense", "full") if gen == 4 else ("rows", "dense")
    if extra.get("map", "rows") not in maps or (extra.get("map") == "dense" and mi != fb):
        raise Unsupported(f"row map {extra.get('map')!r} for generation {gen}",
                          "use 'rows', or 'dense' with MI == FB" + (", or 'full'" if gen == 4 else ""))
    if raw != WS_RAW_PIX:
        raise Unsupported(f"input region of {raw} pixels", f"use {WS_RAW_PIX}")
    if desc.stages not in depths:
        raise Unsupported(f"{desc.stages} stages", f"the generation-{gen} ring takes {', '.join(map(str, depths))}")
    need = smem(mi, fb, desc.stages)
    if need > SMEM_LIMIT:
        raise Unsupported(f"generation-{gen} tile {mi}x{bt}, FB={fb}, {desc.stages} stages needs {need // 1024} KB",
                          "use fewer stages or a smaller filter block")
    return desc


def _check_ws(desc: KernelDesc, extra: dict) -> KernelDesc:
    return _check_wgmma(desc, extra, 3, WS_WARPS, ws_smem_bytes)


def ws_desc(dtype: str, mi: int, *, fb: int | None = None, stages: int | None = None,
            dense_map: bool = False) -> KernelDesc:
    """A generation-3 (warp-specialized, wgmma, p = 4) fused kernel for MI packed rows per position (16 or 32
    after rounding up to 16): the deepest ring (<= 4 stages) whose shared memory fits, unless given.
    `dense_map`: the layout is the identity (FusedLayout.identity). Not picked by default_desc yet (verified on
    the H200, 2026-12-04, but only for filter blocks of 32; the sweep's layouts use 64)."""
    mi = -(-int(mi) // 16) * 16
    fb = mi if fb is None else int(fb)
    if stages is None:
        stages = next((s for s in (4, 3, 2) if ws_smem_bytes(mi, fb, s) <= SMEM_LIMIT), 2)
    desc = KernelDesc(family=FUSED_FAMILY, dtype=dtype, arch="sm90", tile=(mi, WS_BT, BC), stages=stages,
                      extra=(("p", 4), ("fb", fb), ("warps", WS_WARPS), ("gen", 3),
                             ("map", "dense" if dense_map else "rows"), ("raw", WS_RAW_PIX)))
    return check_fused_desc(desc)


RS_WARPS = 8                     # two warpgroups: each transforms its rows of V into wgmma's A registers
RS_STAGES = (2, 3, 4, 5, 6)     # raw-ring depths of generation 4 (its V needs no shared memory: room for more)
RS_MCAST = (1, 2, 4)             # CTAs of a cluster sharing each weight stage by TMA multicast (1: no cluster)
RS_RMCAST = (1, 2, 4)            # CTAs of a cluster (one tile rectangle, consecutive filter blocks) sharing each
                                 # input region by TMA multicast (1: no cluster)
RS_EPILOGUES = ("smem", "regs")  # the output transform from fp32 accumulators in shared memory (all positions), or
                                 # in registers by rows, the two warpgroups trading halves (dense map only)
RS_RAW_CH = (16, 24)             # channels per pixel in generation 4's raw ring: 16 (rotated column order against
                                 # bank conflicts, the default) or 24 (48-byte pixels; 2 L2 sectors per pixel)
RS_PIPES = ("halves",)           # generation 4's mainloop in two commit groups per chunk (one per V row); absent: one
RS_SCHEDS = ("persistent",)      # one CTA per SM walking the work items, rings running on across them; absent: one
                                 # CTA per (tile rectangle, filter block)


def rs_smem_bytes(mi: int, fb: int, stages: int, bt: int = WS_BT, raw: int = WS_RAW_PIX, rawch: int = 16,
                  mcast: int = 1, persistent: str | None = None, rmcast: int = 1) -> int:
    """Shared memory of one generation-4 CTA, as _fused_rs.cu.j2 lays it out (see its constants); `persistent`:
    the epilogue ('regs' or 'smem') of a persistent CTA, whose epilogue region sits after the rings; `rmcast` > 1:
    a barrier more per raw stage (the cluster's release of it)."""
    pp = 16
    main = stages * _align1k(raw * rawch * 2) + 2 * (stages + 1) * (pp // 2) * mi * BC * 2
    if persistent:
        bars = -(-(((3 if rmcast > 1 else 2) * stages + 2 * (stages + 1)) * 8) // 16) * 16
        if persistent == "regs":   # the exchange, two tile tables, no inverse map
            xs = 2 * (mi // 8) * 2 * 2 * 2 * 128 * 4   # [sender warpgroup][MI/8 x 2 filters x 2 x 2 outputs][128] fp32
            return main + xs + bars + 2 * bt * 16
        ms = pp * (bt // 2) * (mi + 4) * 4           # half the tiles: two passes
        return main + ms + bars + 2 * bt * 16 + 2 * (-(-pp * fb * 2 // 16) * 16)
    ms = pp * bt * (mi + 4) * 4
    ubars = 2 * (stages + 1) * (2 if mcast > 1 else 1)   # ufull (+ uempty with multicast)
    rbars = (3 if rmcast > 1 else 2) * stages             # rawfull, rawempty (+ rawfree with region multicast)
    bars = -(-((rbars + ubars) * 8) // 16) * 16
    return max(main, ms) + bars + bt * 16 + -(-pp * fb * 2 // 16) * 16 + pp * 4


def _check_rs(desc: KernelDesc, extra: dict) -> KernelDesc:
    rawch = extra.get("rawch", 16)
    if rawch not in RS_RAW_CH:
        raise Unsupported(f"a raw ring of {rawch!r} channels per pixel", f"use one of {RS_RAW_CH}")
    mcast = extra.get("mcast", 1)
    if mcast not in RS_MCAST:
        raise Unsupported(f"a cluster of {mcast!r} CTAs sharing the weights", f"use one of {RS_MCAST}")
    rmcast = extra.get("rmcast", 1)
    if rmcast not in RS_RMCAST:
        raise Unsupported(f"a cluster of {rmcast!r} CTAs sharing the input region", f"use one of {RS_RMCAST}")
    if rmcast > 1 and (mcast > 1 or desc.stages % rmcast):
        raise Unsupported(f"the input region multicast to {rmcast} CTAs with {desc.stages} stages"
                          + (f", weights multicast to {mcast}" if mcast > 1 else ""),
                          f"use it without the weight multicast and with a ring of a multiple of {rmcast} stages "
                          f"(each stage has one owner CTA)")
    epi = extra.get("epi", "smem")
    if epi not in RS_EPILOGUES or (epi == "regs" and extra.get("map") != "dense"):
        raise Unsupported(f"epilogue {epi!r} with the {extra.get('map')!r} row map",
                          "use 'smem', or 'regs' with the dense map (dense and FP layouts)")
    if extra.get("cmap", "blocks") != "blocks":
        raise Unsupported(f"chunk map {extra.get('cmap')!r}", "use cmap 'blocks' (rs_desc(cmap=True)) or none")
    if extra.get("pipe", "halves") not in RS_PIPES:
        raise Unsupported(f"mainloop pipeline {extra.get('pipe')!r}", f"use one of {RS_PIPES} or none (one group)")
    if "pipe" in extra and mcast != 1:
        raise Unsupported(f"pipeline {extra['pipe']!r} with weights multicast to {mcast} CTAs",
                          "use mcast 1 (the cluster's release of a weight stage is built for one group per chunk)")
    persistent = epi if "sched" in extra else None
    if persistent and extra["sched"] not in RS_SCHEDS:
        raise Unsupported(f"CTA schedule {extra['sched']!r}", f"use one of {RS_SCHEDS} or none (one CTA per work item)")
    if persistent and (extra.get("map") not in ("dense", "full") or (epi == "regs") != (extra.get("map") == "dense")
                       or mcast != 1 or "cmap" in extra):
        raise Unsupported("persistent CTAs for this kernel", "use them with the dense map's register epilogue "
                          "(dense, FP) or the full map (WSP-RB, WSP-R in wide blocks), without the weight multicast "
                          "or the chunk map")
    return _check_wgmma(desc, extra, 4, RS_WARPS,
                        lambda mi, fb, stages: rs_smem_bytes(mi, fb, stages, rawch=rawch, mcast=mcast,
                                                             persistent=persistent, rmcast=rmcast), RS_STAGES)


def rs_desc(dtype: str, mi: int, *, fb: int | None = None, stages: int | None = None,
            dense_map: bool = False, rawch: int = 16, mcast: int = 1, epi: str | None = None,
            cmap: bool = False, full_rows: bool = False, pipe: str | None = None,
            sched: str | None = None, rmcast: int = 1) -> KernelDesc:
    """A generation-4 fused kernel (p = 4: two warpgroups transform into wgmma's A registers, no V in shared
    memory) for MI packed rows per position (16 or 32 after rounding up to 16), FB = 32 layouts like
    generation 3: the deepest ring (<= 6 stages) whose shared memory fits, unless given. `rawch`: channels per
    pixel of the raw ring (RS_RAW_CH); `mcast`: CTAs of a cluster that share each weight stage by TMA multicast
    (RS_MCAST); `epi`: RS_EPILOGUES (default: 'regs' with the dense map, measured 1.03-1.16x 'smem' on the H200,
    docs/fused.md; else 'smem'); `cmap`: the kernel reads the layout's chunk map (pack_rs_chunk_map) and skips
    the product of a (position, chunk) it prunes (WSP-CB); `full_rows` (row map "full", FusedLayout.full_rows):
    every position multiplies all MI packed rows, with no per-position branch around the wgmma (a packed row
    past a position's kept rows is zero), while the epilogue still reads the inverse map: the mainloop of the
    dense map for filter blocks wider than MI (wide_filter_block); `pipe` (RS_PIPES): 'halves' issues each chunk's
    products in two commit groups, one per V row, so a warpgroup transforms one row while its other row's products
    run (default: one group per chunk); `sched` (RS_SCHEDS): 'persistent' launches one CTA per SM that walks the
    work items with its rings running on across them (the dense map with its register epilogue, or the full map
    with the shared-memory epilogue in two passes); `rmcast` (RS_RMCAST): a cluster of that many CTAs holds one
    tile rectangle and consecutive filter blocks, and each input region is loaded from L2 once and multicast to
    them all (the ring's depth a multiple of it; with persistent CTAs the cluster walks its items together).
    Values that were the defaults before add no extra, so those kernels keep their names and cache keys."""
    mi = -(-int(mi) // 16) * 16
    fb = mi if fb is None else int(fb)
    if dense_map and full_rows:
        raise InputError("both the dense and the full row map", "pass one of dense_map, full_rows")
    if epi is None:
        epi = "regs" if dense_map else "smem"
    if stages is None:
        stages = next((s for s in RS_STAGES[::-1] if s % rmcast == 0 and rs_smem_bytes(
            mi, fb, s, rawch=rawch, mcast=mcast, persistent=sched and epi, rmcast=rmcast) <= SMEM_LIMIT), 2)
    desc = KernelDesc(family=FUSED_FAMILY, dtype=dtype, arch="sm90", tile=(mi, WS_BT, BC), stages=stages,
                      extra=(("p", 4), ("fb", fb), ("warps", RS_WARPS), ("gen", 4),
                             ("map", "dense" if dense_map else "full" if full_rows else "rows"), ("raw", WS_RAW_PIX),
                             ("rawch", rawch))
                      + ((("mcast", mcast),) if mcast != 1 else ())
                      + ((("epi", epi),) if epi != "smem" else ())
                      + ((("cmap", "blocks"),) if cmap else ())
                      + ((("pipe", pipe),) if pipe else ())
                      + ((("sched", sched),) if sched else ())
                      + ((("rmcast", rmcast),) if rmcast != 1 else ()))
    return check_fused_desc(desc)


# Generation 5 ("cp", p = 4): a cluster pair splits V's columns, one per warpgroup, N = MI = FB filters
# (templates/_fused_cp.cu.j2). Verified on the H200 and the H100 (2026-12-05); the default for dense and FP where
# identity_filter_block picks blocks of 64 (default_desc: the tma epilogue, persistent pairs up to c = 256).
CP_MI = (32, 48, 64)             # wgmma N: the filter block (the dense map); 64 holds 128 accumulators per thread
CP_STAGES = (2, 4, 6)            # raw-ring depths: even (the pair's CTAs own alternate stages)
CP_BC = (16, 32)                 # channels per chunk: one k16 step, or two (64-byte pixels, one 16-byte load each)
CP_EPIS = ("lean", "early", "async", "tma", "wg")   # the dense map's epilogue: float4 exchanges and uniform
                                 # branches; the pair's join after the warpgroups' exchange; one Z traded in the CTA
                                 # and the pair's part by st.async into an mbarrier (no fence, one join); that, the
                                 # output by one TMA store per CTA and the pair's joins relaxed (MI 64); the tma
                                 # epilogue in a warpgroup of its own under the next item's chunks (persistent, MI 64,
                                 # bc 32, xchg half); absent: the plain one
CP_XS2BAR_EPIS = ("async", "tma")   # the epilogues whose partner's part lands on an mbarrier (xs2bar, one more)
CP_ASYNC_EPIS = CP_XS2BAR_EPIS + ("wg",)   # ... and the warpgroup epilogue: those the exchanges in fp16 and the
                                           # persistent schedule take
CP_TILES = ("vpair",)            # a thread's tiles other than rows g, g + 8 of the rectangle in order: vertical pairs
CP_REFILLS = ("late",)           # a chunk's weight refill after its products' issue, not before its transform
CP_PRODUCERS = ("light", "split")   # the raw ring's producer: in the warpgroup whose column loads without bank
                                    # conflicts ("light"), or half of it in each warpgroup ("split")
CP_XCHGS = ("half",)             # the epilogue's exchanges in the layer's 16-bit type (epi async or tma)
CP_TABLES = ("early",)           # (persistent) the next item's tile table written during the item's first chunk
CP_GATHERS = ("batched", "push")   # the full map's epilogue: its gathers predicated, not branched (a thread's loads
                                   # in flight together), the inverse map read before the pair's join; "push": each
                                   # rank's tiles with all 16 positions in its own shared memory, the partner's part
                                   # sent by st.async (no remote load)
CP_SCHEDS = ("persistent",)      # pairs that stay and walk work items (the async or tma epilogue, 32 channels a chunk)
CP_STORES = ("fast",)            # (the push gather) one branch a tile: a tile inside the image with a whole, even filter
                                 # pair stores its 4 pixels unconditionally; per-pixel checks only for the rest
CP_JOINS = ("relaxed",)          # (the push gather) the pair's joins split and relaxed as the tma epilogue's: the last
                                 # ring's releases not sent, the wait only before the partner's ms is written
CP_REGIONS = ("planes",)         # (32 channels a chunk) the raw stage in two planes of the region's columns by parity, so
                                 # every column's two loads sit in different halves of a 128-byte period (and can swap)
# What an ablation takes out of generation 5's chunk (stamps builds only: wrong by design, never verified or timed),
# '+'-joined: its wgmma ("mma"; the A registers kept live), the raw stage's pixel loads ("loads": the pixels from
# registers, the region still lands), the transform ("transform", with "mma": nothing keeps the A registers, so the
# compiler drops it), the weights' bulk copies ("weights": their barrier still arrived on). What is left bounds a chunk.
CP_ABLATE_PARTS = ("mma", "loads", "transform", "weights")
CP_ABLATES = {"both": "mma+loads", "skeleton": "mma+loads+transform",    # names of the measured ones
              "bare": "mma+loads+transform+weights"}


def ablation(spec: str) -> str:
    """'weights+mma' or a name of CP_ABLATES -> the parts in CP_ABLATE_PARTS order, '.'-joined ('mma.weights');
    Unsupported for an unknown part, or the transform without the wgmma (the wgmma's use of its registers is what
    keeps it)."""
    parts = set(CP_ABLATES.get(spec, spec).replace(".", "+").split("+"))
    if not parts <= set(CP_ABLATE_PARTS) or ("transform" in parts and "mma" not in parts):
        raise Unsupported(f"generation-5 ablation {spec!r}",
                          f"join parts of {', '.join(CP_ABLATE_PARTS)} with '+' (transform only with mma), or use "
                          f"{', '.join(CP_ABLATES)}")
    return ".".join(x for x in CP_ABLATE_PARTS if x in parts)   # ('.': a kernel name's character)


def cp_ustages(stages: int, bc: int = BC) -> int:
    """Weight stages per warpgroup of generation 5 (as _fused_cp.cu.j2 sets USTAGES): one more than the raw ring at 16
    channels a chunk, two at 32 (a chunk's weights are 16 KB per warpgroup then)."""
    return stages + 1 if bc == BC else 2


def _cp_big_bytes(mi: int, stages: int, raw: int, bc: int) -> int:
    """The rings of one generation-5 CTA, which its epilogue reuses (the template's BIG_BYTES)."""
    main = stages * _align1k(raw * bc * 2) + 2 * cp_ustages(stages, bc) * 4 * mi * bc * 2
    xs = 2 * 2 * (mi // 2) * 128 * 4 + 2 * (mi // 2) * 128 * 4    # the dense map's two exchanges, over the rings
    return max(main, xs)


def cp_smem_bytes(mi: int, stages: int, raw: int = WS_RAW_PIX, bc: int = BC, epi: str | None = None,
                  sched: str | None = None, producer: str | None = None, gather: str | None = None,
                  fb: int | None = None) -> int:
    """Shared memory of one generation-5 CTA, as _fused_cp.cu.j2 lays it out (see its constants); a persistent CTA
    has an mbarrier more (xsfree) and two tile tables, the full map's push gather one more (its xs2bar)."""
    persistent = sched == "persistent"
    ring_bars = 2 * stages + 2 * cp_ustages(stages, bc)   # rawfull, rawfree; ufull

    def bar_bytes(n: int) -> int:   # n mbarriers, 16-byte aligned
        return -(-(n * 8) // 16) * 16

    if epi == "wg":   # rings, the mbarriers, the walk, two tile tables, then the epilogue warpgroup's buffers apart
        head = _cp_big_bytes(mi, stages, raw, bc) + 3 * 16 + 2 * WS_BT * 16
        if gather == "push":   # msfull, msfree, rmsfree; MS and SINV
            return head + bar_bytes(ring_bars + 3) + 16 * (WS_BT // 2) * (mi + 8) * 2 + 16 * (fb or max(WIDE_FB)) * 2
        # zfull, zfree, pbar, pfree; ZBUF and PBUF, then the box (1024-aligned)
        return _align1k(head + bar_bytes(ring_bars + 4) + 3 * 2 * (mi // 16) * 128 * 16) + WS_BT * 2 * mi * 2
    xbar = epi in CP_XS2BAR_EPIS or gather == "push"
    nbar = ring_bars + xbar + persistent   # xs2bar; xsfree
    bars = bar_bytes(nbar)
    # a persistent CTA's cached load items: the raw loads' (one per producer) and each warpgroup's weights'
    walk = (3 + (producer == "split")) * 16 if persistent else 0
    end = _cp_big_bytes(mi, stages, raw, bc) + bars + walk + (1 + persistent) * WS_BT * 16
    if persistent and epi == "tma":   # the TMA store's box apart (1024-aligned), which the previous item's store reads
        end = _align1k(end) + WS_BT * 2 * mi * 2
    return end


def cp_full_epilogue_bytes(mi: int, fb: int) -> int:
    """Shared memory of generation 5's full-map epilogue: its 8 positions' accumulators (fp32 rows of MI + 4) and the
    block's inverse map, over the rings."""
    return 2 * 4 * WS_BT * (mi + 4) * 4 + 16 * fb * 2


def _check_cp(desc: KernelDesc, extra: dict) -> KernelDesc:
    mi, bt, bc = desc.tile
    fb, full = extra.get("fb"), extra.get("map") == "full"
    if extra.get("p") != 4 or extra.get("warps") != RS_WARPS or extra.get("map") not in ("dense", "full"):
        raise Unsupported(f"generation 5 with p={extra.get('p')}, {extra.get('warps')} warps, the "
                          f"{extra.get('map')!r} map", f"use p=4, {RS_WARPS} warps and the dense map (dense, FP) "
                          "or the full map (row-pruned layouts)")
    if desc.dtype not in FUSED_DTYPES:
        raise Unsupported(f"the fused layer kernel has no {desc.dtype} version", f"use one of {', '.join(FUSED_DTYPES)}")
    if bc not in CP_BC or bt != WS_BT or mi not in CP_MI or not isinstance(fb, int) or (
            not full and fb != mi) or (full and (fb < mi or fb % 2 or fb > max(WIDE_FB))):
        raise Unsupported(f"generation-5 tile {desc.tile} with FB={fb} ({extra.get('map')} map)",
                          f"use (MI in {CP_MI}, {WS_BT}, BC in {CP_BC}) with FB == MI (the dense map) or an even "
                          f"FB from MI to {max(WIDE_FB)} (the full map)")
    if extra.get("raw") != WS_RAW_PIX:
        raise Unsupported(f"input region of {extra.get('raw')} pixels", f"use {WS_RAW_PIX}")
    if extra.get("tiles", CP_TILES[0]) not in CP_TILES:
        raise Unsupported(f"generation-5 tile order {extra.get('tiles')!r}", f"use {', '.join(CP_TILES)} or none")
    if "epi" in extra and (extra["epi"] not in CP_EPIS or mi % 32 or (extra["epi"] in ("tma", "wg") and mi != 64)
                           or (full and (extra["epi"] != "wg" or extra.get("gather") != "push"))):
        raise Unsupported(f"generation-5 epilogue {extra['epi']!r} for MI={mi} ({extra.get('map')} map, gather "
                          f"{extra.get('gather')!r})", f"use epi {' or '.join(map(repr, CP_EPIS))} with the dense map and "
                          "MI 32 or 64 (tma, wg: 64), or epi 'wg' with the full map's push gather, or none")
    if extra.get("epi") == "wg" and (extra.get("sched") != "persistent" or extra.get("xchg") != "half" or bc != 32
                                     or any(k in extra for k in ("stamps", "cstamps", "refill", "table", "pipe"))
                                     or extra.get("producer", "light") != "light"):
        raise Unsupported("generation-5 epilogue 'wg' with " + ", ".join(
            f"{k} {extra.get(k)!r}" for k in ("sched", "xchg", "producer", "refill", "table", "pipe")
            if extra.get(k) is not None) + f" at {bc} channels a chunk",
                          "use epi 'wg' with sched 'persistent', xchg 'half', bc=32 and at most producer 'light' "
                          "(no stamps, refill, table or pipe)")
    if extra.get("stamps", 1) != 1:
        raise Unsupported(f"generation-5 stamps {extra.get('stamps')!r}", "use stamps=1 (the profiling build) or none")
    if "refill" in extra and (extra["refill"] not in CP_REFILLS or "pipe" in extra or full):
        raise Unsupported(f"generation-5 weight refill {extra['refill']!r} with pipe {extra.get('pipe')!r} "
                          f"({extra.get('map')} map)", f"use refill {' or '.join(map(repr, CP_REFILLS))} with the "
                          "dense map and the default pipe, or none")
    if "producer" in extra and (extra["producer"] not in CP_PRODUCERS or "pipe" in extra):
        raise Unsupported(f"generation-5 producer {extra['producer']!r} with pipe {extra.get('pipe')!r}",
                          f"use producer {' or '.join(map(repr, CP_PRODUCERS))} with the default pipe, or none")
    if "xchg" in extra and (extra["xchg"] not in CP_XCHGS or (
            extra.get("epi") not in CP_ASYNC_EPIS if not full else extra.get("gather") != "push" or mi % 32)):
        raise Unsupported(f"generation-5 exchange {extra['xchg']!r} with epi {extra.get('epi')!r}, gather "
                          f"{extra.get('gather')!r} ({extra.get('map')} map)",
                          f"use xchg {' or '.join(map(repr, CP_XCHGS))} with epi 'async' or 'tma' (the dense map) or "
                          "gather 'push' and MI 32 or 64 (the full map), or none")
    if "gather" in extra and (extra["gather"] not in CP_GATHERS or not full):
        raise Unsupported(f"generation-5 gather {extra['gather']!r} ({extra.get('map')} map)",
                          f"use gather {' or '.join(map(repr, CP_GATHERS))} with the full map (row-pruned layouts), "
                          "or none")
    if "stores" in extra and (extra["stores"] not in CP_STORES or extra.get("gather") != "push"):
        raise Unsupported(f"generation-5 stores {extra['stores']!r} with gather {extra.get('gather')!r}",
                          f"use stores {' or '.join(map(repr, CP_STORES))} with gather 'push' (the full map), or none")
    if "join" in extra and (extra["join"] not in CP_JOINS or extra.get("gather") != "push" or "sched" in extra):
        raise Unsupported(f"generation-5 join {extra['join']!r} with gather {extra.get('gather')!r}",
                          f"use join {' or '.join(map(repr, CP_JOINS))} with gather 'push' (the full map, one-shot), "
                          "or none")
    if "table" in extra and (extra["table"] not in CP_TABLES or extra.get("sched") != "persistent"):
        raise Unsupported(f"generation-5 tile table {extra['table']!r} with sched {extra.get('sched')!r}",
                          f"use table {' or '.join(map(repr, CP_TABLES))} with sched 'persistent', or none")
    if extra.get("cstamps", 1) != 1 or ("cstamps" in extra and (
            "stamps" in extra or "pipe" in extra or extra.get("epi") not in CP_XS2BAR_EPIS or full)):
        raise Unsupported(f"generation-5 chunk stamps {extra.get('cstamps')!r} with pipe {extra.get('pipe')!r}, epi "
                          f"{extra.get('epi')!r}" + (" and the phase stamps" if "stamps" in extra else ""),
                          "use cstamps=1 with the dense map, epi 'async' or 'tma', the default pipe and no phase "
                          "stamps, or none")
    if extra.get("istamps", 1) != 1 or ("istamps" in extra and (
            extra.get("sched") != "persistent" or "stamps" in extra or "cstamps" in extra)):
        raise Unsupported(f"generation-5 item stamps {extra.get('istamps')!r} with sched {extra.get('sched')!r}"
                          + (" and the phase or chunk stamps" if "stamps" in extra or "cstamps" in extra else ""),
                          "use istamps=1 with sched 'persistent' (epi 'async', 'tma' or 'wg') and no other stamps, "
                          "or none")
    if "sched" in extra and (extra["sched"] not in CP_SCHEDS or extra.get("epi") not in CP_ASYNC_EPIS or bc != 32
                             or "stamps" in extra):
        raise Unsupported(f"generation-5 schedule {extra['sched']!r} with epi {extra.get('epi')!r} at {bc} channels a "
                          "chunk" + (" (a stamps build)" if "stamps" in extra else ""),
                          f"use sched {' or '.join(map(repr, CP_SCHEDS))} with epi 'async' or 'tma', bc=32 and no "
                          "stamps, or none")
    if extra.get("pipe", RS_PIPES[0]) not in RS_PIPES or ("pipe" in extra and bc == BC):
        raise Unsupported(f"generation-5 pipeline {extra.get('pipe')!r} at {bc} channels a chunk",
                          f"use pipe {RS_PIPES[0]!r} (one commit group per k step) with bc=32, or none")
    if "region" in extra and (extra["region"] not in CP_REGIONS or bc != 32):
        raise Unsupported(f"generation-5 region layout {extra['region']!r} at {bc} channels a chunk",
                          f"use region {' or '.join(map(repr, CP_REGIONS))} with bc=32, or none")
    stamped = "cstamps" in extra or "istamps" in extra
    if "ablate" in extra and (ablation(extra["ablate"]) != extra["ablate"] or "pipe" in extra or bc != 32
                              or extra.get("tiles") != "vpair" or not stamped):
        raise Unsupported(f"generation-5 ablation {extra['ablate']!r}"
                          + ("" if stamped else " outside a chunk- or item-stamps build"),
                          "use parts of CP_ABLATE_PARTS joined by '+' in their order, with chunk_stamps or "
                          "item_stamps, bc=32, vertical tile pairs and the default pipe, or none")
    if desc.stages not in CP_STAGES:
        raise Unsupported(f"{desc.stages} stages", f"the generation-5 ring takes {', '.join(map(str, CP_STAGES))}")
    need = cp_smem_bytes(mi, desc.stages, bc=bc, epi=extra.get("epi"), sched=extra.get("sched"),
                         producer=extra.get("producer"), gather=extra.get("gather"), fb=fb)
    if need > SMEM_LIMIT:
        raise Unsupported(f"generation-5 tile {mi}x{bt}x{bc}, {desc.stages} stages needs {need // 1024} KB",
                          "use fewer stages or a smaller filter block")
    rings = _cp_big_bytes(mi, desc.stages, WS_RAW_PIX, bc)
    if full and extra.get("epi") != "wg" and cp_full_epilogue_bytes(mi, fb) > rings:   # (wg: MS apart)
        raise Unsupported(f"generation 5's full-map epilogue ({cp_full_epilogue_bytes(mi, fb)} B) over rings of "
                          f"{rings} B", "use more stages or a smaller filter block")
    return desc


def cp_desc(dtype: str, mi: int = 64, *, stages: int | None = None, bc: int = BC, fb: int | None = None,
            full_rows: bool = False, vpair: bool = False, pipe: str | None = None, stamps: bool = False,
            epi: str | None = None, sched: str | None = None, chunk_stamps: bool = False,
            refill: str | None = None, table: str | None = None, producer: str | None = None,
            xchg: str | None = None, gather: str | None = None, join: str | None = None,
            stores: str | None = None, item_stamps: bool = False, region: str | None = None,
            ablate: str | None = None) -> KernelDesc:
    """A generation-5 fused kernel (p = 4): a cluster pair splits V's columns, each warpgroup transforms its column
    into wgmma's A registers with N = MI, the input region multicast to both CTAs; `bc` channels per chunk (CP_BC: 32
    runs two k16 steps per chunk). The dense map (dense and FP layouts in filter blocks of MI), or with `full_rows`
    the full map: MI packed rows per position standing for a filter block of FB (row-pruned layouts, WSP-RB in its
    wide blocks), every row multiplied, the epilogue reading the inverse map. The deepest even ring whose shared
    memory fits, unless given. `vpair`: a thread's two tiles are vertical neighbours (rectangles of even tile rows), so
    it loads the 6 pixel rows their patches span instead of 8 (CP_TILES). `pipe='halves'` (bc = 32 only): one commit
    group per k step, so each step's transform waits only for the previous chunk's same step, not for all of it.
    `epi='lean'` (CP_EPIS; the dense map, MI 32 or 64): the epilogue's exchanges in float4s, its warpgroup and rank
    branches taken once, a whole filter block stored without per-filter checks: the same sums in fewer instructions.
    `epi='early'`: the plain epilogue with the pair's join moved after the warpgroups' exchange (one CTA barrier first).
    `epi='async'`: one Z per accumulator traded between the warpgroups (not two partial outputs), the partner's part
    sent as st.async float4s completing bytes on its mbarrier, the pair joined once (no fence before the remote part).
    `epi='tma'` (MI 64): the async epilogue with the output in 128-byte swizzled rows stored by one TMA store per CTA
    (per thread where n_out % 8), the pair's joins relaxed (the last ring's releases, which no owner waits for, not
    sent) and the first join's wait after the tile table.
    `sched='persistent'` (CP_SCHEDS; epi 'async' or 'tma', bc 32): as many pairs as can be resident, each walking work
    items (rectangle, filter block) with its rings running on across them and each item's exchange in the weight stage
    of its last chunk, so the start, the first region's wait and the gap between CTAs are paid once (tma: the box
    apart, the previous item's store waited for only before the next box is written).
    `refill='late'` (CP_REFILLS; the dense map, the default pipe): each chunk refills the previous chunk's weight
    stage after its own products are issued, not before its transform, so the leaders' copies (and the persistent
    leaders' reads of their cached item) leave the path to the warpgroup's first wgmma. `table='early'` (CP_TABLES;
    persistent): the next item's tile table is written by warps 2 and 3 during the item's first chunk.
    `producer='light'` (CP_PRODUCERS; the default pipe, either map): the raw ring's producer is lane 0 of warp 3 of
    the warpgroup whose column loads without the 2-way bank conflict, not thread 0; `producer='split'`: lane 0 of warp 3
    of each warpgroup loads half of the CTA's stages and re-arms the stages its counterparts load, so neither
    warpgroup carries the whole producer (the chunk stamps: the producer's warpgroup was 300-500 cycles a chunk slower).
    `xchg='half'` (CP_XCHGS; epi 'async' or 'tma'): the epilogue's two exchanges carry the layer's 16-bit type (half the
    bytes; each traded value rounded once), and the persistent pair's exchanges sit apart in the stage, so the partner
    sends once this CTA's products are done rather than once its Z are read. With the full map's push gather: ms in
    the 16-bit type (72 KB, not 139), a thread's values of one (position, tile) in 16-byte runs (4x fewer stores and
    st.async, half the bytes), each product rounded once as the unfused pipeline rounds Y.
    `gather='batched'` (CP_GATHERS; the full map): the epilogue's 32 loads per (tile, filter pair), 16 of them from
    the partner's shared memory, predicated on the row being kept instead of branched around, so they are in flight
    together (the phase stamps: one round trip at a time made the gather ~1.8x the mainloop on conv4_2), and the
    block's inverse map read into registers before the pair's join. `gather='push'`: the pair splits the epilogue by
    tiles, not filter pairs: rank r transforms tiles 32 r .. 32 r + 31 with all 16 positions in its own shared memory,
    the warps holding the partner's tiles send them by st.async into its ms (completing bytes on an mbarrier more), so
    the gather reads no remote memory and no cluster barrier follows the epilogue. `join='relaxed'` (CP_JOINS; the push
    gather): the pair's two joins split and relaxed as the tma epilogue's (the first one's wait after the tile table;
    the one after the mainloop with no fence, the last ring's releases not sent, its wait only before the st.async into
    the partner's ms), so the partner's skew runs under the tile table and this CTA's own stores. `stores='fast'`
    (CP_STORES; the push gather): the output transform's stores with one branch a tile, not per pixel and filter (the
    SASS: ~300 of the gather loop's ~1,130 instructions per 4 tiles were the stores' branches, predicates and R2UR).
    `region='planes'` (CP_REGIONS; bc 32): each raw stage holds the region's columns in two planes by parity (two TMA
    boxes of every second column, from two tensor maps), so every column's two loads sit in different 64-byte halves
    of a 128-byte period and the swap that spread columns 1 and 2 spreads all four: columns 0 and 3 load without their
    2-way bank conflict, on one-tile-wide rectangles too (576 pixel-read wavefronts a CTA and chunk become 384; one
    instruction more a chunk outside the producer's second copy).
    `stamps`: a profiling build whose thread 0 of each CTA records its phases' clocks (bench/fused_layer.py profile
    --stamps); never picked by the sweep or the tuner. `chunk_stamps` (epi 'async' or 'tma', either schedule): a
    profiling build whose warps record their clocks at five points of every chunk and three of every item's end
    (bench/fused_layer.py profile --chunk-stamps); never picked either. `item_stamps` (sched 'persistent', epi 'async',
    'tma' or 'wg'): a profiling build whose warpgroups' thread 0 record their clocks at a few points of each item: the
    products done, the handoff, the epilogue's waits (bench/fused_layer.py profile --item-stamps); never picked.
    `ablate` (CP_ABLATE_PARTS joined by '+', or a name of CP_ABLATES; a chunk- or item-stamps build): the chunk
    without its wgmma, its pixel loads, its transform or its weights' copies, to find what bounds it by its stamps; its
    output is wrong by design, so it is never verified, timed or picked (bench/fused_layer.py profile --ablate)."""
    mi = int(mi)
    fb = mi if fb is None else int(fb)
    if stages is None:
        stages = next((s for s in CP_STAGES[::-1]
                       if cp_smem_bytes(mi, s, bc=bc, epi=epi, sched=sched, producer=producer,
                                        gather=gather, fb=fb) <= SMEM_LIMIT), 2)
    desc = KernelDesc(family=FUSED_FAMILY, dtype=dtype, arch="sm90", tile=(mi, WS_BT, int(bc)), stages=stages,
                      extra=(("p", 4), ("fb", fb), ("warps", RS_WARPS), ("gen", 5),
                             ("map", "full" if full_rows else "dense"), ("raw", WS_RAW_PIX))
                      + ((("tiles", "vpair"),) if vpair else ()) + ((("pipe", pipe),) if pipe else ())
                      + ((("stamps", 1),) if stamps else ()) + ((("epi", epi),) if epi else ())
                      + ((("sched", sched),) if sched else ()) + ((("cstamps", 1),) if chunk_stamps else ())
                      + ((("refill", refill),) if refill else ()) + ((("table", table),) if table else ())
                      + ((("producer", producer),) if producer else ()) + ((("xchg", xchg),) if xchg else ())
                      + ((("gather", gather),) if gather else ()) + ((("join", join),) if join else ())
                      + ((("stores", stores),) if stores else ()) + ((("istamps", 1),) if item_stamps else ())
                      + ((("region", region),) if region else ())
                      + ((("ablate", ablation(ablate)),) if ablate else ()))
    return check_fused_desc(desc)


def cp_k_channels(bc: int = BC) -> np.ndarray:
    """Generation 5's k order within a chunk of bc channels: entry 16 st + slot is the channel that k step st's wgmma
    multiplies in k slot `slot`. Lane q holds channels (bc / 4) q .. + bc / 4 - 1 of a pixel (one load); step st takes
    4 of them: k slots 2q, 2q + 1 <- channels (bc / 4) q + 4 st + 0, 1 and slots 2q + 8, 2q + 9 <- + 2, 3 (at bc = 16
    generation 4's rs_k_slots)."""
    cpi = bc // 4
    out = np.empty(bc, np.int64)
    for st in range(bc // 16):
        for q in range(4):
            for e in range(2):
                out[16 * st + 2 * q + e] = cpi * q + 4 * st + e
                out[16 * st + 2 * q + 8 + e] = cpi * q + 4 * st + 2 + e
    return out


def pack_cp_weights(U: np.ndarray, bc: int = BC) -> np.ndarray:
    """Generation 5's weights [blocks][Cpad' / bc][4 columns][bc / 16 k steps][4 rows][MI][16]: per chunk of bc
    channels (Cpad' = Cpad rounded up to bc, zero channels added), each warpgroup's column in one contiguous
    bulk copy, the k steps' operand tiles in generation 4's swizzled k16 packing (pack_rs_weights) with the channels of
    cp_k_channels; position i = 4 r + c is row r of column c."""
    blocks, L, mi, cpad = U.shape
    if L != 16:
        raise InputError(f"weights of {L} positions", "generation 5 is built for p = 4 (16 positions)")
    if bc not in CP_BC:
        raise InputError(f"{bc} channels per chunk", f"use one of {CP_BC}")
    kpad = -(-cpad // bc) * bc
    U = np.concatenate([U, np.zeros((blocks, L, mi, kpad - cpad), U.dtype)], axis=3) if kpad > cpad else U
    # pack_rs_weights puts channel j of each k16 group in k slot rs_k_slots()[j]: feed it, as channel j of group
    # (chunk, step st), the channel cp_k_channels wants in that slot
    rs = rs_k_slots()
    ch = cp_k_channels(bc)
    order = np.concatenate([ch[16 * st + rs] for st in range(bc // 16)])
    perm = (np.arange(kpad // bc)[:, None] * bc + order[None, :]).ravel()
    cols = [4 * r + c for c in range(4) for r in range(4)]
    packed = pack_rs_weights(np.ascontiguousarray(U[:, cols][..., perm]))     # [b][kpad/16][16][mi][16]
    packed = packed.reshape(blocks, kpad // bc, bc // 16, 4, 4, mi, 16).transpose(0, 1, 3, 2, 4, 5, 6)
    return np.ascontiguousarray(packed)


def fused_generation(desc: KernelDesc) -> int:
    """1 to 5: which template body builds `desc`."""
    return int(desc.extra_dict().get("gen", 1))


def pack_ws_weights(U: np.ndarray) -> np.ndarray:
    """Generation 3's weights: U[blocks, p², MI, Cpad] -> [blocks, Cpad/16, p², MI, 16] (one contiguous bulk copy
    per chunk), the two 8-channel halves of each 32-byte row swapped on every 4th row (wgmma's K-major 32-byte
    swizzle, applied on the host)."""
    blocks, L, mi, cpad = U.shape
    if cpad % BC:
        raise InputError(f"weights of {cpad} channels", f"pad them to a multiple of {BC}")
    out = U.reshape(blocks, L, mi, cpad // BC, 2, 8).transpose(0, 3, 1, 2, 4, 5).copy()
    swap = ((np.arange(mi) >> 2) & 1).astype(bool)
    out[:, :, :, swap] = out[:, :, :, swap][..., ::-1, :]
    return np.ascontiguousarray(out.reshape(blocks, cpad // BC, L, mi, BC))


def rs_k_slots() -> np.ndarray:
    """Generation 4's k order within a 16-channel chunk: slot[ch] = the wgmma k column channel ch goes to.
    Thread q (lane % 4) of the A fragment holds k slots 2q, 2q + 1, 2q + 8, 2q + 9 of its tile rows and loads
    channels 4q .. 4q + 3 (one 8-byte load), so channel 4q + j sits in slot 2q + j % 2 + 8 (j // 2)."""
    ch = np.arange(BC)
    return 2 * (ch // 4) + ch % 2 + 8 * ((ch % 4) // 2)


def pack_rs_weights(U: np.ndarray) -> np.ndarray:
    """Generation 4's weights: generation 3's packing (pack_ws_weights) of U with each chunk's 16 channels
    put in their k slots (rs_k_slots), so that U's k column j meets the A fragment's k slot j."""
    blocks, L, mi, cpad = U.shape
    if cpad % BC:
        raise InputError(f"weights of {cpad} channels", f"pad them to a multiple of {BC}")
    P = np.empty_like(U).reshape(blocks, L, mi, cpad // BC, BC)
    P[..., rs_k_slots()] = U.reshape(blocks, L, mi, cpad // BC, BC)
    return pack_ws_weights(P.reshape(U.shape))


def pack_rs_chunk_map(ckeep: np.ndarray) -> np.ndarray:
    """Generation 4's chunk map: ckeep bool [blocks, 16, chunks] -> uint32 [blocks, chunks, 2], one word per
    (block, chunk, warpgroup h) whose bit a says whether position 8h + a (the warpgroup's a-th) multiplies it."""
    blocks, L, chunks = ckeep.shape
    if L != 16:
        raise InputError(f"a chunk map of {L} positions", "generation 4 is p = 4: pass ckeep[blocks, 16, chunks]")
    bits = ckeep.reshape(blocks, 2, 8, chunks).astype(np.uint32) << np.arange(8, dtype=np.uint32)[:, None]
    return np.ascontiguousarray(bits.sum(axis=2, dtype=np.uint32).transpose(0, 2, 1))


def check_fused_desc(desc: KernelDesc) -> KernelDesc:
    """What the fused template can build; Unsupported naming the first problem."""
    if desc.family != FUSED_FAMILY:
        raise Unsupported(f"kernel {desc.name} is not a {FUSED_FAMILY} kernel", f"use family={FUSED_FAMILY!r}")
    if desc.arch != "sm90":
        raise Unsupported(f"the fused layer kernel is built for sm90, not {desc.arch}", "use a Hopper GPU (sm_90)")
    extra = desc.extra_dict()
    gen = fused_generation(desc)
    if gen == 5:
        return _check_cp(desc, extra)
    if gen == 4:
        return _check_rs(desc, extra)
    if gen == 3:
        return _check_ws(desc, extra)
    if gen == 2:
        return _check_pair(desc, extra)
    p, fb, warps = extra.get("p"), extra.get("fb"), extra.get("warps")
    if desc.dtype not in FUSED_DTYPES:
        raise Unsupported(f"the fused layer kernel has no {desc.dtype} version", f"use one of {', '.join(FUSED_DTYPES)}")
    if p not in FUSED_PS:
        raise Unsupported(f"fused layer kernel for p={p}", f"use p in {FUSED_PS} (F(2,3), F(4,3))")
    if warps != WARPS[p]:
        raise Unsupported(f"{warps} warps for p={p}", f"use {WARPS[p]} (each warp owns p*p/warps positions)")
    mi, bt, bc = desc.tile
    if bc != BC or mi % 16 or bt % 16 or mi < 16 or bt < 16:
        raise Unsupported(f"fused tile {desc.tile}", "use (MI, BT, 16) with MI and BT multiples of 16")
    if not isinstance(fb, int) or fb < 2 or fb % 2:
        raise Unsupported(f"filter block {fb!r}", "use an even number of output channels per block")
    if desc.stages not in (2, 3, 4):
        raise Unsupported(f"{desc.stages} pipeline stages", "use 2, 3 or 4")
    acc = accumulators(p, mi, bt)
    if acc > MAX_ACCUMULATORS:
        raise Unsupported(f"fused tile {mi}x{bt} at p={p} holds {acc} fp32 accumulators per thread "
                          f"(over {MAX_ACCUMULATORS}: register spills)", "use fewer rows (MI) or tiles (BT)")
    need = smem_bytes(p, mi, bt, fb, desc.stages)
    if need > SMEM_LIMIT:
        raise Unsupported(f"fused tile {mi}x{bt}, {desc.stages} stages needs {need // 1024} KB of shared memory",
                          f"use fewer stages or a smaller tile (sm90: {SMEM_LIMIT // 1024} KB)")
    return desc


def fused_desc(dtype: str, p: int, mi: int, *, bt: int | None = None, fb: int | None = None,
               stages: int | None = None) -> KernelDesc:
    """A fused kernel for MI packed rows per position: the widest tile BT (<= 64) whose accumulators fit
    and the deepest pipeline (<= 3) whose shared memory fits, unless given."""
    if p not in FUSED_PS:
        raise Unsupported(f"fused layer kernel for p={p}", f"use p in {FUSED_PS}")
    mi = -(-int(mi) // 16) * 16
    fb = mi if fb is None else int(fb)
    if bt is None:   # the widest tile whose accumulators fit and whose 2-stage ring fits shared memory
        bt = next((b for b in (64, 32, 16) if accumulators(p, mi, b) <= MAX_ACCUMULATORS
                   and smem_bytes(p, mi, b, fb, 2) <= SMEM_LIMIT), 16)
    if stages is None:
        stages = next((s for s in (3, 2) if smem_bytes(p, mi, bt, fb, s) <= SMEM_LIMIT), 2)
    desc = KernelDesc(family=FUSED_FAMILY, dtype=dtype, arch="sm90", tile=(mi, bt, BC), stages=stages,
                      extra=(("p", p), ("fb", fb), ("warps", WARPS.get(p, 0))))
    return check_fused_desc(desc)


# ---------------------------------------------------------------------------------------------
# Host layout
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class FusedLayout:
    """The compact weights and maps of one layer for one filter block width FB (see module doc)."""

    p: int
    n_out: int
    c: int
    fb: int
    mi: int
    U: np.ndarray           # float32 [blocks, p², MI, Cpad]
    inv: np.ndarray         # int16 [blocks, p², FB]
    mtiles: np.ndarray      # int32 [blocks, p²]
    kept: int               # kept weight rows over all (position, filter)
    ckeep: np.ndarray       # bool [blocks, p², Cpad/16]: the chunks each position multiplies (the rest are zero)

    @property
    def blocks(self) -> int:
        return int(self.U.shape[0])

    @property
    def cpad(self) -> int:
        return int(self.U.shape[3])

    @property
    def mma_rows(self) -> int:
        """Weight rows the kernel multiplies (whole 16-row tiles)."""
        return int(self.mtiles.sum()) * 16

    @property
    def identity(self) -> bool:
        """Every position packs the block's filters in order (dense, FP): packed row j is filter j, so the
        kernel may skip the inverse map (generation 2's dense map)."""
        want = np.where(np.arange(self.blocks)[:, None, None] * self.fb + np.arange(self.fb)[None, None, :]
                        < self.n_out, np.arange(self.fb)[None, None, :], -1)
        return self.mi == self.fb and bool((self.inv == want).all())

    @property
    def full_rows(self) -> bool:
        """Every (block, position) fills all MI/16 of its row tiles (WSP-RB with a kept count in (MI - 16, MI]):
        a kernel without per-position tile counts (generation 4's "full" map) wastes nothing by multiplying them
        all."""
        return bool((self.mtiles == self.mi // 16).all())

    @property
    def pruned_chunks(self) -> bool:
        """Some (block, position) skips a chunk of channels (WSP-CB): a kernel with the chunk map saves work."""
        return not bool(self.ckeep.all())

    @property
    def kept_weights(self) -> int:
        """Weights the layer multiplies: each (block, position)'s kept rows times the channels of its kept chunks."""
        width = np.minimum(BC, self.c - BC * np.arange(self.ckeep.shape[2]))          # the last chunk may be half
        return int(((self.inv >= 0).sum(axis=2) * (self.ckeep * width).sum(axis=2)).sum())

    @property
    def pad_waste(self) -> float:
        """Share of the multiplied rows that are padding (compute on zero rows)."""
        return 1.0 - self.kept / self.mma_rows if self.mma_rows else 0.0


def kernel_pad_waste(layout: FusedLayout, desc: KernelDesc) -> float:
    """Share of the rows `desc` multiplies that are padding: the layout's pad_waste (whole 16-row tiles per (block,
    position)) for the kernels that skip a position's empty tiles; the full map (generations 4 and 5, extra map "full")
    multiplies all MI packed rows of every (block, position), so its padding is counted against those."""
    if desc.extra_dict().get("map") != "full":
        return layout.pad_waste
    rows = layout.blocks * layout.p * layout.p * layout.mi
    return 1.0 - layout.kept / rows if rows else 0.0


def _check_weights(W, p: int) -> np.ndarray:
    from cutlass_wsp.pruning import check_weights

    W = check_weights(W)
    if W.shape[0] != p * p:
        raise InputError(f"Winograd weights of shape {W.shape} for p={p}", f"pass W[{p * p}, n, c]")
    return W


def _block_counts(rows, n_out: int, fb: int) -> np.ndarray:
    """Kept rows per (block, position) [blocks, p²] for filter blocks of fb."""
    blocks = -(-n_out // fb)
    return np.stack([np.bincount(np.asarray(r, dtype=np.int64) // fb, minlength=blocks) for r in rows], axis=1)


def row_layout(W, p: int, rows, *, fb: int, n_out: int | None = None, mi: int | None = None,
               ckeep=None) -> FusedLayout:
    """Compact form of weights W[p², n, c] where position i keeps the filters rows[i] (ascending; all n
    for dense). Output channel f = filter f; `n_out` defaults to n. `ckeep`: bool [p², chunks] or
    [blocks, p², chunks], the 16-channel chunks each position keeps (default all); the others are zeroed."""
    W = _check_weights(W, p)
    L, n, c = W.shape
    n_out = n if n_out is None else int(n_out)
    if c % 8:
        raise Unsupported(f"c={c} channels: the fused kernel loads 8 channels (16 bytes) at a time",
                          "use a layer with c a multiple of 8 (the first layer, c=3, runs unfused)")
    if fb < 2 or fb % 2:
        raise InputError(f"filter block {fb}", "use an even block width")
    rows = [np.asarray(r, dtype=np.int64) for r in rows]
    if len(rows) != L or any(r.ndim != 1 or (r.size and (r.min() < 0 or r.max() >= n_out)) for r in rows):
        raise InputError("row lists do not fit the weights", f"give {L} arrays of filter indices in [0, {n_out})")
    blocks = -(-n_out // fb)
    counts = _block_counts(rows, n_out, fb)
    need = max(16, -(-int(counts.max()) // 16) * 16)
    mi = need if mi is None else int(mi)
    if mi < need:
        raise InputError(f"MI={mi} rows per position, a block keeps up to {int(counts.max())}",
                         f"use MI >= {need}")
    cpad = -(-c // BC) * BC
    U = np.zeros((blocks, L, mi, cpad), dtype=np.float32)
    inv = np.full((blocks, L, fb), -1, dtype=np.int16)
    for i, r in enumerate(rows):
        for b in range(blocks):
            sel = r[(r >= b * fb) & (r < (b + 1) * fb)]
            U[b, i, :len(sel), :c] = W[i, sel]
            inv[b, i, sel - b * fb] = np.arange(len(sel), dtype=np.int16)
    mtiles = (-(-counts // 16)).astype(np.int32)
    chunks = cpad // BC
    if ckeep is None:
        ckeep = np.ones((blocks, L, chunks), dtype=bool)
    else:
        ckeep = np.asarray(ckeep, dtype=bool)
        if ckeep.shape not in ((L, chunks), (blocks, L, chunks)):
            raise InputError(f"a chunk map of shape {ckeep.shape}", f"pass bool [{L}, {chunks}] or [{blocks}, {L}, {chunks}]")
        ckeep = np.broadcast_to(ckeep, (blocks, L, chunks)).copy()
        # a chunk a position does not keep is zero weights: skipping its product (the chunk map) changes nothing
        U.reshape(blocks, L, mi, chunks, BC)[np.broadcast_to(~ckeep[:, :, None, :], (blocks, L, mi, chunks))] = 0
    return FusedLayout(p=p, n_out=n_out, c=c, fb=fb, mi=mi, U=U, inv=inv, mtiles=mtiles,
                       kept=int(counts.sum()), ckeep=ckeep)


def dense_layout(W, p: int, *, fb: int = 32, mi: int | None = None, ckeep=None) -> FusedLayout:
    W = _check_weights(W, p)
    n = W.shape[1]
    return row_layout(W, p, [np.arange(n)] * (p * p), fb=fb, mi=mi if mi is not None else -(-fb // 16) * 16,
                      ckeep=ckeep)


# Filter blocks wider than the MMA's N (generation 4, row-pruned forms): a CTA's MI = 32 packed rows per position
# then stand for FB > 32 output channels, so each input chunk it loads and transforms serves FB filters instead of
# 32. The input side (load, transform, the A registers) is what bounds the fused kernel (docs/fused.md), so this,
# not the MMA work the pruned rows leave, is where row pruning buys time (measured on the H200: WSP-RB 0.7 in
# blocks of 96 takes 0.52x the dense layer's time on VGG conv4_2). The menu (WSP-RB's blocks) keeps the kernel
# count small: FB is a compile-time constant of the epilogue.
WIDE_FB = WSP_RB_BLOCKS


def wide_filter_block(rows, n_out: int, mi: int = 32, menu: tuple[int, ...] = WIDE_FB) -> int:
    """The widest filter block of `menu` in which no (block, position) keeps more than `mi` of the rows
    rows[i] (position i's kept filters, as in row_layout): generation 4's FB for a row-pruned layer."""
    fit = [fb for fb in block_menu(n_out, mi, menu) if _block_counts(rows, n_out, fb).max() <= mi]
    if not fit:
        raise Unsupported(f"every filter block of {menu} keeps more than {mi} rows in some position",
                          "prune more rows, or use a kernel with more rows per position")
    return max(fit)


def balanced_block(ratio: float, n_out: int, mi: int = 32) -> int:
    """The widest filter block whose WSP-RB kept count at `ratio` fits `mi` rows (pruning.wsp_rb_block, WSP-RB's
    default block): prune(..., "wsp-rb", ratio, block=balanced_block(ratio, n)) fills whole row tiles of generation
    4's "full" map with the least padding the menu allows (0.5: 64, 0.7: 96, 0.75: 128, 0.9: 320, capped by the
    layer's width)."""
    return wsp_rb_block(ratio, n_out, rows=mi)


def layout_for(pruned: Any, p: int, *, fb: int = 32, mi: int | None = None) -> FusedLayout:
    """The fused layout of a `pruning.Pruned` (dense, fp, wsp-r, wsp-rb, wsp-cb). FP drops the pruned filters
    from the output (a layer of n' channels); WSP-CB keeps every row, its chunk map marks the pruned
    16-channel blocks. `mi`: packed rows per position (default: the fewest whole 16-row tiles that hold every
    block's kept rows)."""
    pattern = pruned.pattern
    W = np.asarray(pruned.weights)
    if pattern == "dense":
        return dense_layout(W, p, fb=fb, mi=mi)
    if pattern == "fp":
        kept = np.asarray(pruned.rows[0])
        return dense_layout(W[:, kept, :], p, fb=fb, mi=mi)
    if pattern in ("wsp-r", "wsp-rb"):
        return row_layout(W, p, pruned.rows, fb=fb, mi=mi)
    if pattern == "wsp-cb":   # the pruning's blocks are the kernel's chunks (pruning.WSP_CB_BLOCK == BC)
        return dense_layout(W, p, fb=fb, mi=mi, ckeep=np.asarray(pruned.mask)[:, 0, ::BC])
    raise Unsupported(f"no fused layout for pattern {pattern!r}", "use dense, fp, wsp-r, wsp-rb or wsp-cb")


# ---------------------------------------------------------------------------------------------
# The family on the GPU
# ---------------------------------------------------------------------------------------------

def packed_weights(desc: KernelDesc, layout: FusedLayout) -> tuple[np.ndarray, int]:
    """The layout's weights as `desc`'s generation reads them, and the channel count K they are packed for (the
    layout's Cpad; generation 5 pads it to whole chunks of its tile's channels)."""
    gen = fused_generation(desc)
    pack = {3: pack_ws_weights, 4: pack_rs_weights,
            5: lambda U: pack_cp_weights(U, desc.tile[2])}.get(gen, np.ascontiguousarray)
    U = pack(layout.U)
    return U, U.size // (layout.blocks * layout.p * layout.p * layout.mi)


class FusedLayer:
    """Construct (host: layout and kernel choice), `setup()` (upload, load the kernel), then
    `prepare(d, out)` -> a launch-only callable. d: NHWC [batch, H, W, c]; out: NHWC [batch, H, W, n_out],
    both in the dtype's storage (bf16 as uint16 bits)."""

    def __init__(self, layout: FusedLayout, dtype: str, desc: KernelDesc | None = None):
        self.layout = layout
        self.dtype = dtype
        self.desc = check_fused_desc(desc) if desc is not None else fused_desc(dtype, layout.p, layout.mi,
                                                                              fb=layout.fb)
        if self.desc.tile[0] != layout.mi or self.desc.extra_dict()["fb"] != layout.fb:
            raise InputError(f"kernel {self.desc.name} is for MI={self.desc.tile[0]}, FB={self.desc.extra_dict()['fb']}; "
                             f"the layout has MI={layout.mi}, FB={layout.fb}", "build the layout with the kernel's MI and FB")
        self._dev: tuple | None = None
        self.kernel = None

    @property
    def kernel_descs(self) -> list[KernelDesc]:
        return [self.desc]

    def setup(self, cache: Any = None) -> "FusedLayer":
        import cupy

        from cutlass_wsp.gpu.arrays import from_host
        from cutlass_wsp.kernels.library import get_kernel

        self.kernel = get_kernel(self.desc, cache)
        lay = self.layout
        U, self._k = packed_weights(self.desc, lay)
        # generation 4 with the chunk map reads it (the other kernels multiply the zero chunks)
        cmap = cupy.asarray(pack_rs_chunk_map(lay.ckeep)) if "cmap" in self.desc.extra_dict() else None
        self._dev = (from_host(U, self.dtype), cupy.asarray(lay.inv), cupy.asarray(lay.mtiles), cmap)
        cupy.cuda.get_current_stream().synchronize()
        return self

    def output_shape(self, batch: int, H: int, W: int) -> tuple[int, int, int, int]:
        return (batch, H, W, self.layout.n_out)

    def prepare(self, d: Any, out: Any, *, stream: Any = None) -> Callable[[], None]:
        from cutlass_wsp.families.gather import Launches, check_device_array, kernel_step, Workspace
        from cutlass_wsp.gpu.launch import bound_stream_pointer, sm_count
        from cutlass_wsp.kernels.library import make_args

        if self._dev is None:
            raise InputError("the fused layer was not set up", "call setup() before prepare()")
        lay = self.layout
        if getattr(d, "ndim", 0) != 4 or d.shape[3] != lay.c:
            raise InputError(f"input of shape {getattr(d, 'shape', None)}", f"pass NHWC [batch, H, W, {lay.c}]")
        batch, H, W, _ = (int(s) for s in d.shape)
        check_device_array("input", d, (batch, H, W, lay.c), self.dtype)
        check_device_array("output", out, self.output_shape(batch, H, W), self.dtype)
        U, inv, mtiles, cmap = self._dev
        dev = d.device.id
        # the chunk map travels in gather_index: a pointer field the whole-layer kernels leave unused
        extra = {} if cmap is None else dict(gather_index=cmap.data.ptr)
        args = make_args(M=lay.blocks, K=self._k, L=lay.p * lay.p, A=U.data.ptr, B=d.data.ptr, D=out.data.ptr,
                         batch=batch, H=H, W=W, C=lay.c, n_out=lay.n_out, index_a=inv.data.ptr,
                         index_b=mtiles.data.ptr, sm_count=sm_count(dev), device_id=dev, **extra)
        self.kernel.check(args)
        step = kernel_step(self.kernel, args, Workspace(), bound_stream_pointer(stream))
        return Launches([step], (d, out, U, inv, mtiles, cmap))

    def run(self, d: Any, out: Any, *, stream: Any = None) -> Any:
        self.prepare(d, out, stream=stream)()
        return out


# ---------------------------------------------------------------------------------------------
# The registry: the fused kernel family (config search) and the sweep's points
# ---------------------------------------------------------------------------------------------

PRUNED_FB = 64   # filter block of generation 1's pruned forms (p = 6)


@dataclass(frozen=True)
class FusedTuneProblem:
    """What a fused kernel's best configuration depends on: the layer (p, batch, H, W, c, n_out) and its
    packed layout (rows per position MI, filter block FB, the identity map, a digest of the kept rows per
    (block, position): the MMA work the rows leave, and for WSP-CB the kept 16-channel chunks per (block,
    position): the products generation 4's chunk map skips)."""

    p: int
    batch: int
    H: int
    W: int
    c: int
    n_out: int
    mi: int
    fb: int
    identity: bool
    counts: tuple[int, ...]          # kept rows per (block, position), row-major [blocks][p²]
    chunks: tuple[int, ...] = ()     # kept chunks per (block, position) where some are pruned (WSP-CB), else ()

    def key_fields(self) -> dict[str, Any]:
        import hashlib

        digest = hashlib.sha256(",".join(map(str, self.counts)).encode()).hexdigest()[:12]
        key = {"p": self.p, "B": self.batch, "H": self.H, "W": self.W, "c": self.c, "n": self.n_out,
               "MI": self.mi, "FB": self.fb, "map": "dense" if self.identity else "rows", "rows": digest}
        if self.chunks:   # absent otherwise: the keys of problems tuned before stay the same
            key["chunks"] = hashlib.sha256(",".join(map(str, self.chunks)).encode()).hexdigest()[:12]
        return key

    @classmethod
    def of(cls, layout: FusedLayout, batch: int, H: int, W: int) -> "FusedTuneProblem":
        counts = tuple(int(k) for k in (layout.inv >= 0).sum(axis=2).reshape(-1))
        chunks = tuple(int(k) for k in layout.ckeep.sum(axis=2).reshape(-1)) if layout.pruned_chunks else ()
        return cls(layout.p, batch, H, W, layout.c, layout.n_out, layout.mi, layout.fb, layout.identity, counts,
                   chunks)

    def layout(self, rng: np.random.Generator) -> FusedLayout:
        """A random layout with exactly these kept counts (the tuner's operands)."""
        L = self.p * self.p
        blocks = -(-self.n_out // self.fb)
        W = rng.standard_normal((L, self.n_out, self.c)).astype(np.float32) * np.float32(np.sqrt(2.0 / (9 * self.c)))
        if self.identity:
            ckeep = None
            if self.chunks:   # the same count of kept chunks per (block, position), at random places
                nck = -(-self.c // BC)
                ckeep = np.zeros((blocks, L, nck), dtype=bool)
                for (b, i), k in np.ndenumerate(np.asarray(self.chunks).reshape(blocks, L)):
                    ckeep[b, i, rng.choice(nck, k, replace=False)] = True
            return dense_layout(W, self.p, fb=self.fb, mi=self.mi, ckeep=ckeep)
        counts = np.asarray(self.counts).reshape(blocks, L)
        rows = [np.sort(np.concatenate([b * self.fb + rng.choice(min(self.fb, self.n_out - b * self.fb),
                                                                 counts[b, i], replace=False)
                                        for b in range(blocks)])).astype(np.int64) for i in range(L)]
        return row_layout(W, self.p, rows, fb=self.fb, mi=self.mi)


# Dense and FP layouts (the identity map) at p = 4 choose their filter block, and with it the kernel: 64 runs
# generation 5 at 32 channels a chunk with vertical tile pairs, 32 generation 4. Measured on the H200 (2026-12-05,
# fp16, batch 32, results/fused/gen5-pin-time-h200.jsonl, dense and FP 0.5 / 0.7 / 0.9 on 12 layers): generation 5 is
# 1.12-1.56x generation 4 on the dense layers of c >= 128, 0.97-1.03x at c = 64 (2 chunks per CTA: the fixed cost
# dominates); on FP layers blocks of 64 pad more filters (FP 0.7 of 512 keeps 154: 192 against 160), which it paid
# back up to 1.2x padding at c >= 128 and up to 1.33x at c >= 256, not at 2x (FP 0.9 of 256 keeps 26) on VGG's 56 x 56
# layer. The rule picks the faster kernel in 43 of the 48 cells (misses: c = 64 by 2-4%, ResNet-18 layer3's FP 0.9 by
# 36%). bf16 keeps generation 4: generation 5's bf16 transform runs in fp32 and was not timed against it.
# from c input channels on (c = 128: 4 chunks per CTA), the most padded filters (blocks of 64 against 32) it paid back.
# c = 64 since the tma epilogue and the persistent pair (H100, 2026-12-05, results/fused/gen5-persist-walk-time-h100.jsonl):
# generation 5's persistent pair with the tma epilogue is 1.31-1.36x generation 4 on the three dense layers of c = 64
# (VGG conv1_2, conv2_1, ResNet-18 layer1), unpadded; FP there pads 2x and stays with generation 4 (0.36 vs 0.56 ms).
GEN5_MAX_PAD = {64: 1.0, 128: 1.2, 256: 1.34}
# Up to this many input channels (8 chunks of 32 an item) generation 5 runs as persistent pairs, above it one-shot: on
# the H100 (same file) the persistent pair with the tma epilogue beat the one-shot tma kernel on all six layers of
# c <= 128 (1.02-1.12x) and lost on all six of c >= 256 (0.91-0.98x): it saves ~0.9 us of fixed cost an item but its
# chunks ran ~0.17 us slower (docs/fused.md, "Generation 5: the tma epilogue and the persistent pair"). With the
# producer in the conflict-free warpgroup (producer="light", H100, sixth session: results/fused/gen5-light-time-h100.jsonl)
# the persistent pair gained 1.06x and the one-shot kernel 1.01x (1.01-1.04x at c >= 256); the persistent pair then wins
# on c = 256 layers with many items (VGG conv3_2, conv4_1: 1.04x), ties on conv4_2 and loses on the small-grid ones
# (ResNet-18 layer3, c = 512 layers: 0.96-0.98x). With the exchanges in fp16 too (xchg="half", the same session:
# results/fused/gen5-half-time-h100.jsonl) the persistent pair is again 1.03-1.04x the one-shot kernel on conv3_2 and
# conv4_1 and 0.98x on layer3, so the limit is c = 256; the tuning menu holds the other schedule.
GEN5_PERSISTENT_MAX_C = 256


# Row-pruned layouts (WSP-R, WSP-RB) at p = 4 (fp16) run generation 5's full map with the push gather (64 packed rows
# per position, wide_filter_block at mi=64) from c input channels on, unless its rows per filter are more than this
# many times generation 4's (32 rows in wide_filter_block's block: 2 FB4 / FB5). Measured on the H100 (2026-12-05,
# seventh session, results/fused/gen5-push-time-h100.jsonl, WSP-RB 0.5 / 0.7 / 0.9 on 12 layers, both kernels in the
# same run): the push gather is 1.19-1.45x generation 4 on every layer of c >= 256 at 0.5 and 0.7 (1.0x padding), at
# 0.9 (2x: blocks of 320 hold 32 kept rows) 1.10-1.74x on c = 512 and on two of the three c = 256 layers (VGG conv3_2:
# 0.79x); at c = 128 1.00-1.18x at 0.5 / 0.7 (1.5x on the n = 128 layers at 0.7; VGG conv3_1 0.7: 0.92x) and
# 0.64-0.74x at 0.9 (2x); at c = 64 0.50-0.58x but VGG conv2_1 (0.91x, 1.12x, 0.58x): the fixed cost of two chunks.
# The rule picks the faster kernel in 31 of the 34 cells that differ by more than 1%.
# bf16 keeps generation 4 (not timed).
GEN5_FULL_MAX_PAD = {128: 1.5, 256: 2.0}


def row_filter_block(rows, c: int, n_out: int, dtype: str) -> tuple[int, int | None]:
    """(FB, MI) of a row-pruned layout at p = 4: generation 5's full map in wide_filter_block(mi=64) where it measured
    faster than generation 4 (GEN5_FULL_MAX_PAD), else generation 4's widest block of 32 rows (MI None: the fewest
    whole row tiles)."""
    fb4 = wide_filter_block(rows, n_out)
    limit = max((v for k, v in GEN5_FULL_MAX_PAD.items() if c >= k), default=0.0)
    if dtype == "fp16" and limit:
        try:
            fb5 = wide_filter_block(rows, n_out, mi=64)
        except Unsupported:
            fb5 = 0
        if fb5 and 2 * fb4 <= limit * fb5:
            return fb5, 64
    return fb4, None


def identity_filter_block(c: int, n_out: int, dtype: str) -> int:
    """The filter block of a dense or FP layout (n_out: the layer's kept filters) at p = 4: 64 where generation 5 at 32
    channels a chunk (with vertical tile pairs) measured faster than generation 4 (see GEN5_MAX_PAD), else 32."""
    pad64, pad32 = -(-n_out // 64) * 64, -(-n_out // 32) * 32
    limit = max((v for k, v in GEN5_MAX_PAD.items() if c >= k), default=0.0)
    return 64 if dtype == "fp16" and pad64 <= limit * pad32 else 32


def _gen5_dense_map(problem: FusedTuneProblem) -> bool:
    """An identity layout in the filter blocks of 64 identity_filter_block picks for generation 5 (no chunk map)."""
    return problem.p == 4 and problem.identity and not problem.chunks and problem.mi == problem.fb == 64


def _gen5_full_map(problem: FusedTuneProblem) -> bool:
    """A row layout of 64 packed rows per position (row_filter_block's pick for generation 5's full map)."""
    return problem.p == 4 and not problem.identity and problem.mi == 64 and problem.fb >= 64


def _gen5_full_menu(problem: FusedTuneProblem, dtype: str) -> list[KernelDesc]:
    """Generation 5's full map at 32 channels a chunk with vertical tile pairs: the push gather with ms in fp16, the
    light producer, the relaxed joins and the fast stores (1.12-1.37x the plain push gather on every layer at WSP-RB
    0.5 / 0.7 / 0.9, H100, eighth session: results/fused/gen5-{push-fast,wg-push-fast}-time-h100.jsonl), the plain push gather
    (1.2-1.3x the batched one), the batched one, the first (each position's loads branched, the partner's read
    remotely). The first with the region in planes (CP_REGIONS: 1.023-1.027x in geomean over 12 layers at WSP-RB and
    WSP-R 0.7 in two runs, H100, tenth and eleventh sessions: results/fused/gen5-planes-push-time-h100.jsonl,
    gen5-planes2-time-h100.jsonl), then without."""
    kw = dict(bc=32, vpair=True, fb=problem.fb, full_rows=True)
    fast = dict(gather="push", producer="light", xchg="half", join="relaxed", stores="fast")
    return ([cp_desc(dtype, 64, region="planes", **fast, **kw), cp_desc(dtype, 64, **fast, **kw)]
            + [cp_desc(dtype, 64, gather=g, **kw) for g in ("push", "batched", None)])


def _gen5_menu(problem: FusedTuneProblem, dtype: str) -> list[KernelDesc]:
    """Generation 5 at 32 channels a chunk with vertical tile pairs, in order: for fp16 the tma epilogue with the raw
    ring's producer in the conflict-free warpgroup (producer="light") and the exchanges in fp16 (xchg="half"), in the
    layer's schedule (persistent pairs up to GEN5_PERSISTENT_MAX_C input channels, one-shot above), then in the other;
    then the same with fp32 exchanges (bf16's first: its 8-bit mantissa is not rounded into the sums), then thread 0
    as the producer, then the async epilogue, each in both. For fp16 the first kind's one-shot kernel has the region
    in planes (CP_REGIONS), then comes without: 1.022x and 1.029x in geomean over 12 layers, dense, in two runs (H100,
    tenth and eleventh sessions; the persistent pair 0.998x and 0.992x, so it keeps the linear region)."""
    scheds = ("persistent", None) if problem.c <= GEN5_PERSISTENT_MAX_C else (None, "persistent")
    kinds = ((("tma", "light", "half"),) if dtype == "fp16" else ()) + (("tma", "light", None), ("tma", None, None),
                                                                        ("async", None, None))
    return [cp_desc(dtype, 64, bc=32, vpair=True, epi=epi, sched=sched, producer=prod, xchg=xchg, region=region)
            for epi, prod, xchg in kinds for sched in scheds
            for region in (("planes", None) if sched is None and xchg == "half" else (None,))]


def default_desc(problem: FusedTuneProblem, dtype: str) -> KernelDesc:
    """p = 4: generation 5 at 32 channels a chunk with vertical tile pairs and the tma epilogue (the pair's part by
    st.async, the output by one TMA store a CTA: 1.11x the async one on the H100), the raw ring's producer in the
    warpgroup whose column loads without bank conflicts (1.06x persistent, 1.01x one-shot) and, for fp16, the
    epilogue's exchanges in fp16 (1.05x), as persistent pairs up to c = 256 (GEN5_PERSISTENT_MAX_C), above that
    one-shot with the region in planes (fp16, 1.02-1.03x), for identity layouts in filter blocks of 64 without a chunk
    map (identity_filter_block chooses those blocks where it measured faster); generation 4 where its
    16 or 32 packed rows per position hold the layout (the dense map with the register epilogue; row layouts with the
    unbranched "full" map, measured faster than the branching "rows" map on the H200, docs/fused.md), else generation
    2 (8 warps); p = 6: generation 1."""
    if problem.p == 4:
        if _gen5_dense_map(problem):
            return _gen5_menu(problem, dtype)[0]
        if _gen5_full_map(problem):
            return _gen5_full_menu(problem, dtype)[0]
        try:
            return rs_desc(dtype, problem.mi, fb=problem.fb, dense_map=problem.identity,
                           full_rows=not problem.identity, cmap=bool(problem.chunks))
        except Unsupported:
            return pair_desc(dtype, problem.mi, fb=problem.fb, dense_map=problem.identity)
    return fused_desc(dtype, problem.p, problem.mi, fb=problem.fb)


def candidates_for(problem: FusedTuneProblem, dtype: str) -> list[KernelDesc]:
    """The default first, then the other kernels that build for the layout: generation 4's other epilogue or row
    map, then generation 2's warp counts and tile; for p = 6 generation 1's pipeline depths and tiles."""
    out = [default_desc(problem, dtype)]
    if _gen5_dense_map(problem):   # the rest of generation 5's menu, the plain epilogue, then in order without the
        out += _gen5_menu(problem, dtype)[1:] + [   # tile pairs, at 32 and 16 channels
            cp_desc(dtype, 64, bc=32, vpair=True), cp_desc(dtype, 64, bc=32), cp_desc(dtype, 64)]
    if _gen5_full_map(problem):    # the full map's other gathers
        out += _gen5_full_menu(problem, dtype)[1:]
    if problem.p == 4:
        rs = [dict(dense_map=True, epi="smem")] if problem.identity else [dict()]    # the "rows" map
        cmap = dict(cmap=True) if problem.chunks else {}        # generation 2 multiplies WSP-CB's zero chunks
        tries = [(rs_desc, {**kw, **cmap}) for kw in rs] + [(pair_desc, dict(dense_map=problem.identity, **kw))
                                                            for kw in (dict(), dict(warps=16), dict(bt=32))]
        for make, kw in tries:
            try:
                out.append(make(dtype, problem.mi, fb=problem.fb, **kw))
            except Unsupported:
                pass
    else:
        for kw in (dict(stages=3), dict(bt=16, stages=3), dict(bt=16, stages=4)):
            try:
                out.append(fused_desc(dtype, problem.p, problem.mi, fb=problem.fb, **kw))
            except Unsupported:
                pass
    return list(dict.fromkeys(out))


class FusedKernel(KernelFamily):
    """`fused` (templates/fused_sm90.cu.j2 + _fused_pair.cu.j2): the whole layer in one launch, tuned per
    FusedTuneProblem. The budgeted default tune of `sweep`/`bench` leaves it at its default (a short menu
    of one: nothing to choose); `--tune` times the full menu (`candidates_for`)."""

    name = FUSED_FAMILY
    archs = ("sm90",)
    problem_type = FusedTuneProblem
    limit = 5
    short_limit = 1
    bench_point = None          # whole layers: bench/fused_layer.py, not bench/tune_families.py

    def default(self, problem: FusedTuneProblem, dtype: str, arch: str) -> KernelDesc:
        return default_desc(problem, dtype)

    def candidates(self, problem: FusedTuneProblem, dtype: str, arch: str, *, sm_count: int = 0,
                   limit: int | None = None, short: bool = False) -> list[KernelDesc]:
        self.check_problem(problem)
        if arch != "sm90":
            raise Unsupported(f"the fused layer kernel is built for sm90, not {arch}", "use a Hopper GPU (sm_90)")
        found = candidates_for(problem, dtype)
        return found[: 1 if short else min(limit or self.limit, self.limit)]

    def check(self, desc: KernelDesc) -> KernelDesc:
        return check_fused_desc(desc.validate())

    def measure(self, dtype: str, cache: Any) -> "FusedMeasure":
        return FusedMeasure(dtype, cache)


class FusedMeasure(CandidateMeasure):
    """One fused candidate: a random layout with the problem's kept counts, a fresh random input, the
    output poisoned, checked against the fp32 unfused pipeline with the same weights, then timed."""

    def __call__(self, problem: FusedTuneProblem, desc: KernelDesc, budget_s: float):
        layout = problem.layout(np.random.default_rng())
        self.load(desc)
        op = layer_op(layout, self.dtype, desc, problem.batch, problem.H, problem.W, self.cache,
                      f"{desc.name} (tuning)")
        return self.run(desc, op.launch, outputs=op.out, result=op.result, reference=op.reference,
                        check=op.check, budget_s=budget_s)


def layer_weights32(layout: FusedLayout, dtype: str) -> Any:
    """The masked Winograd weights the kernel multiplies, rounded to the dtype, as float32 [p², n_out, c]
    on the GPU (rebuilt from the packed form, so the reference checks the packing too)."""
    import cupy

    from cutlass_wsp.gpu.arrays import to_float32, to_storage

    L = layout.p * layout.p
    W = np.zeros((L, layout.n_out, layout.c), dtype=np.float32)
    for b in range(layout.blocks):
        for i in range(L):
            fl = np.flatnonzero(layout.inv[b, i] >= 0)
            W[i, b * layout.fb + fl] = layout.U[b, i, layout.inv[b, i, fl], :layout.c]
    return cupy.asarray(to_float32(to_storage(W, dtype), dtype))


def layer_op(layout: FusedLayout, dtype: str, desc: KernelDesc, batch: int, H: int, W: int, cache: Any,
             what: str, *, tuned: bool | None = None) -> Op:
    """A fused layer as a whole-layer Op: fresh random NHWC input, the output (poisoned by the harness),
    the fp32 unfused pipeline with the same packed weights as reference, the fused floor as cost."""
    from cutlass_wsp.dtypes import get_dtype
    from cutlass_wsp.gpu import arrays
    from cutlass_wsp.gpu.harness import Check
    from cutlass_wsp.gpu.transforms import LAYER_LAYOUT, fp32_layer_reference
    from cutlass_wsp.gpu.verify import layer_rtol
    from cutlass_wsp.winograd import tile_grid

    dt = get_dtype(dtype)
    layer = FusedLayer(layout, dtype, desc).setup(cache)
    d = arrays.random((batch, H, W, layout.c), dtype)
    out = arrays.empty(layer.output_shape(batch, H, W), dtype)

    def reference():
        return fp32_layer_reference(arrays.to_float32(d, dtype), layer_weights32(layout, dtype), layout.p, batch,
                                    layout.n_out, H, W)

    th, tw = tile_grid(H, W, layout.p - 2)
    T = batch * th * tw
    cost = Cost(2.0 * layout.kept_weights * T,
                float(dt.itemsize * (batch * H * W * (layout.c + layout.n_out) + layout.kept_weights)))
    config = {**kernel_config(desc), "filter_block": layout.fb, "rows_per_position": layout.mi,
              "pad_waste": round(kernel_pad_waste(layout, desc), 4), "layout": LAYER_LAYOUT}
    return Op(layer.prepare(d, out), out, lambda: out, desc.name, cost, config, {"layout": LAYER_LAYOUT}, x=d,
              reference=reference, check=Check(dt, what, shape=out.shape, K=layout.c, rtol=layer_rtol(dt, layout.p, layout.c)),
              scope=LAYER, tuned=tuned)


FUSED_KERNEL = FusedKernel()


class FusedFamily(Family):
    """The fused layer in the sweep: implementation `fused` of dense, FP, WSP-R (any balance), WSP-RB and WSP-CB.
    p = 4: dense and FP in the filter block identity_filter_block picks (64: generation 5 at 32 channels a chunk with
    vertical tile pairs; 32: generation 4), WSP-CB in filter blocks of 32 (generation 4 with the chunk map), WSP-R and
    WSP-RB where row_filter_block picks it (fp16, c >= 128) in the widest filter block whose (block, position)s keep at
    most 64 rows with generation 5's full map and the push gather, else in the widest that keeps at most 32
    (wide_filter_block; WSP-RB's default block is one) with generation 4; p = 6 runs generation 1 (dense: filter block
    32, pruned: 64)."""

    name = FUSED_FAMILY
    description = "the whole Winograd layer in one sm90 kernel: input transform, p² products, output transform"
    order = 5
    scope = LAYER
    kernels = (FUSED_KERNEL,)
    serves = tuple(Serves(pattern, "fused", ANY, description="the whole layer in one kernel: the transforms "
                          "inside, X and Y never in memory (docs/fused.md); its time is the layer time")
                   for pattern in ("dense", "fp", "wsp-r", "wsp-rb", "wsp-cb"))

    @staticmethod
    def layout(ctx: PointContext) -> FusedLayout:
        pt = ctx.point
        if pt.p not in FUSED_PS:
            raise Unsupported(f"the fused layer kernel has no p={pt.p} version", f"use p in {FUSED_PS}")
        if ctx.dt.name not in FUSED_DTYPES:
            raise Unsupported(f"the fused layer kernel has no {ctx.dt.name} version",
                              f"use one of {', '.join(FUSED_DTYPES)}")
        pd = ctx.pruned
        if pt.p == 4:
            if pt.pattern in ("dense", "fp"):
                n_kept = len(pd.rows[0]) if pt.pattern == "fp" else pt.n
                return layout_for(pd, 4, fb=identity_filter_block(pt.c, n_kept, ctx.dt.name))
            if pt.pattern == "wsp-cb":   # every row, its pruned chunks skipped (generation 4's chunk map)
                return layout_for(pd, 4, fb=32)
            fb, mi = row_filter_block(pd.rows, pt.c, pt.n, ctx.dt.name)
            return layout_for(pd, 4, fb=fb, mi=mi)
        return layout_for(pd, pt.p, fb=32 if pt.pattern == "dense" else PRUNED_FB)

    def _choice(self, ctx: PointContext, layout: FusedLayout) -> tuple[FusedTuneProblem, KernelDesc, bool]:
        pt = ctx.point
        problem = FusedTuneProblem.of(layout, pt.batch, pt.H, pt.W)
        desc, tuned = ctx.choose(FUSED_FAMILY, problem, default_desc(problem, ctx.dt.name))
        return problem, desc, tuned

    def plan(self, ctx: PointContext) -> KernelPlan:
        if ctx.arch != "sm90":
            raise Unsupported(f"the fused layer kernel is built for sm90, not {ctx.arch}", "use a Hopper GPU (sm_90)")
        problem, desc, tuned = self._choice(ctx, self.layout(ctx))
        return KernelPlan((desc,), FUSED_FAMILY, problem, tuned)

    def build(self, ctx: PointContext) -> Op:
        pt = ctx.point
        layout = self.layout(ctx)
        _, desc, tuned = self._choice(ctx, layout)
        op = layer_op(layout, ctx.dt.name, desc, pt.batch, pt.H, pt.W, ctx.cache, f"fused {pt.key}", tuned=tuned)
        pd = ctx.pruned
        op.fields.update(kept_m=[int(k) for k in pd.kept_per_position] if pt.pattern != "dense" else None,
                         nnz=int(pd.mask.sum()), kept_fraction=float(pd.mask.mean()))
        return op


FAMILY = FusedFamily()
