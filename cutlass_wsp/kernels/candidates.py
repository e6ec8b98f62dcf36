"""The kernel configurations worth timing for one dense GEMM batch: a small declared set per shape.

These GEMMs (M = n and K = c in 64..512, N = T large) are memory-bound or near the ridge, so the
candidates follow from where bytes go (docs/tuning.md):
- B = X[K, N] is the big operand and is read once per tile row of M: a tile M equal to M (up to 256)
  reads X exactly once, so tile M is the largest of 64/128/256 not far above M, plus the next smaller.
- 2x1 clusters multicast each B tile to the two CTAs of a cluster when M spans several tile rows.
- ping-pong overlaps one tile's epilogue with the next tile's mainloop (short K loops: K = 64..512);
  cooperative splits a 128/256-row tile over two warp groups.
- When the tiles fill fewer than ~2 waves of SMs (the small late layers), narrower tiles (ping-pong,
  1x2 clusters) spread the work over all SMs; tile K 128 halves the k-blocks of short K loops.
The default kernel (`manifest.select`) is always candidate 0, so tuning never loses the baseline.
Order is deterministic (the declared order below), duplicates are dropped, every candidate passes
`validate()`, and at most MAX_CANDIDATES are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable

from cutlass_wsp.errors import Unsupported
from cutlass_wsp.kernels.description import KernelDesc
from cutlass_wsp.kernels.manifest import select
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


# --------------------------------------------------------------------------------------- shape rules
def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def tile_m_choices(M: int, sizes: Iterable[int] = (256, 128, 64)) -> list[int]:
    """The largest tile M that leaves at most MAX_ROW_WASTE of its rows empty, and the next smaller one
    (largest first). M = 64 -> [64]; 128 -> [128, 64]; 256, 512 -> [256, 128]; 80 -> [64]."""
    fits = [t for t in sorted(sizes, reverse=True) if t == min(sizes) or not _wastes(M, t)]
    return fits[:2]


def tile_count(problem: BatchProblem, tile: tuple[int, int, int]) -> int:
    """CTA tiles of the batch (one persistent CTA per SM works through them)."""
    return problem.L * _ceil_div(problem.M, tile[0]) * _ceil_div(problem.N, tile[1])


def waves(problem: BatchProblem, tile: tuple[int, int, int], sm_count: int = DEFAULT_SM_COUNT) -> float:
    return tile_count(problem, tile) / sm_count


def wave_fill(problem: BatchProblem, tile: tuple[int, int, int], sm_count: int = DEFAULT_SM_COUNT) -> float:
    """Fraction of the SM slots of all waves that hold a tile (1.0: the last wave is full)."""
    tiles = tile_count(problem, tile)
    return tiles / (_ceil_div(tiles, sm_count) * sm_count)


def fitted_tile_n(problem: BatchProblem, tm: int, sm_count: int = DEFAULT_SM_COUNT) -> int | None:
    """A tile N from FIT_TILE_N for shapes of under FIT_WAVES waves of (tm x 128) tiles: the one whose
    last wave is fullest, if it wastes at most FIT_MAX_WASTE of its last column tile and fills the
    waves FIT_MIN_GAIN better than 128; else None. Ties go to the wider tile (fewer re-reads of W)."""
    base = (tm, 128, 64)
    if waves(problem, base, sm_count) >= FIT_WAVES:
        return None
    best: tuple[float, int] | None = None
    for tn in FIT_TILE_N:
        covered = _ceil_div(problem.N, tn) * tn
        if (covered - problem.N) > FIT_MAX_WASTE * covered:
            continue
        fill = wave_fill(problem, (tm, tn, 64), sm_count)
        if fill >= wave_fill(problem, base, sm_count) + FIT_MIN_GAIN and (best is None or (fill, tn) > best):
            best = (fill, tn)
    return best[1] if best else None


def _wastes(extent: int, tile: int) -> bool:
    """A tile that leaves more than MAX_ROW_WASTE of its last row or column empty."""
    covered = _ceil_div(extent, tile) * tile
    return covered - extent > MAX_ROW_WASTE * covered


def shape_allows(desc: KernelDesc, problem: BatchProblem) -> bool:
    """Shape filter: tile M no larger than the largest that fits M (tile_m_choices), tile N not far
    above N (64 always allowed), and a cluster no larger than the tile grid it multicasts over."""
    m, n, _ = desc.tile
    if m > tile_m_choices(problem.M)[0] or (n > 64 and _wastes(problem.N, n)):
        return False
    cm, cn, _ = desc.cluster
    return cm <= _ceil_div(problem.M, m) and cn <= _ceil_div(problem.N, n)


# ------------------------------------------------------------------------------------------- menus
def _sm90_recipes(problem: BatchProblem, dtype: str, sm_count: int) -> list[Recipe]:
    """fp16/bf16 menu, pruned by the H100 batch-32 run (docs/tuning.md, "Pruned"): ping-pong won 15 of
    24 shapes, so it gets the new variants (2x1 clusters, tile K 128, narrow tiles); the no-smem
    epilogue, the non-persistent kernel, stream-K/split-K, 256x64 and the 2x1 clusters of 128x256 and
    256x128 never won and are gone."""
    if dtype == "tf32":
        return _sm90_tf32_recipes(problem)
    M, K = problem.M, problem.K
    pp = "tma_ws_pingpong"
    out: list[Recipe] = []
    tms = tile_m_choices(M)
    for tm in tms:
        if tm == 64:
            out += [Recipe((64, 128, 64), pp), Recipe((64, 256, 64), pp)]
            if M > 64:     # two 64-row CTAs share each X tile through TMA multicast: X read once
                out += [Recipe((64, 128, 64), pp, cluster=(2, 1, 1)), Recipe((64, 256, 64), pp, cluster=(2, 1, 1))]
            if K % 128 == 0:
                out += [Recipe((64, 128, 128), pp)]
        elif tm == 128:
            out += [Recipe((128, 128, 64)), Recipe((128, 256, 64)), Recipe((128, 128, 64), pp)]
            if K % 128 == 0:   # half the k-blocks (and their barrier round trips) per tile
                out += [Recipe((128, 128, 128), pp)]
            if M > 128:
                out += [Recipe((128, 128, 64), pp, cluster=(2, 1, 1)), Recipe((128, 128, 64), cluster=(2, 1, 1))]
                # 2x2: each W tile multicast to the 2 N-neighbours and each X tile to the 2 M-neighbours,
                # halving the L2->SM bytes of the K = 256..512 shapes, which re-read both operands.
                out += [Recipe((128, 128, 64), cluster=(2, 2, 1)), Recipe((128, 128, 64), pp, cluster=(2, 2, 1))]
        else:  # 256
            out += [Recipe((256, 128, 64)), Recipe((256, 128, 64), cluster=(1, 2, 1))]
            if M > 256:
                out += [Recipe((256, 128, 64), cluster=(2, 2, 1))]
    # Few waves: a tile N that splits N evenly and fills the last wave better than 128 does (the tile
    # count of a small layer is fixed by its shape; cuBLAS's fixed tile menu cannot fit it).
    for tm in tms:     # the widest fitted tiles hold too many accumulators; validate() drops them
        tn = fitted_tile_n(problem, tm, sm_count)
        if tn is not None:
            out += [Recipe((tm, tn, 64), "tma_ws_cooperative" if tm >= 128 else pp)]
    # Few tiles (the small late layers): narrower tiles put more CTAs in flight; ping-pong hides each
    # tile's epilogue behind the other warp group's mainloop, and a 1x2 cluster multicasts the W tile
    # (A, the big operand when N is small) to both N-neighbours.
    tm = tms[0]
    if waves(problem, (tm, 128, 64), sm_count) < FEW_WAVES and tm >= 128:
        out += [Recipe((128, 64, 64)), Recipe((128, 64, 64), pp), Recipe((64, 128, 64), pp),
                Recipe((128, 64, 64), pp, cluster=(1, 2, 1))]
    return out


def _sm90_tf32_recipes(problem: BatchProblem) -> list[Recipe]:
    """tf32 swaps A and B inside CUTLASS (docs/kernels.md): cooperative needs our tile N >= 128 and the
    epilogue is the transposed one; tile K 32 (128 bytes)."""
    out: list[Recipe] = []
    for tm in tile_m_choices(problem.M):
        out += [Recipe((tm, 128, 32)), Recipe((tm, 256, 32)),
                Recipe((tm, 128, 32), "tma_ws_pingpong"), Recipe((tm, 64, 32), "tma_ws_pingpong")]
        if tm == 64:
            out += [Recipe((tm, 128, 32), "tma_ws")]
        if problem.M > tm:
            out += [Recipe((tm, 128, 32), cluster=(2, 1, 1))]
    return out


def _sm80_recipes(problem: BatchProblem, dtype: str, sm_count: int) -> list[Recipe]:
    k = 32 if dtype != "tf32" else 16        # 64-byte K slices; 128-byte slices below
    k2 = 2 * k
    out: list[Recipe] = []
    for tm in tile_m_choices(problem.M):
        if tm == 256:
            out += [Recipe((256, 128, k), warp=(64, 64, k))]
        elif tm == 128:
            out += [Recipe((128, 128, k)), Recipe((128, 256, k), warp=(64, 64, k)),
                    Recipe((128, 128, k2), warp=(64, 64, k2)), Recipe((128, 64, k))]
        else:
            out += [Recipe((64, 128, k)), Recipe((64, 256, k), warp=(64, 64, k)), Recipe((64, 64, k)),
                    Recipe((64, 128, k), stages=6), Recipe((64, 128, k2), warp=(32, 64, k2))]
    if waves(problem, (tile_m_choices(problem.M)[0], 128, k), sm_count) < FEW_WAVES:
        out += [Recipe((tile_m_choices(problem.M)[0], 64, k))]
    return out


def _adapt(recipe: Recipe, base: KernelDesc) -> KernelDesc | None:
    """The recipe as a description with the base's family, dtype, arch and alignment. Below 16-byte
    alignment sm90 loads with cp.async: TMA schedules become cp.async ones, without clusters/stream-K."""
    extra: tuple = (("scheduler", recipe.scheduler),) if recipe.scheduler else ()
    if recipe.splits > 1:
        extra += (("splits", recipe.splits),)
    if base.arch == "sm80":
        return replace(base, tile=recipe.tile, stages=recipe.stages, warp=recipe.warp)
    schedule, cluster, epilogue = recipe.schedule, recipe.cluster, recipe.epilogue
    if base.alignment_bytes < 16:
        if recipe.scheduler or cluster != (1, 1, 1) or schedule == "tma_ws":
            return None
        schedule, epilogue = schedule.replace("tma_ws", "cpasync_ws"), "auto"
    return replace(base, tile=recipe.tile, stages=recipe.stages, cluster=cluster, kernel_schedule=schedule,
                   epilogue_schedule=epilogue, extra=extra)


# -------------------------------------------------------------------------------------------- API
def candidates(problem: BatchProblem, dtype: str, arch: str, *, family: str = "dense",
               sm_count: int = DEFAULT_SM_COUNT, limit: int = MAX_CANDIDATES) -> list[KernelDesc]:
    """Descriptions to time for `problem` as the kernel sees it (packed EC2B layout: N = Npad, K
    padded), default first, deterministic order, each valid and allowed by the shape."""
    if family != "dense":
        raise Unsupported(f"no tuning candidates for family {family!r}", "tune family 'dense'")
    if limit < 1:
        raise Unsupported(f"candidate limit {limit}", "keep at least 1 candidate (the default)")
    base = select(problem, dtype, arch, family=family)
    if base.arch == "sm90":
        recipes = _sm90_recipes(problem, dtype, sm_count)
    else:
        recipes = _sm80_recipes(problem, dtype, sm_count)
    out: dict[KernelDesc, None] = {base: None}
    for r in recipes:
        d = _adapt(r, base)
        if d is None or d in out:
            continue
        try:
            d.validate()
        except Unsupported:
            continue
        if shape_allows(d, problem):
            out[d] = None
    return list(out)[:limit]


def candidate_union(problems: Iterable[BatchProblem], dtype: str, arch: str, *,
                    sm_count: int = DEFAULT_SM_COUNT, limit: int = MAX_CANDIDATES) -> list[KernelDesc]:
    """Every description the problems' candidate sets name, each once, in first-seen order."""
    out: dict[KernelDesc, None] = {}
    for p in problems:
        out.update(dict.fromkeys(candidates(p, dtype, arch, sm_count=sm_count, limit=limit)))
    return list(out)
