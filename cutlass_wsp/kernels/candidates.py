"""The kernel configurations worth timing for one GEMM batch: a small declared set per shape and family.

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

The pruned families have their own menus (same rules, "gather_b" and "wsp_r_grouped" below): fused
WSP-C's gather kernel (CUTLASS 2.x, cp.async) and unbalanced WSP-R's grouped kernel (CUTLASS 3.x
ptr-array), each starting with the configuration the family picks untuned.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable

from cutlass_wsp.errors import InputError, Unsupported
from cutlass_wsp.kernels.description import KernelDesc
from cutlass_wsp.kernels.manifest import select
from cutlass_wsp.problem import BatchProblem, GatherTuneProblem, GroupedTuneProblem

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
        return replace(base, tile=recipe.tile, stages=recipe.stages, warp=recipe.warp, swizzle=recipe.swizzle)
    schedule, cluster, epilogue = recipe.schedule, recipe.cluster, recipe.epilogue
    if base.alignment_bytes < 16:
        if recipe.scheduler or cluster != (1, 1, 1) or schedule == "tma_ws":
            return None
        schedule, epilogue = schedule.replace("tma_ws", "cpasync_ws"), "auto"
    return replace(base, tile=recipe.tile, stages=recipe.stages, cluster=cluster, kernel_schedule=schedule,
                   epilogue_schedule=epilogue, extra=extra)


# ------------------------------------------------------------------------- gather_b (fused WSP-C)
GATHER_FAMILY = "gather_b"              # = families.gather.GATHER_FAMILY (not imported: keeps this light)
GROUPED_FAMILY = "wsp_r_grouped"        # = families.wsp_r.GROUPED_FAMILY
DEEP_STAGES = 6                         # sm80 stages beyond the auto 96 KB budget (H100/A100 have room)
PRUNED_MAX_CANDIDATES = 12              # the pruned families' menus: at most this many per problem


def _gather_recipes(problem: GatherTuneProblem, base: KernelDesc, sm_count: int) -> list[Recipe]:
    """The gather kernel is memory-bound on X (B: K gathered rows of Npad columns, 16-byte cp.async per
    row segment): tile M up to M reads X once; deeper pipelines keep more gathered rows in flight (the
    index load sits in front of every row's copy); a swizzle runs N-neighbours of one row segment
    together when M spans several tile rows; tile K 64 halves the k-iterations of long K loops."""
    M, K = problem.M, problem.K
    k = base.tile[2]                                   # 32: 64 bytes of fp16/bf16 (128 of tf32)
    k2 = 2 * k if 2 * k * base.itemsize <= 128 and not _wastes(K, 2 * k) else None
    tms = tile_m_choices(M)
    out: list[Recipe] = []
    for tm in tms:
        if tm == 256:
            out += [Recipe((256, 128, k), warp=(64, 64, k)),
                    Recipe((256, 128, k), warp=(64, 64, k), stages=DEEP_STAGES)]
        elif tm == 128:
            out += [Recipe((128, 128, k), stages=DEEP_STAGES), Recipe((128, 256, k), warp=(64, 64, k))]
            if k2:
                out += [Recipe((128, 128, k2), warp=(64, 64, k2))]
            if M > 128:
                out += [Recipe((128, 128, k), swizzle=2), Recipe((128, 128, k), swizzle=4)]
        else:
            out += [Recipe((64, 128, k)), Recipe((64, 256, k), warp=(64, 64, k)),
                    Recipe((64, 128, k), stages=DEEP_STAGES)]
            if k2:
                out += [Recipe((64, 128, k2))]
    # Few tiles (late layers, small N): narrower tiles put more CTAs on the SMs (64x32 warps: 4 or 8
    # warps, not 2x2 warps of 128 rows).
    if waves(problem, (tms[0], 128, k), sm_count) < FEW_WAVES:
        out += [Recipe((tms[0], 64, k), warp=(min(tms[0], 64), 32, k))]
    return out


def _gather_candidates(problem: GatherTuneProblem, dtype: str, sm_count: int, limit: int) -> list[KernelDesc]:
    from cutlass_wsp.families.gather import gather_desc

    base = gather_desc(dtype, N=problem.N, K=problem.K)   # what WspC(mode="fused") runs untuned
    recipes = _gather_recipes(problem, base, sm_count)
    return _menu(base, recipes, lambda r: _explicit_warp(_adapt(r, base)),
                 lambda d: shape_allows(d, problem), KernelDesc.validate, min(limit, PRUNED_MAX_CANDIDATES))


def _explicit_warp(desc: KernelDesc | None) -> KernelDesc | None:
    """sm80: warp (0,0,0) and the 2x2 tile it stands for are one kernel (one name): write it out, so
    duplicates compare equal (gather_desc writes its warp out)."""
    return None if desc is None else replace(desc, warp=desc.warp_shape())


# ----------------------------------------------------------------------- wsp_r_grouped (WSP-R)
def group_row_waste(Ms: Iterable[int], tile_m: int) -> float:
    """Fraction of the rows that `tile_m`-row tiles cover over all groups that are empty."""
    Ms = list(Ms)
    covered = sum(_ceil_div(m, tile_m) * tile_m for m in Ms)
    return 1.0 - sum(Ms) / covered


def group_tile_count(problem: GroupedTuneProblem, tile: tuple[int, int, int]) -> int:
    return sum(_ceil_div(m, tile[0]) for m in problem.Ms) * _ceil_div(problem.N, tile[1])


def _typical_rows(problem: GroupedTuneProblem) -> int:
    """The median group's rows (what a cluster along M spans in most groups)."""
    Ms = sorted(problem.Ms)
    return Ms[len(Ms) // 2]


def _grouped_sm90_recipes(problem: GroupedTuneProblem, sm_count: int) -> list[Recipe]:
    """Group i is M_i x Npad x c: memory-bound on X_i like the dense batch, but M_i differ, so row waste
    is counted over all groups. 64-row ping-pong tiles waste least on small or odd M_i; 128/256-row
    tiles read X_i fewer times where the M_i allow; tile K 128 halves short K loops; 2x1 clusters
    multicast X_i to two M-neighbours where most groups span two tile rows (ping-pong 128x128 in 2x1
    is CUTLASS example 57's grouped configuration); few tiles: narrow 128x64 tiles."""
    pp = "tma_ws_pingpong"
    Ms, K = problem.Ms, problem.K
    fits = {tm: group_row_waste(Ms, tm) <= MAX_ROW_WASTE for tm in (128, 256)}
    out = [Recipe((64, 128, 64), pp), Recipe((64, 256, 64), pp)]
    if fits[128]:
        out += [Recipe((128, 256, 64)), Recipe((128, 128, 64), pp)]
    if fits[256]:
        out += [Recipe((256, 128, 64))]
    if K % 128 == 0:
        out += [Recipe((64, 128, 128), pp)] + ([Recipe((128, 128, 128), pp)] if fits[128] else [])
    rows = _typical_rows(problem)
    if rows >= 2 * 64:
        out += [Recipe((64, 128, 64), pp, cluster=(2, 1, 1))]
    if rows >= 2 * 128:
        out += [Recipe((128, 128, 64), pp, cluster=(2, 1, 1))]
    if group_tile_count(problem, (128, 128, 64)) < FEW_WAVES * sm_count:
        out += [Recipe((128, 64, 64)), Recipe((128, 64, 64), pp)]
    return out


def _grouped_sm80_recipes(problem: GroupedTuneProblem, base: KernelDesc, sm_count: int) -> list[Recipe]:
    """CUTLASS 2.x GemmGrouped (tf32, or under 16-byte alignment): the same tile-M reasoning; its
    problem visitor ignores the swizzle, and it has no clusters."""
    k = base.tile[2]
    out = [Recipe((64, 128, k)), Recipe((64, 256, k), warp=(64, 64, k))]
    if group_row_waste(problem.Ms, 128) <= MAX_ROW_WASTE:
        out += [Recipe((128, 256, k), warp=(64, 64, k))]
    if group_row_waste(problem.Ms, 256) <= MAX_ROW_WASTE:
        out += [Recipe((256, 128, k), warp=(64, 64, k))]
    if group_tile_count(problem, (128, 128, k)) < FEW_WAVES * sm_count:
        out += [Recipe((128, 64, k)), Recipe((64, 64, k))]
    return out


def grouped_shape_allows(desc: KernelDesc, problem: GroupedTuneProblem) -> bool:
    """Tile N not far above N (64 always allowed); a cluster no larger than the median group's tile rows."""
    m, n, _ = desc.tile
    if n > 64 and _wastes(problem.N, n):
        return False
    cm, cn, _ = desc.cluster
    return cm <= max(1, _typical_rows(problem) // m) and cn <= _ceil_div(problem.N, n)


def _grouped_candidates(problem: GroupedTuneProblem, dtype: str, arch: str, sm_count: int,
                        limit: int) -> list[KernelDesc]:
    from cutlass_wsp.families.wsp_r import check_grouped_desc, grouped_desc

    base = grouped_desc(dtype, arch, N=problem.N, K=problem.K)   # what WspR(mode="grouped") runs untuned
    if base.arch == "sm90":
        recipes = _grouped_sm90_recipes(problem, sm_count)
        adapt = lambda r: _adapt(r, base)                        # noqa: E731
    else:
        recipes = _grouped_sm80_recipes(problem, base, sm_count)
        adapt = lambda r: _explicit_warp(_adapt(r, base))        # noqa: E731
    return _menu(base, recipes, adapt, lambda d: grouped_shape_allows(d, problem), check_grouped_desc,
                 min(limit, PRUNED_MAX_CANDIDATES))


# -------------------------------------------------------------------------------------------- API
PROBLEM_TYPES: dict[str, type] = {"dense": BatchProblem, GATHER_FAMILY: GatherTuneProblem,
                                  GROUPED_FAMILY: GroupedTuneProblem}
TUNABLE_FAMILIES = tuple(PROBLEM_TYPES)


def check_problem(problem: object, family: str) -> None:
    """The problem type each tunable family's menu and measurement read."""
    if family not in PROBLEM_TYPES:
        raise Unsupported(f"no tuning candidates for family {family!r}",
                          f"tune one of the families {', '.join(TUNABLE_FAMILIES)}")
    want = PROBLEM_TYPES[family]
    if not isinstance(problem, want):
        raise InputError(f"a {family} tuning problem is a {want.__name__}, got {type(problem).__name__}",
                         f"pass {want.__name__}(...) (cutlass_wsp.problem) for family {family!r}")


def _menu(base: KernelDesc, recipes: Iterable[Recipe], adapt, allows, check, limit: int) -> list[KernelDesc]:
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


def candidates(problem: BatchProblem | GatherTuneProblem | GroupedTuneProblem, dtype: str, arch: str, *,
               family: str = "dense", sm_count: int = DEFAULT_SM_COUNT,
               limit: int = MAX_CANDIDATES) -> list[KernelDesc]:
    """Descriptions to time for `problem` as the kernel sees it (packed EC2B layout: N = Npad, K
    padded), default first, deterministic order, each valid and allowed by the shape. The problem type
    goes with the family: dense BatchProblem, gather_b GatherTuneProblem, wsp_r_grouped
    GroupedTuneProblem. `arch` is the GPU's kernel arch (gather_b builds sm80 code on either)."""
    check_problem(problem, family)
    if limit < 1:
        raise Unsupported(f"candidate limit {limit}", "keep at least 1 candidate (the default)")
    if family == GATHER_FAMILY:
        return _gather_candidates(problem, dtype, sm_count, limit)             # type: ignore[arg-type]
    if family == GROUPED_FAMILY:
        return _grouped_candidates(problem, dtype, arch, sm_count, limit)      # type: ignore[arg-type]
    base = select(problem, dtype, arch, family=family)
    if base.arch == "sm90":
        recipes = _sm90_recipes(problem, dtype, sm_count)
    else:
        recipes = _sm80_recipes(problem, dtype, sm_count)
    return _menu(base, recipes, lambda r: _adapt(r, base), lambda d: shape_allows(d, problem),
                 KernelDesc.validate, limit)


def candidate_union(problems: Iterable, dtype: str, arch: str, *, family: str = "dense",
                    sm_count: int = DEFAULT_SM_COUNT, limit: int = MAX_CANDIDATES) -> list[KernelDesc]:
    """Every description the problems' candidate sets name, each once, in first-seen order."""
    out: dict[KernelDesc, None] = {}
    for p in problems:
        out.update(dict.fromkeys(candidates(p, dtype, arch, family=family, sm_count=sm_count, limit=limit)))
    return list(out)
