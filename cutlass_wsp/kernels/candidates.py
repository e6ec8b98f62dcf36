"""The machinery of candidate menus: which kernel configurations are worth timing for one GEMM batch.

The menus themselves belong to the kernel families (`families/dense.py`, `families/gather.py`,
`families/wsp_r.py`: `KernelFamily.recipes`), which state them as `Recipe`s in the problem's terms;
this module holds what they share: the shape rules, `adapt` (a recipe on the family's default) and
`menu` (default first, then each new, valid, shape-allowed recipe, at most `limit`).

These GEMMs (M = n and K = c in 64..512, N = T large) are memory-bound or near the ridge, so the
candidates follow from where bytes go (docs/tuning.md):
- B = X[K, N] is the big operand and is read once per tile row of M: a tile M equal to M (up to 256)
  reads X exactly once, so tile M is the largest of 64/128/256 not far above M, plus the next smaller.
- 2x1 clusters multicast each B tile to the two CTAs of a cluster when M spans several tile rows.
- ping-pong overlaps one tile's epilogue with the next tile's mainloop (short K loops: K = 64..512);
  cooperative splits a 128/256-row tile over two warp groups.
- When the tiles fill fewer than ~2 waves of SMs (the small late layers), narrower tiles (ping-pong,
  1x2 clusters) spread the work over all SMs; tile K 128 halves the k-blocks of short K loops.
The default kernel is always candidate 0, so tuning never loses the baseline. Order is deterministic
(the declared order), duplicates are dropped, every candidate passes the family's check, and at most
`limit` are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterable

from cutlass_wsp.errors import Unsupported
from cutlass_wsp.kernels.description import KernelDesc
from cutlass_wsp.problem import BatchProblem

DEFAULT_SM_COUNT = 132          # H100 SXM and H200; pass the GPU's own count when one is at hand
MAX_CANDIDATES = 16
FEW_WAVES = 2.0                 # below this many waves of tiles, try narrow tiles and 1x2 clusters
FIT_WAVES = 8.0                 # below this many waves, a last partial wave costs enough to fit tile N to it
FIT_TILE_N = (96, 160, 192, 224)   # wgmma takes any N multiple of 8; TMA/smem atoms want multiples of 32
FIT_MAX_WASTE = 0.05            # a fitted tile N leaves at most this fraction of its last column tile empty
FIT_MIN_GAIN = 0.05             # ... and fills the last wave at least this much better than tile N 128
MAX_ROW_WASTE = 0.25            # a tile M may leave at most this fraction of its rows empty


@dataclass(frozen=True)
class Recipe:
    """One configuration on the menu, in the problem's terms (sm90 tf32 tiles are ours, not CUTLASS's)."""

    tile: tuple[int, int, int]
    schedule: str = "tma_ws_cooperative"      # sm90 kernel schedule; ignored on sm80
    cluster: tuple[int, int, int] = (1, 1, 1)
    epilogue: str = "auto"
    scheduler: str | None = None              # extra 'scheduler' (None = persistent)
    splits: int = 1                           # extra 'splits' (split-K through the stream-K scheduler)
    warp: tuple[int, int, int] = (0, 0, 0)    # sm80 warp tile (0 = 2x2 warps)
    stages: int = 0                           # 0 = auto
    swizzle: int = 1                          # sm80 threadblock swizzle (gather_b honours it)


# --------------------------------------------------------------------------------------- shape rules
def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def tile_m_choices(M: int, sizes: Iterable[int] = (256, 128, 64)) -> list[int]:
    """The largest tile M that leaves at most MAX_ROW_WASTE of its rows empty, and the next smaller one
    (largest first). M = 64 -> [64]; 128 -> [128, 64]; 256, 512 -> [256, 128]; 80 -> [64]."""
    fits = [t for t in sorted(sizes, reverse=True) if t == min(sizes) or not wastes(M, t)]
    return fits[:2]


def tile_count(problem: BatchProblem, tile: tuple[int, int, int]) -> int:
    """CTA tiles of the batch (one persistent CTA per SM works through them)."""
    return problem.L * ceil_div(problem.M, tile[0]) * ceil_div(problem.N, tile[1])


def waves(problem: BatchProblem, tile: tuple[int, int, int], sm_count: int = DEFAULT_SM_COUNT) -> float:
    return tile_count(problem, tile) / sm_count


def wave_fill(problem: BatchProblem, tile: tuple[int, int, int], sm_count: int = DEFAULT_SM_COUNT) -> float:
    """Fraction of the SM slots of all waves that hold a tile (1.0: the last wave is full)."""
    tiles = tile_count(problem, tile)
    return tiles / (ceil_div(tiles, sm_count) * sm_count)


def fitted_tile_n(problem: BatchProblem, tm: int, sm_count: int = DEFAULT_SM_COUNT) -> int | None:
    """A tile N from FIT_TILE_N for shapes of under FIT_WAVES waves of (tm x 128) tiles: the one whose
    last wave is fullest, if it wastes at most FIT_MAX_WASTE of its last column tile and fills the
    waves FIT_MIN_GAIN better than 128; else None. Ties go to the wider tile (fewer re-reads of W)."""
    base = (tm, 128, 64)
    if waves(problem, base, sm_count) >= FIT_WAVES:
        return None
    best: tuple[float, int] | None = None
    for tn in FIT_TILE_N:
        covered = ceil_div(problem.N, tn) * tn
        if (covered - problem.N) > FIT_MAX_WASTE * covered:
            continue
        fill = wave_fill(problem, (tm, tn, 64), sm_count)
        if fill >= wave_fill(problem, base, sm_count) + FIT_MIN_GAIN and (best is None or (fill, tn) > best):
            best = (fill, tn)
    return best[1] if best else None


def wastes(extent: int, tile: int) -> bool:
    """A tile that leaves more than MAX_ROW_WASTE of its last row or column empty."""
    covered = ceil_div(extent, tile) * tile
    return covered - extent > MAX_ROW_WASTE * covered


def shape_allows(desc: KernelDesc, problem: BatchProblem) -> bool:
    """Shape filter: tile M no larger than the largest that fits M (tile_m_choices), tile N not far
    above N (64 always allowed), and a cluster no larger than the tile grid it multicasts over."""
    m, n, _ = desc.tile
    if m > tile_m_choices(problem.M)[0] or (n > 64 and wastes(problem.N, n)):
        return False
    cm, cn, _ = desc.cluster
    return cm <= ceil_div(problem.M, m) and cn <= ceil_div(problem.N, n)


def adapt(recipe: Recipe, base: KernelDesc) -> KernelDesc | None:
    """The recipe as a description with the base's family, dtype, arch and alignment. Below 16-byte
    alignment sm90 loads with cp.async: TMA schedules become cp.async ones, without clusters/stream-K."""
    extra: tuple = (("scheduler", recipe.scheduler),) if recipe.scheduler else ()
    if recipe.splits > 1:
        extra += (("splits", recipe.splits),)
    if base.arch == "sm80":
        return replace(base, tile=recipe.tile, stages=recipe.stages, warp=recipe.warp, swizzle=recipe.swizzle)
    schedule, cluster, epilogue = recipe.schedule, recipe.cluster, recipe.epilogue
    if base.alignment_bytes < 16:
        if recipe.scheduler or cluster != (1, 1, 1) or schedule == "tma_ws":
            return None
        schedule, epilogue = schedule.replace("tma_ws", "cpasync_ws"), "auto"
    return replace(base, tile=recipe.tile, stages=recipe.stages, cluster=cluster, kernel_schedule=schedule,
                   epilogue_schedule=epilogue, extra=extra)


def menu(base: KernelDesc, recipes: Iterable[Recipe], adapt: Callable[[Recipe], KernelDesc | None],
         allows: Callable[[KernelDesc], bool], check: Callable[[KernelDesc], object], limit: int) -> list[KernelDesc]:
    """The default, then each recipe adapted to it that is new, passes `check` and the shape filter."""
    out: dict[KernelDesc, None] = {base: None}
    names = {base.name}     # one kernel, one trial: e.g. sm80 warp (0,0,0) and its explicit 2x2 shape
    for r in recipes:
        d = adapt(r)
        if d is None or d in out or d.name in names:
            continue
        try:
            check(d)
        except Unsupported:
            continue
        if allows(d):
            out[d] = None
            names.add(d.name)
    return list(out)[:limit]
