"""The fused Winograd layer: NHWC input -> NHWC output in one launch (templates/fused_sm90.cu.j2).

No X or Y in memory: each CTA loads its tiles' input patches, transforms them in shared memory,
multiplies every Winograd position's weights with tensor cores and applies the output transform to
its accumulators (docs/fused.md). The filter transform stays offline: the host turns the Winograd-domain
weights W[p², n, c] (masked by a pruning pattern) into the kernel's compact form:

  U[block][i][MI][Cpad]   for filter block b (FB output channels) and position i, the rows the position
                          keeps in that block, packed first, zero pad rows after (MI rows in all);
  inv[block][i][FB]       int16: the packed row of (position i, filter f of the block), -1 where pruned;
  mtiles[block][i]        int32: how many 16-row MMA tiles of position i hold a kept row (the kernel
                          skips the rest).

Dense: every position keeps the block's FB filters (MI = FB). FP: the kept filters, as a dense layer of
n' outputs. WSP-R: each position's kept rows of the block, packed; the padding of each (block, position)
up to a multiple of 16 rows is MMA work that computes zeros: `pad_waste` reports it. WSP-RB (row pruning
balanced per (position, filter block), pruning.py) keeps the same count in every (block, position): with
a count that is a multiple of 16 the waste is zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from cutlass_wsp.errors import InputError, Unsupported
from cutlass_wsp.kernels.description import KernelDesc

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
    if extra.get("p") != 4 or extra.get("warps") != 8:
        raise Unsupported("the generation-2 fused kernel is built for p=4 with 8 warps", "use p=4 (F(2,3))")
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
    acc = (mi // 16) * (bt // 8) * 4
    if acc > MAX_ACCUMULATORS:
        raise Unsupported(f"tile {mi}x{bt} holds {acc} accumulators per thread", "use fewer rows or tiles")
    need = pair_smem_bytes(mi, bt, fb, desc.stages, raw)
    if need > SMEM_LIMIT:
        raise Unsupported(f"generation-2 tile {mi}x{bt}, FB={fb}, {desc.stages} stages needs {need // 1024} KB",
                          "use fewer stages, a smaller filter block or tile")
    return desc


def pair_desc(dtype: str, mi: int, *, fb: int | None = None, bt: int = 64, stages: int = 3,
              dense_map: bool = False) -> KernelDesc:
    """A generation-2 (cluster pair, p = 4) fused kernel for MI packed rows per position. `dense_map`: the
    layout is the identity (FusedLayout.identity); otherwise the kernel reads the inverse row map."""
    mi = -(-int(mi) // 16) * 16
    fb = mi if fb is None else int(fb)
    desc = KernelDesc(family=FUSED_FAMILY, dtype=dtype, arch="sm90", tile=(mi, bt, BC), stages=stages,
                      extra=(("p", 4), ("fb", fb), ("warps", 8), ("gen", 2), ("map", "dense" if dense_map else "rows"),
                             ("raw", PAIR_RAW_PIX.get(bt, 0))))
    return check_fused_desc(desc)


def check_fused_desc(desc: KernelDesc) -> KernelDesc:
    """What the fused template can build; Unsupported naming the first problem."""
    if desc.family == FUSED_FAMILY and desc.extra_dict().get("gen", 1) == 2:
        if desc.arch != "sm90":
            raise Unsupported(f"the fused layer kernel is built for sm90, not {desc.arch}", "use a Hopper GPU (sm_90)")
        return _check_pair(desc, desc.extra_dict())
    if desc.family != FUSED_FAMILY:
        raise Unsupported(f"kernel {desc.name} is not a {FUSED_FAMILY} kernel", f"use family={FUSED_FAMILY!r}")
    extra = desc.extra_dict()
    p, fb, warps = extra.get("p"), extra.get("fb"), extra.get("warps")
    if desc.arch != "sm90":
        raise Unsupported(f"the fused layer kernel is built for sm90, not {desc.arch}", "use a Hopper GPU (sm_90)")
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
    def pad_waste(self) -> float:
        """Share of the multiplied rows that are padding (compute on zero rows)."""
        return 1.0 - self.kept / self.mma_rows if self.mma_rows else 0.0


def _check_weights(W, p: int) -> np.ndarray:
    W = np.asarray(W)
    if W.ndim != 3 or W.shape[0] != p * p:
        raise InputError(f"Winograd weights of shape {W.shape} for p={p}", f"pass W[{p * p}, n, c]")
    return W


def row_layout(W, p: int, rows, *, fb: int, n_out: int | None = None, mi: int | None = None) -> FusedLayout:
    """Compact form of weights W[p², n, c] where position i keeps the filters rows[i] (ascending; all n
    for dense). Output channel f = filter f; `n_out` defaults to n."""
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
    counts = np.zeros((blocks, L), dtype=np.int64)
    for i, r in enumerate(rows):
        counts[:, i] = np.bincount(r // fb, minlength=blocks)
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
    return FusedLayout(p=p, n_out=n_out, c=c, fb=fb, mi=mi, U=U, inv=inv, mtiles=mtiles,
                       kept=int(counts.sum()))


def dense_layout(W, p: int, *, fb: int = 32, mi: int | None = None) -> FusedLayout:
    W = _check_weights(W, p)
    n = W.shape[1]
    return row_layout(W, p, [np.arange(n)] * (p * p), fb=fb, mi=mi if mi is not None else -(-fb // 16) * 16)


def layout_for(pruned: Any, p: int, *, fb: int = 32, mi: int | None = None) -> FusedLayout:
    """The fused layout of a `pruning.Pruned` (dense, fp, wsp-r, wsp-rb). FP drops the pruned filters
    from the output (a layer of n' channels). `mi`: packed rows per position (default: the fewest
    whole 16-row tiles that hold every block's kept rows)."""
    pattern = pruned.pattern
    W = np.asarray(pruned.weights)
    if pattern == "dense":
        return dense_layout(W, p, fb=fb, mi=mi)
    if pattern == "fp":
        kept = np.asarray(pruned.rows[0])
        return dense_layout(W[:, kept, :], p, fb=fb, mi=mi)
    if pattern in ("wsp-r", "wsp-rb"):
        return row_layout(W, p, pruned.rows, fb=fb, mi=mi)
    raise Unsupported(f"no fused layout for pattern {pattern!r}", "use dense, fp, wsp-r or wsp-rb")


# ---------------------------------------------------------------------------------------------
# The family on the GPU
# ---------------------------------------------------------------------------------------------

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
        self._dev = (from_host(np.ascontiguousarray(lay.U), self.dtype), cupy.asarray(lay.inv),
                     cupy.asarray(lay.mtiles))
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
        U, inv, mtiles = self._dev
        dev = d.device.id
        args = make_args(M=lay.blocks, K=lay.cpad, L=lay.p * lay.p, A=U.data.ptr, B=d.data.ptr, D=out.data.ptr,
                         batch=batch, H=H, W=W, C=lay.c, n_out=lay.n_out, index_a=inv.data.ptr,
                         index_b=mtiles.data.ptr, sm_count=sm_count(dev), device_id=dev)
        self.kernel.check(args)
        step = kernel_step(self.kernel, args, Workspace(), bound_stream_pointer(stream))
        return Launches([step], (d, out, U, inv, mtiles))

    def run(self, d: Any, out: Any, *, stream: Any = None) -> Any:
        self.prepare(d, out, stream=stream)()
        return out


def fused_flops(p: int, rows_multiplied: int, c: int, tiles: int) -> float:
    """Tensor-core FLOPs of the position products: 2 x rows x c x tiles (rows over all positions)."""
    return 2.0 * rows_multiplied * c * tiles


def fused_bytes(itemsize: int, batch: int, H: int, W: int, c: int, n_out: int, weight_elems: int) -> float:
    """Fewest bytes: input and output once, the compact weights once."""
    return float(itemsize * (batch * H * W * (c + n_out) + weight_elems))


__all__ = ["FUSED_FAMILY", "FusedLayout", "FusedLayer", "check_fused_desc", "fused_desc", "row_layout",
           "dense_layout", "layout_for", "accumulators", "smem_bytes"]

