"""What one compiled kernel is: a frozen, hashable description with a deterministic name.

A `KernelDesc` is all a template needs to render a kernel; the name doubles as the C symbol returned
by `wsp_kernel_name()` and as the cache file stem, so it must be distinct for distinct descriptions.
`validate()` rejects combinations the arch cannot build (before spending a minute in nvcc).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from cutlass_wsp.dtypes import get_dtype
from cutlass_wsp.errors import Unsupported

ARCHS = ("sm90", "sm80")
KERNEL_DTYPES = ("fp16", "bf16", "tf32")

# sm90 kernel schedules -> short tag used in names. 'auto' is resolved by `resolved()`.
SM90_KERNEL_SCHEDULES = {
    "auto": "auto",
    "tma": "tma",                                   # KernelTma: TMA, not warp-specialized
    "tma_ws": "tmaws",                              # KernelTmaWarpSpecialized
    "tma_ws_cooperative": "tmawscoop",              # persistent, 2 consumer warp groups split M
    "tma_ws_pingpong": "tmawspp",                   # persistent, 2 consumer warp groups alternate tiles
    "cpasync_ws": "cpws",                           # cp.async loads: any 4..16-byte alignment
    "cpasync_ws_cooperative": "cpwscoop",
    "cpasync_ws_pingpong": "cpwspp",
}
# sm90 epilogue schedules. 'tma' becomes TmaWarpSpecialized or ...Cooperative to match the kernel.
SM90_EPILOGUE_SCHEDULES = {"auto": "", "nosmem": "enosmem", "tma": "etma", "transposed": "etr"}
SM80_SWIZZLES = (1, 2, 4, 8)

# Shared-memory budgets (bytes per CTA). sm90: CUTLASS's sm90_smem_capacity_bytes. sm80: what an A100
# can opt into (163 KB); auto stage counts stay under 96 KB so sm86/sm89 parts (99 KB) run them too.
SM90_SMEM_BYTES = 232448
SM90_MAX_ACCUMULATORS = 128     # fp32 accumulator registers per consumer thread (of 168 per thread)
SM80_SMEM_BYTES = 163 * 1024
SM80_AUTO_STAGE_BUDGET = 96 * 1024
SM80_MAX_AUTO_STAGES = 4

_NAME_TOKEN = re.compile(r"^[a-z0-9][a-z0-9.]*$")

# extra knob 'scheduler': the sm90 tile scheduler. Absent = CUTLASS's default persistent scheduler (so a
# default kernel has one name); 'streamk' splits the K loops of a short last wave over idle SMs. Only the
# cooperative TMA kernel takes it (CUTLASS's ping-pong and non-persistent kernels static_assert against it).
# extra knob 'splits' (with 'streamk'): split-K into that many K slices through the same scheduler (CUTLASS's
# stream-K heuristic never splits a tile of 8 or fewer k-tiles, i.e. K <= 512 with tile K 64).
# Families whose template is a whole layer, not a CUTLASS GEMM: validate() checks only the fields every
# kernel shares and leaves tile, stages and extras to the family's own check (families/fused.py).
LAYER_FAMILIES = ("fused",)

TILE_SCHEDULERS = ("streamk",)
TILE_SCHEDULER_FAMILIES = ("dense",)    # templates that read extra['scheduler'] and extra['splits']
MAX_SPLITS = 16


def _triple(value: Any, what: str) -> tuple[int, int, int]:
    t = tuple(int(v) for v in value)
    if len(t) != 3:
        raise Unsupported(f"{what} must have 3 entries, got {value!r}", "give it as (m, n, k)")
    return t  # type: ignore[return-value]


@dataclass(frozen=True)
class KernelDesc:
    family: str = "dense"
    dtype: str = "fp16"                       # fp16 | bf16 | tf32 (fp32 in memory, tf32 math)
    arch: str = "sm90"                        # instruction set: sm90 (wgmma/TMA) or sm80 (mma.sync/cp.async)
    tile: tuple[int, int, int] = (128, 128, 64)   # CTA tile M x N x K of the problem D[M,N] = A[M,K] B[K,N]
    stages: int = 0                           # mainloop pipeline depth; 0 = auto (carveout on sm90)
    cluster: tuple[int, int, int] = (1, 1, 1)     # sm90 thread-block cluster; (1,1,1) on sm80
    kernel_schedule: str = "auto"             # sm90 only; see SM90_KERNEL_SCHEDULES
    epilogue_schedule: str = "auto"           # sm90 only; see SM90_EPILOGUE_SCHEDULES
    alignment: int = 8                        # elements per vector access of A, B and D
    swizzle: int = 1                          # sm80 threadblock swizzle (GemmIdentityThreadblockSwizzle<N>)
    warp: tuple[int, int, int] = (0, 0, 0)    # sm80 warp tile; (0,0,0) = 2x2 warps over the CTA tile
    extra: tuple[tuple[str, Any], ...] = field(default=())   # family knobs, (key, value) pairs

    def __post_init__(self) -> None:
        # Normalise so equal descriptions compare, hash and name equal (lists from JSON, unsorted extras).
        object.__setattr__(self, "tile", _triple(self.tile, "tile"))
        object.__setattr__(self, "cluster", _triple(self.cluster, "cluster"))
        object.__setattr__(self, "warp", _triple(self.warp, "warp"))
        object.__setattr__(self, "extra", tuple(sorted((str(k), v) for k, v in dict(self.extra).items())))

    # ----------------------------------------------------------------------------------- naming
    @property
    def name(self) -> str:
        """e.g. wsp_dense_fp16_sm90_128x128x64_s0_c1x1x1_tmawscoop_a8 (every field that varies shows)."""
        m, n, k = self.tile
        parts = ["wsp", self.family, self.dtype, self.arch, f"{m}x{n}x{k}", f"s{self.stages}"]
        if self.arch == "sm90":
            parts.append("c{}x{}x{}".format(*self.cluster))
            parts.append(SM90_KERNEL_SCHEDULES.get(self.kernel_schedule, self.kernel_schedule))
            epi = SM90_EPILOGUE_SCHEDULES.get(self.epilogue_schedule, "e" + self.epilogue_schedule)
            if epi:
                parts.append(epi)
        else:
            parts.append("w{}x{}x{}".format(*self.warp_shape()))
            parts.append(f"sw{self.swizzle}")
        parts.append(f"a{self.alignment}")
        parts.extend(f"{k}{v}" for k, v in self.extra)
        return "_".join(str(p) for p in parts)

    def extra_dict(self) -> dict[str, Any]:
        return dict(self.extra)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["extra"] = [list(kv) for kv in self.extra]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "KernelDesc":
        d = dict(d)
        d["extra"] = tuple(tuple(kv) for kv in d.get("extra", ()))
        return cls(**d)

    # ------------------------------------------------------------------------- derived values
    @property
    def itemsize(self) -> int:
        return get_dtype(self.dtype).itemsize

    @property
    def alignment_bytes(self) -> int:
        return self.alignment * self.itemsize

    def warp_shape(self) -> tuple[int, int, int]:
        """sm80 warp tile: the given one, or 2 x 2 warps over the CTA tile (full K per warp)."""
        if self.warp != (0, 0, 0):
            return self.warp
        m, n, k = self.tile
        return (max(m // 2, 16), max(n // 2, 8), k)

    def stage_bytes(self) -> int:
        """Shared memory one mainloop stage holds: an A tile and a B tile."""
        m, n, k = self.tile
        return (m * k + k * n) * self.itemsize

    def sm80_stages(self) -> int:
        """Concrete sm80 pipeline depth: the given one, or as many as fit the auto budget (2..4)."""
        if self.stages:
            return self.stages
        return max(2, min(SM80_MAX_AUTO_STAGES, SM80_AUTO_STAGE_BUDGET // self.stage_bytes()))

    def resolved(self) -> "KernelDesc":
        """The same kernel with 'auto' sm90 schedules replaced by what will actually be built.

        Kernel 'auto' follows CUTLASS's own KernelScheduleAuto choice (cooperative when the CTA tile
        allows it, else ping-pong; cp.async when alignment is under 16 bytes); epilogue 'auto' picks the
        TMA epilogue where the kernel schedule can take it (CUTLASS's auto would pick the slower no-smem
        one), 'transposed' for tf32 (the swapped-operand mainloop needs it), else 'nosmem'.
        """
        if self.arch != "sm90":
            return self
        ks, es = self.kernel_schedule, self.epilogue_schedule
        if ks == "auto":
            coop_ok = self._mma_tile()[0] % 128 == 0
            if self.alignment_bytes == 16:
                ks = "tma_ws_cooperative" if coop_ok else "tma_ws_pingpong"
            else:
                ks = "cpasync_ws"
        if es == "auto":
            if self.dtype == "tf32":
                es = "transposed"
            elif ks.startswith("tma_ws"):
                es = "tma"
            else:
                es = "nosmem"
        return replace(self, kernel_schedule=ks, epilogue_schedule=es)

    def _mma_tile(self) -> tuple[int, int, int]:
        """The tile as CUTLASS sees it. sm90 tf32 swaps A and B (wgmma reads 32-bit operands only
        K-major, B[K,N] row-major is N-major), so CUTLASS's M mode is our N: the tile swaps too."""
        m, n, k = self.tile
        if self.arch == "sm90" and self.dtype == "tf32":
            return (n, m, k)
        return (m, n, k)

    @property
    def cutlass_tile(self) -> tuple[int, int, int]:
        return self._mma_tile()

    # ------------------------------------------------------------------------------ validation
    def validate(self) -> "KernelDesc":
        """Raise Unsupported naming the first impossible choice; return self when buildable."""
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.family):
            raise Unsupported(f"kernel family {self.family!r} is not a valid name",
                              "use lower-case letters, digits and '_' (it names templates/<family>_<arch>.cu.j2)")
        if self.dtype not in KERNEL_DTYPES:
            raise Unsupported(f"no tensor-core kernels for dtype {self.dtype!r}",
                              f"use one of {', '.join(KERNEL_DTYPES)}")
        if self.arch not in ARCHS:
            raise Unsupported(f"unknown kernel arch {self.arch!r}", f"use one of {', '.join(ARCHS)}")
        for k, v in self.extra:
            if not _NAME_TOKEN.match(k) or not _NAME_TOKEN.match(str(v)):
                raise Unsupported(f"extra knob {k}={v!r} cannot appear in a kernel name",
                                  "use lower-case letters, digits and '.' for extra keys and values")
        if self.family in LAYER_FAMILIES:
            if self.arch != "sm90":
                raise Unsupported(f"the {self.family} layer kernel is built for sm90, not {self.arch}",
                                  "use arch sm90 (a Hopper GPU)")
            return self
        self._validate_scheduler()
        a = self.alignment
        if a < 1 or a & (a - 1) or self.alignment_bytes > 16:
            raise Unsupported(f"alignment {a} ({self.alignment_bytes} bytes) does not divide 16 bytes",
                              f"use a power of two up to {16 // self.itemsize} elements for {self.dtype}")
        if self.alignment_bytes < 4:
            raise Unsupported(f"alignment {a} of {self.dtype} is {self.alignment_bytes} bytes; cp.async and TMA "
                              "copy at least 4 bytes", f"use alignment >= {4 // self.itemsize} (pad N and K)")
        if any(x <= 0 for x in self.tile):
            raise Unsupported(f"tile {self.tile} has a non-positive extent", "use positive tile sizes")
        if self.arch == "sm90":
            self._validate_sm90()
        else:
            self._validate_sm80()
        return self

    def _validate_scheduler(self) -> None:
        sched = self.extra_dict().get("scheduler")
        splits = self.extra_dict().get("splits")
        if splits is not None:
            if sched != "streamk":
                raise Unsupported(f"splits={splits!r} without the stream-K scheduler",
                                  "add extra scheduler='streamk' (split-K runs through it)")
            if isinstance(splits, bool) or not isinstance(splits, int) or not 2 <= splits <= MAX_SPLITS:
                raise Unsupported(f"splits={splits!r}", f"give splits as an integer in 2..{MAX_SPLITS}, or leave it "
                                  "out for the stream-K heuristic")
        if sched is None:
            return
        if sched not in TILE_SCHEDULERS:
            raise Unsupported(f"tile scheduler {sched!r}", "use extra scheduler='streamk', or leave the knob out "
                              "for the default persistent scheduler")
        if self.family not in TILE_SCHEDULER_FAMILIES or self.arch != "sm90":
            raise Unsupported(f"the {self.family} {self.arch} template has no tile-scheduler knob",
                              f"use scheduler='streamk' only with family {'/'.join(TILE_SCHEDULER_FAMILIES)} on sm90")
        if self.kernel_schedule not in SM90_KERNEL_SCHEDULES:
            return   # _validate_sm90 names the unknown schedule
        ks = self.resolved().kernel_schedule
        if ks != "tma_ws_cooperative":
            raise Unsupported(f"stream-K needs the cooperative TMA kernel schedule, got {ks}",
                              "use kernel_schedule 'tma_ws_cooperative' (tile M 128 or 256)")

    def _validate_sm90(self) -> None:
        if self.kernel_schedule not in SM90_KERNEL_SCHEDULES:
            raise Unsupported(f"unknown sm90 kernel schedule {self.kernel_schedule!r}",
                              f"use one of {', '.join(SM90_KERNEL_SCHEDULES)}")
        if self.epilogue_schedule not in SM90_EPILOGUE_SCHEDULES:
            raise Unsupported(f"unknown sm90 epilogue schedule {self.epilogue_schedule!r}",
                              f"use one of {', '.join(SM90_EPILOGUE_SCHEDULES)}")
        if self.swizzle != 1 or self.warp != (0, 0, 0):
            raise Unsupported("swizzle and warp shape are sm80 knobs", "leave them at 1 and (0,0,0) for sm90")
        r = self.resolved()
        ks, es = r.kernel_schedule, r.epilogue_schedule
        tma = ks.startswith("tma")
        cm, cn, ck = self.cluster
        if ck != 1 or cm not in (1, 2, 4) or cn not in (1, 2, 4) or cm * cn > 8:
            raise Unsupported(f"cluster {self.cluster} is not a portable sm90 cluster",
                              "use (m, n, 1) with m, n in 1, 2, 4 and m*n <= 8")
        if cm * cn > 1 and not tma:
            raise Unsupported(f"cluster {self.cluster} needs TMA multicast; {ks} loads with cp.async",
                              "use cluster (1,1,1) or a tma_ws* schedule")
        if tma and self.alignment_bytes != 16:
            raise Unsupported(f"TMA schedule {ks} needs 16-byte alignment, got {self.alignment_bytes} bytes",
                              f"use alignment {16 // self.itemsize} (pad N and K) or a cpasync_ws* schedule")
        if es == "tma" and (not ks.startswith("tma_ws") or self.alignment_bytes != 16):
            raise Unsupported(f"the TMA epilogue needs a tma_ws* kernel schedule and 16-byte alignment (got {ks})",
                              "use epilogue_schedule 'nosmem' or 'auto'")
        if self.dtype == "tf32":
            # wgmma reads 32-bit operands from shared memory only K-major. B[K,N] row-major is N-major, so
            # CUTLASS swaps A and B, feeds the (now N-major) A from registers (the RS mainloop, TMA
            # warp-specialized only) and writes D through the transposing epilogue.
            if not ks.startswith("tma_ws"):
                raise Unsupported(f"sm90 tf32 with row-major B needs a tma_ws* schedule, got {ks}",
                                  "use kernel_schedule 'auto' or tma_ws*, or the sm80 tf32 kernel")
            if es != "transposed":
                raise Unsupported(f"sm90 tf32 with row-major B writes D through the transposed epilogue, not {es!r}",
                                  "use epilogue_schedule 'auto' or 'transposed'")
        elif es == "transposed":
            raise Unsupported("the transposed epilogue serves only the swapped tf32 mainloop",
                              "use epilogue_schedule 'auto', 'tma' or 'nosmem'")
        mm, mn, mk = self._mma_tile()
        if mm not in (64, 128, 256):
            raise Unsupported(f"sm90 tile M {mm} is not 64, 128 or 256", "use a tile M of 64, 128 or 256")
        if ks.endswith("cooperative") and mm % 128:
            raise Unsupported(f"cooperative schedules split the tile's M over 2 warp groups; M {mm} < 128",
                              "use tile M 128/256 or a pingpong/tma_ws schedule")
        if mn % 16 or not 16 <= mn <= 256:
            raise Unsupported(f"sm90 tile N {mn} is not a multiple of 16 in 16..256", "use N in 16, 32, ..., 256")
        kbytes = mk * self.itemsize
        if kbytes not in (64, 128, 256):
            raise Unsupported(f"sm90 tile K {mk} ({kbytes} bytes) does not fill the 64/128-byte smem swizzle",
                              f"use tile K of {', '.join(str(b // self.itemsize) for b in (64, 128, 256))}")
        if self.dtype == "tf32" and mn % mk:
            raise Unsupported(f"sm90 tf32 needs tile M {self.tile[0]} divisible by tile K {mk} (its smem layout "
                              "atoms tile the swapped operand)", "use e.g. 128x128x32")
        # at least two stages plus an epilogue's worth of shared memory must fit
        need = self.stage_bytes() * max(self.stages, 2)
        if need > SM90_SMEM_BYTES - 32 * 1024:
            raise Unsupported(f"tile {self.tile} x {max(self.stages, 2)} stages needs {need // 1024} KB of shared "
                              f"memory; sm90 has {SM90_SMEM_BYTES // 1024} KB", "use a smaller tile or fewer stages")
        if self.stages == 1:
            raise Unsupported("a 1-stage pipeline cannot overlap loads", "use stages 0 (auto) or >= 2")
        # fp32 accumulators live in registers: cooperative splits the tile over 2 warp groups, ping-pong
        # gives each warp group a whole tile. Past 128 per thread the kernel spills (256x224 cooperative:
        # a 304-byte stack and 3x the time of 128x128 on the H100, bench/kernel_resources.py).
        per_thread = mm * mn // (256 if ks.endswith("cooperative") else 128)
        if per_thread > SM90_MAX_ACCUMULATORS:
            raise Unsupported(f"tile {mm}x{mn} with {ks} holds {per_thread} fp32 accumulators per thread "
                              f"(over {SM90_MAX_ACCUMULATORS}: register spills)",
                              "use a smaller tile, or the cooperative schedule for a 256x128 / 128x256 tile")

    def _validate_sm80(self) -> None:
        if self.cluster != (1, 1, 1):
            raise Unsupported(f"cluster {self.cluster} on sm80: thread-block clusters are an sm90 feature",
                              "use cluster (1,1,1) or arch sm90")
        if self.kernel_schedule != "auto" or self.epilogue_schedule != "auto":
            raise Unsupported("kernel/epilogue schedules are sm90 knobs", "leave them 'auto' for sm80")
        if self.swizzle not in SM80_SWIZZLES:
            raise Unsupported(f"sm80 swizzle {self.swizzle}", f"use one of {SM80_SWIZZLES}")
        m, n, k = self.tile
        wm, wn, wk = self.warp_shape()
        inst_k = 8 if self.dtype == "tf32" else 16
        if m not in (32, 64, 128, 256) or n not in (32, 64, 128, 256):
            raise Unsupported(f"sm80 tile {m}x{n} has M or N outside 32, 64, 128, 256", "use e.g. 128x128")
        if k % inst_k or k * self.itemsize not in (32, 64, 128):
            raise Unsupported(f"sm80 tile K {k} for {self.dtype}",
                              f"use K in {', '.join(str(b // self.itemsize) for b in (32, 64, 128))}")
        if m % wm or n % wn or wk != k:
            raise Unsupported(f"warp tile {wm}x{wn}x{wk} does not divide CTA tile {m}x{n}x{k} (warp K = tile K)",
                              "use a warp tile that divides the CTA tile, e.g. 64x64xK")
        if wm % 16 or wn % 8:
            raise Unsupported(f"warp tile {wm}x{wn} is not a multiple of the 16x8 mma", "use multiples of 16 x 8")
        warps = (m // wm) * (n // wn)
        if warps not in (1, 2, 4, 8):
            raise Unsupported(f"{warps} warps per CTA", "use a warp tile giving 1, 2, 4 or 8 warps")
        if k % self.alignment:
            raise Unsupported(f"tile K {k} is not a multiple of alignment {self.alignment}", "use a larger tile K")
        stages = self.sm80_stages()
        if stages < 2 or stages > 8:
            raise Unsupported(f"{stages} sm80 stages", "use 0 (auto) or 2..8")
        if stages * self.stage_bytes() > SM80_SMEM_BYTES:
            raise Unsupported(f"tile {self.tile} x {stages} stages needs {stages * self.stage_bytes() // 1024} KB of "
                              f"shared memory; sm80 has {SM80_SMEM_BYTES // 1024} KB", "use fewer stages or a smaller tile")


def default_desc(family: str = "dense", dtype: str = "fp16", arch: str = "sm90", **overrides: Any) -> KernelDesc:
    """A sensible starting configuration per arch and dtype (16-byte accesses), validated."""
    itemsize = get_dtype(dtype).itemsize
    alignment = 16 // itemsize
    if arch == "sm90":
        tile = (128, 128, 32) if dtype == "tf32" else (128, 128, 64)
        base = KernelDesc(family=family, dtype=dtype, arch=arch, tile=tile, stages=0, cluster=(1, 1, 1),
                          kernel_schedule="tma_ws_cooperative", epilogue_schedule="auto", alignment=alignment)
    elif arch == "sm80":
        base = KernelDesc(family=family, dtype=dtype, arch=arch, tile=(128, 128, 32), stages=0, cluster=(1, 1, 1),
                          alignment=alignment, swizzle=1, warp=(64, 64, 32))
    else:
        raise Unsupported(f"unknown kernel arch {arch!r}", f"use one of {', '.join(ARCHS)}")
    return replace(base, **overrides).validate()
