"""How fast a fused Winograd layer with register accumulators can run on Hopper, at best (docs/fused.md, "The bounds").

A design family that contains generations 3 and 4 and every variant we could think of: the input region of a
rectangle of `tiles` tiles lands in shared memory (TMA); consumer warpgroups each own a block of positions (a row
group x a column group of the p x p tile) for `tiles` tiles and `filters` filters; each transforms its positions'
V from the region into wgmma's A registers (it reads every patch pixel those positions need) and multiplies with
U from shared memory (wgmma m64nNk16, fp32 accumulators in registers); a cluster of `cluster` CTAs may split the
warpgroups, each CTA loading the region itself. Per 16-channel chunk and CTA the model counts

  tensor cycles    positions x tiles x filters x 16 FMAs at `fma_per_clk` per SM;
  port wavefronts  (128 B of the shared-memory port each) the region's TMA write, the transform's pixel reads
                   (32 B per pixel: 16 fp16 channels; times the bank conflict no column order avoids, load_conflict),
                   U's bulk write and wgmma's read of U;
  L2 -> SM bytes   the region (shared by `mcast` CTAs of other filter blocks through TMA multicast) and U;
  issue cycles     the warps' instructions (instructions_per_warp: the transform, its loads, the wgmmas and a fixed
                   part calibrated on generation 4's SASS) at `issue_per_clk`,

and a layer's bound is the largest of the four totals spread evenly over the SMs. Everything the real kernel adds
is left out, so the bound is optimistic: the epilogue, wave quantization, the prologue, avoidable bank conflicts,
latency.
Which designs exist is set by the register file: each thread holds positions x filters / 2 accumulators plus one
wgmma's A fragment in flight and `overhead` registers (generation 4 measured 68: addresses, pixel loads, the
transform's temporaries).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache

from cutlass_wsp.errors import InputError
from cutlass_wsp.layers import Layer
from cutlass_wsp.winograd import matrices, tile_grid, tile_m

CHUNK = 16                 # channels per mainloop step: one k16 of wgmma
PIXEL_BYTES = CHUNK * 2    # one fp16 pixel of a chunk
WAVEFRONT = 128            # bytes the shared-memory port moves per cycle


@dataclass(frozen=True)
class Hopper:
    """Per-SM rates of an H100/H200 SXM (dense fp16 wgmma, boost clock) and the L2 -> SM bandwidth seen on the H200
    (docs/fused.md: 5.9 TB/s reached by an L2-bound build, 8.6 TB/s the peak Nsight Compute's percentage implies)."""

    sms: int = 132
    clock_hz: float = 1.98e9
    fma_per_clk: int = 2048
    regs_per_sm: int = 65536
    max_regs_per_thread: int = 255
    smem_bytes: int = 227 * 1024
    l2_Bps: float = 8.6e12
    issue_per_clk: float = 4.0   # warp instructions an SM issues per cycle (4 schedulers: at most 4)


@dataclass(frozen=True)
class Design:
    p: int                 # input tile (4: F(2,3), 6: F(4,3))
    row_groups: int        # the p rows of V split in this many groups ...
    col_groups: int        # ... and the p columns: row_groups x col_groups warpgroups per cluster
    filters: int           # wgmma N: filters per CTA
    cluster: int = 1       # CTAs sharing the warpgroups (each loads the region)
    mcast: int = 1         # CTAs of other filter blocks sharing each region load (L2 only)
    tiles: int = 64        # wgmma M: tiles per CTA
    overhead: int = 64     # registers per thread besides accumulators and the A fragment in flight
    shared_v: bool = False  # V through shared memory (generation 3's SS): one idealized transform pass
    kept: float = 1.0      # row pruning balanced per (position, filter block), WSP-RB: each position keeps this share
                           # of the block's filters, packed into `filters` rows, so a block holds filters / kept
    k_steps: int = 1       # k16 steps per chunk (raw stage): a lane loads k_steps x 4 channels of a pixel at once

    @property
    def block_filters(self) -> int:
        """Output channels of one CTA's filter block."""
        return max(self.filters, round(self.filters / self.kept))

    @property
    def groups(self) -> int:
        """Consumer warpgroups per CTA."""
        return self.row_groups * self.col_groups // self.cluster

    @property
    def positions_per_group(self) -> int:
        return (self.p // self.row_groups) * (self.p // self.col_groups)

    @property
    def positions_per_cta(self) -> int:
        return self.p * self.p // self.cluster

    def regs_per_thread(self) -> int:
        # each further k step holds its A fragments (4 per position) and its half of the loaded pixels (2 registers
        # per pixel of the block, two tiles) until its products are issued
        extra = (self.k_steps - 1) * (4 * self.positions_per_group + 4 * self.pixels_per_group())
        return self.positions_per_group * self.filters // 2 + 4 + self.overhead + extra

    def pixels_per_group(self) -> int:
        """Patch pixels one warpgroup reads per tile (the largest over the CTA's blocks)."""
        return max(_lines_needed(self.p, r) * _lines_needed(self.p, c)
                   for r in line_groups(self.p, self.row_groups) for c in line_groups(self.p, self.col_groups))

    def why_not(self, hw: Hopper = Hopper()) -> str | None:
        """None if the design can exist, else the constraint it breaks."""
        if self.p % self.row_groups or self.p % self.col_groups:
            return "the groups must split the rows and columns evenly"
        if (self.row_groups * self.col_groups) % self.cluster:
            return "the cluster must split the warpgroups evenly"
        if self.filters % 8 or not 8 <= self.filters <= 256:
            return "wgmma N is a multiple of 8 in 8..256"
        if not 0 < self.kept <= 1:
            return "the kept share of rows is in (0, 1]"
        if self.k_steps not in (1, 2):
            return "1 or 2 k16 steps per chunk"
        if self.cluster * self.mcast > 16:
            return "a cluster holds at most 16 CTAs"
        regs = self.regs_per_thread()
        if regs > hw.max_regs_per_thread:
            return f"{regs} registers per thread"
        if regs * 128 * self.groups > hw.regs_per_sm:
            return f"{regs} x {128 * self.groups} threads exceed the register file"
        return None

    def label(self) -> str:
        s = f"p{self.p} {self.row_groups}x{self.col_groups} groups, N={self.filters}"
        if self.cluster > 1:
            s += f", {self.cluster} CTAs split them"
        if self.mcast > 1:
            s += f", region multicast x{self.mcast}"
        if self.kept < 1:
            s += f", {self.filters} of {self.block_filters} rows kept"
        if self.k_steps > 1:
            s += f", {16 * self.k_steps} channels a chunk"
        return s + (", V in shared memory" if self.shared_v else "")


@lru_cache(maxsize=None)
def _line_support(p: int) -> tuple[frozenset[int], ...]:
    """For each row r of B^T: the input rows (or columns) that V's row (column) r reads."""
    bt = matrices(tile_m(p))[2]
    return tuple(frozenset(k for k in range(p) if bt[r][k] != 0) for r in range(p))


def _lines_needed(p: int, group) -> int:
    """Input lines (rows or columns of the patch) V's lines `group` read: the union of their supports."""
    sup = _line_support(p)
    return len(frozenset().union(*(sup[r] for r in group)))


@lru_cache(maxsize=None)
def _line_ops(p: int) -> tuple[int, ...]:
    """Packed-half2 operations that make V's line r from the input lines it reads: one add (or fma) per term past the
    first, and a multiply first where a coefficient is not +-1."""
    bt = matrices(tile_m(p))[2]
    return tuple(len(_line_support(p)[r]) - 1 + any(abs(bt[r][k]) not in (0, 1) for k in range(p)) for r in range(p))


@lru_cache(maxsize=None)
def line_groups(p: int, groups: int) -> tuple[tuple[int, ...], ...]:
    """`groups` equal groups of V's p lines that read the fewest input lines in all (each group reads the union of its
    lines' supports): the best partition."""
    if p % groups:
        raise InputError(f"{groups} groups of V's {p} lines", "use a divisor of p")
    size = p // groups

    def best(left: frozenset[int]) -> tuple[int, tuple[tuple[int, ...], ...]]:
        if not left:
            return 0, ()
        first = min(left)
        out = None
        for rest in itertools.combinations(sorted(left - {first}), size - 1):
            group = (first, *rest)
            cost, tail = best(left - frozenset(group))
            need = _lines_needed(p, group) + cost
            if out is None or need < out[0]:
                out = (need, (group, *tail))
        return out

    return best(frozenset(range(p)))[1]


def lines_read(p: int, groups: int) -> int:
    """Input lines the best partition of V's lines into `groups` reads in all."""
    return sum(_lines_needed(p, g) for g in line_groups(p, groups))


def transform_ops(p: int, rows: tuple[int, ...], cols: tuple[int, ...]) -> tuple[int, int]:
    """(operations, first-pass results) per tile and packed half2 that make V's block rows x cols from the patch, in
    the cheaper order of the two passes (V = B^T d B is separable): generation 4's two rows of F(2,3) take 8 + 8."""
    ops = _line_ops(p)
    need_r, need_c = _lines_needed(p, rows), _lines_needed(p, cols)
    rows_first = (need_c * sum(ops[r] for r in rows) + len(rows) * sum(ops[c] for c in cols), need_c * len(rows))
    cols_first = (need_r * sum(ops[c] for c in cols) + len(cols) * sum(ops[r] for r in rows), need_r * len(cols))
    return min(rows_first, cols_first)


# Instructions per warp and chunk outside the transform, its loads and the wgmmas: the waits, the producer's and the
# leader's branches, loop control (ISSUE_FIXED), and per wgmma its descriptor and fences (ISSUE_PER_WGMMA). Calibrated
# so that generation 4's dense kernel comes out at the 286 Nsight Compute counted (docs/fused.md).
ISSUE_FIXED, ISSUE_PER_WGMMA = 126, 4


def instructions_per_warp(d: Design) -> float:
    """Instructions a warp issues per 16 channels (RS designs), the average over the CTA's warpgroups: per thread two
    tiles (wgmma M = 64 over 128 threads) of 4 channels (two packed half2) each; the transform's operations and its
    rotation selects (one per first-pass result: the conflict-free column order of generation 4), one 8-byte load per
    patch pixel its block reads, one wgmma per position, and the fixed part. With k_steps per chunk the loads (one of
    k_steps x 8 bytes per pixel) and the fixed part are shared by the steps."""
    rows, cols = line_groups(d.p, d.row_groups), line_groups(d.p, d.col_groups)
    total = 0.0
    for r in rows:
        for c in cols:
            ops, firsts = transform_ops(d.p, r, c)
            pixels = _lines_needed(d.p, r) * _lines_needed(d.p, c)
            wgmmas = len(r) * len(c) * (d.tiles // 64)
            per_step = ISSUE_PER_WGMMA * wgmmas + wgmmas + 2 * 2 * (ops + firsts)
            total += (ISSUE_FIXED + d.k_steps * per_step + 2 * pixels) / d.k_steps
    return total / (len(rows) * len(cols))


def pixels_read_per_tile(d: Design) -> float:
    """Patch pixels the CTA's warpgroups read per tile and chunk: for a block of rows x columns of V, the union of
    its rows' input rows times the union of its columns' input columns (V = B^T d B)."""
    return lines_read(d.p, d.row_groups) * lines_read(d.p, d.col_groups) / d.cluster


BANK_GROUPS = WAVEFRONT // PIXEL_BYTES   # 32-byte pixels per 128-byte period of the banks


def load_conflict(p: int, cols: tuple[int, ...]) -> int:
    """Wavefronts per conflict-free one of a warpgroup's 8-byte pixel loads when it makes V's columns `cols`: every
    lane of a load reads the same relative pixel of its tile, a half-warp's 4 tiles start m pixels apart, and a
    per-tile column order can only move them among the bank groups (start + input column) mod 4 that the starts and
    the input columns the block reads reach, so at best ceil(4 / reached) tiles share a group (cutlass_wsp/fused_banks:
    generation 4's rotation and generation 5's swap reach it; F(2,3)'s columns 0 and 3 alone reach 2 groups)."""
    m = tile_m(p)
    starts = {(k * m) % BANK_GROUPS for k in range(BANK_GROUPS)}
    support = frozenset().union(*(_line_support(p)[c] for c in cols))
    reached = {(s + j) % BANK_GROUPS for s in starts for j in support}
    return -(-BANK_GROUPS // len(reached))


def read_wavefronts_per_tile(d: Design) -> float:
    """Port wavefronts of the CTA's pixel loads per tile and chunk: pixels_read_per_tile, each column block's share
    times its load_conflict, 32 bytes per pixel."""
    cols = line_groups(d.p, d.col_groups)
    weighted = sum(_lines_needed(d.p, c) * load_conflict(d.p, c) for c in cols)
    return lines_read(d.p, d.row_groups) * weighted / d.cluster * PIXEL_BYTES / WAVEFRONT


@dataclass(frozen=True)
class ChunkCost:
    tensor_cycles: float
    region_write: float    # wavefronts
    transform_read: float
    u_write: float
    u_read: float
    l2_bytes: float
    issue_cycles: float = 0.0   # the CTA's warp instructions / Hopper.issue_per_clk (RS designs; V in shared memory: 0)

    @property
    def port_cycles(self) -> float:
        return self.region_write + self.transform_read + self.u_write + self.u_read


def rectangles(d: Design, batch: int, H: int, W: int, hw: Hopper = Hopper()) -> list[tuple[int, int]]:
    """(input-region pixels per rectangle, rectangles over the layer) of every rectangle of d.tiles tiles (images x
    tile rows x tile columns, powers of two, as the kernels pick them) whose region fits two ring stages in half of
    the shared memory."""
    m = d.p - 2
    th, tw = tile_grid(H, W, m)
    out = []
    for by, bx in itertools.product([2 ** i for i in range(7)], repeat=2):
        if d.tiles % (by * bx):
            continue
        bi = d.tiles // (by * bx)
        pix = (by * m + 2) * (bx * m + 2) * bi
        if 2 * pix * PIXEL_BYTES * d.k_steps <= hw.smem_bytes // 2:
            out.append((pix, -(-batch // bi) * -(-th // by) * -(-tw // bx)))
    return out


def chunk_cost(d: Design, region: int, hw: Hopper = Hopper()) -> ChunkCost:
    pos = d.positions_per_cta
    u_bytes = pos * d.filters * PIXEL_BYTES
    if d.shared_v:
        # every region pixel read once (column passes shared by neighbouring tiles, exchanged for free), then the
        # CTA's positions of V written and read back by wgmma as its A operand
        reads = (region + 2 * pos * d.tiles) * PIXEL_BYTES / WAVEFRONT
    else:
        reads = d.tiles * read_wavefronts_per_tile(d)
    return ChunkCost(
        tensor_cycles=pos * d.tiles * d.filters * CHUNK / hw.fma_per_clk,
        region_write=region * PIXEL_BYTES / WAVEFRONT,
        transform_read=reads,
        u_write=u_bytes / WAVEFRONT,
        u_read=u_bytes * (d.tiles // 64) / WAVEFRONT,
        l2_bytes=region * PIXEL_BYTES / d.mcast + u_bytes,
        issue_cycles=0.0 if d.shared_v else 4 * d.groups * instructions_per_warp(d) / hw.issue_per_clk)


@dataclass(frozen=True)
class LayerBound:
    design: Design
    tensor_s: float
    port_s: float
    l2_s: float
    issue_s: float = 0.0

    @property
    def seconds(self) -> float:
        return max(self.tensor_s, self.port_s, self.l2_s, self.issue_s)

    @property
    def limit(self) -> str:
        return max((self.tensor_s, "tensor"), (self.port_s, "shared-memory port"), (self.l2_s, "L2 -> SM"),
                   (self.issue_s, "issue"))[1]


def layer_bound(d: Design, layer: Layer, batch: int, hw: Hopper = Hopper()) -> LayerBound:
    """The design's bound on the layer, with its best tile rectangle."""
    out = None
    for region, rects in rectangles(d, batch, layer.H, layer.W, hw):
        c = chunk_cost(d, region, hw)
        steps = rects * -(-layer.n // d.block_filters) * d.cluster * -(-layer.c // CHUNK)   # CTA-chunks
        per_sm = steps / hw.sms
        b = LayerBound(d, tensor_s=per_sm * c.tensor_cycles / hw.clock_hz,
                       port_s=per_sm * c.port_cycles / hw.clock_hz,
                       l2_s=steps * c.l2_bytes / hw.l2_Bps,
                       issue_s=per_sm * c.issue_cycles / hw.clock_hz)
        if out is None or b.seconds < out.seconds:
            out = b
    return out


def designs(p: int, *, overhead: int = 64, shared_v: bool = False, kept: float = 1.0,
            hw: Hopper = Hopper()) -> list[Design]:
    """Every design of the family that fits the register file, for p = 4 or 6 (`kept` < 1: WSP-RB's)."""
    tile_m(p)
    out = []
    divisors = [g for g in range(1, p + 1) if p % g == 0]
    for rg, cg in itertools.product(divisors, repeat=2):
        for cluster in (1, 2, 3, 4, 6, 8):
            for mcast in (1, 2, 4):
                for f in range(8, 257, 8):
                    d = Design(p, rg, cg, f, cluster=cluster, mcast=mcast, overhead=overhead, shared_v=shared_v,
                               kept=kept)
                    if d.why_not(hw) is None:
                        out.append(d)
    return out


def best_bound(layer: Layer, batch: int, p: int, *, overhead: int = 64, shared_v: bool = False, kept: float = 1.0,
               hw: Hopper = Hopper()) -> LayerBound:
    """The lowest bound over every design of the family for this layer."""
    return min((layer_bound(d, layer, batch, hw)
                for d in designs(p, overhead=overhead, shared_v=shared_v, kept=kept, hw=hw)),
               key=lambda b: (b.seconds, b.design.cluster * b.design.mcast))


def geomean(xs) -> float:
    xs = list(xs)
    return math.exp(sum(math.log(x) for x in xs) / len(xs))
