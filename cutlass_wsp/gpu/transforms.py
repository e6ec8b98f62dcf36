"""GPU Winograd input and output transforms (the EC2B conversion around the GEMM batch).

    InputTransform(p, dt, layout)(d) -> X[L, c, Npad]          X = B^T d_tile B, pad columns zero
    InputTransform(p, dt, layout, compact=True)(d, Xc, InputTransform.channel_map(cols, c, K))
                                                              WSP-C: only kept channels, Xc[L, K, Npad]
    OutputTransform(p, dt, layout)(Y, out)                    out = A^T y_tile A, cropped to H x W
    OutputTransform(p, dt, layout, compact=True)(Yc, out, row_map=OutputTransform.row_map(rows, n))

Kernels are rendered from templates/transform_{input,output}.cu.j2 with the transform constants of
`winograd.matrices_float(m)` baked in as literals, compiled once per (p, dtype, layout, compact) by NVRTC
through the kernel compile cache (kernels/cache.py `get_nvrtc`: the options CuPy's RawModule used),
loaded with `cupy.RawModule(path=...)` and launched on CuPy's current stream.
docs/transforms.md describes the kernels, the layouts and the compact-row conventions.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from cutlass_wsp.dtypes import DType
from cutlass_wsp.errors import InputError, Unsupported
from cutlass_wsp.gpu.arrays import as_dtype, npad, storage_dtype
from cutlass_wsp.winograd import matrices_float, tile_grid

LAYOUTS = ("nchw", "nhwc")
LAYER_LAYOUT = "nhwc"   # the sweep's layers (cuDNN was 1.4-2.5x slower in NCHW on the H100, BRIEF)
SUPPORTED_P = (4, 6, 8)
INPUT_KERNEL = "wsp_input_transform"
OUTPUT_KERNEL = "wsp_output_transform"

# Storage type and fp32 conversions per dtype. fp16/bf16 travel as raw 16-bit words (arrays.py stores
# bf16 as uint16 bits); one PTX cvt each way keeps the kernels free of CUDA header includes.
_CONVERSIONS = {
    "float16": """typedef unsigned short storage_t;  // fp16 bits
__device__ __forceinline__ float to_f32(storage_t h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ storage_t from_f32(float f) { storage_t h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
// Two adjacent elements (4-byte aligned) in one store: lo at p[0], hi at p[1].
__device__ __forceinline__ void store_pair(storage_t* p, float lo, float hi) {
#if __CUDA_ARCH__ >= 800
    unsigned int u; asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(u) : "f"(hi), "f"(lo));
#else
    const unsigned int u = (unsigned int)from_f32(lo) | ((unsigned int)from_f32(hi) << 16);
#endif
    *reinterpret_cast<unsigned int*>(p) = u; }""",
    "bfloat16": """typedef unsigned short storage_t;  // bf16 bits
__device__ __forceinline__ float to_f32(storage_t h) { return __uint_as_float(((unsigned int)h) << 16); }
__device__ __forceinline__ storage_t from_f32(float f) { storage_t h; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
// Two adjacent elements (4-byte aligned) in one store: lo at p[0], hi at p[1].
__device__ __forceinline__ void store_pair(storage_t* p, float lo, float hi) {
    unsigned int u; asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(u) : "f"(hi), "f"(lo)); *reinterpret_cast<unsigned int*>(p) = u; }""",
    "float32": """typedef float storage_t;  // fp32 (also tf32 layers: the transforms stay fp32)
__device__ __forceinline__ float to_f32(storage_t x) { return x; }
__device__ __forceinline__ storage_t from_f32(float x) { return x; }
// Two adjacent elements (8-byte aligned) in one store: lo at p[0], hi at p[1].
struct alignas(8) F32Pair { float lo, hi; };
__device__ __forceinline__ void store_pair(storage_t* p, float lo, float hi) { *reinterpret_cast<F32Pair*>(p) = F32Pair{lo, hi}; }""",
}


# ------------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------------

def check_layout(layout: str) -> str:
    name = str(layout).lower()
    if name not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}", "use 'nchw' or 'nhwc'")
    return name


def check_p(p) -> int:
    if not isinstance(p, (int, np.integer)) or int(p) not in SUPPORTED_P:
        raise Unsupported(f"Winograd tile p={p!r} has no GPU transform",
                          "use p = 4, 6 or 8 (F(2x2,3x3), F(4x4,3x3), F(6x6,3x3))")
    return int(p)


def _check_pixels(batch: int, H: int, W: int) -> None:
    """The kernels index pixels (b * H + y) * W + x and tiles in 32-bit integers."""
    if batch * (H + 2) * (W + 2) >= 2**31:
        raise Unsupported(f"batch {batch} of {H}x{W} maps has too many pixels for 32-bit indices",
                          "split the batch into smaller ones")


def _require_cupy(a, name: str) -> None:
    if not _is_cupy_array(a):
        raise InputError(f"{name} is a {type(a).__name__}, not a CuPy array",
                         "move it to the GPU first (cutlass_wsp.gpu.arrays.from_host)")


def _is_cupy_array(a) -> bool:
    """isinstance(a, cupy.ndarray); False without cupy (a host array is refused the same way)."""
    try:
        import cupy
    except ImportError:
        return False
    return isinstance(a, cupy.ndarray)


def _check_device_array(a, name: str, shape: tuple[int, ...] | None, dt: DType, ndim: int, what: str) -> None:
    """A C-contiguous cupy array of `dt`'s storage type (and `shape` when given)."""
    _require_cupy(a, name)
    if a.ndim != ndim:
        raise InputError(f"{name} must be {ndim}-D {what}; got shape {tuple(a.shape)}", f"pass {what}")
    if a.dtype != storage_dtype(dt):
        raise InputError(f"{name} has dtype {a.dtype}, not the {dt.name} storage type {storage_dtype(dt)}",
                         "convert it with cutlass_wsp.gpu.arrays.to_storage")
    if not a.flags.c_contiguous:
        raise InputError(f"{name} is not C-contiguous", "pass cupy.ascontiguousarray(...) of it")
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise InputError(f"{name} has shape {tuple(a.shape)}; expected {tuple(shape)} {what}",
                         "allocate it with the transform's output_shape()/x_shape()")


# ------------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------------

def _render(template: str, ctx: dict) -> str:
    from cutlass_wsp.kernels.emitter import environment

    return environment().get_template(template).render(**ctx)


STAGE_BYTES = 24 * 1024  # shared memory for staging Y (NHWC output): 4+ blocks of 256 threads fit an SM
LOAD_TYPES = {16: "Vec16", 8: "Vec8", 4: "unsigned int", 2: "unsigned short"}  # NHWC input loads


@dataclass(frozen=True)
class Geometry:
    """Block shape of one kernel: `tt` tiles x `cc` channels (or filters), `tpt` tiles per thread.
    `srow`: staged row stride (elements) of the output kernels; `rs`: rows of the p x p tile staged at a
    time (NHWC output); `pstr`: staged elements per thread's tiles (NHWC input)."""

    tt: int
    cc: int
    srow: int = 0
    rs: int = 1
    pstr: int = 0
    tpt: int = 1

    @property
    def threads(self) -> int:
        return self.tt // self.tpt * self.cc

    def grid(self, columns: int, channels: int) -> tuple[int, int, int]:
        """(channel groups, tile groups split over y and z): channel group fastest, no grid limit hit."""
        groups = -(-columns // self.tt)
        y = min(groups, 65535)
        return (-(-channels // self.cc), y, -(-groups // y))


def _rows_per_stage(p: int, bytes_per_position: int) -> int:
    """Most rows of the p x p tile (a divisor of p) whose staged positions fit STAGE_BYTES: fewer
    barriers and load loops per block."""
    return max(r for r in range(1, p + 1) if p % r == 0 and r * p * bytes_per_position <= STAGE_BYTES)


@dataclass(frozen=True)
class ChannelMap:
    """Compact-input map of one WSP-C layer, on the GPU: xrow[i, c] = row of Xc that takes channel c at
    position i, or -1 (pruned there: not written). `positions` x `K` is the Xc it fills, `c` the
    channels; `counts[i]` = channels kept at position i (host, for the byte count)."""

    xrow: Any
    positions: int
    c: int
    K: int
    counts: tuple[int, ...]

    @property
    def kept_rows(self) -> int:
        """Rows of Xc written per position (mean over positions, rounded)."""
        return int(round(sum(self.counts) / self.positions))


@dataclass(frozen=True)
class RowMap:
    """Compact-row map of one pruned layer, on the GPU: inv[i, f] = row of Yc holding filter f at
    position i, or -1 (pruned: zero). `positions` x `nrows` is the Yc it indexes; `n` the filters."""

    inv: Any
    positions: int
    nrows: int
    n: int


def input_geometry(dt: DType, layout: str, p: int) -> Geometry:
    """A thread takes `tpt` adjacent tiles (2 for p <= 6: packed stores, shared addressing; 1 for p = 8,
    whose 64 values per tile fill the registers). NCHW: 32 threads along t x 8 channels (X rows written
    64+ bytes per warp). NHWC: 16 (2-byte) or 8 (fp32) threads along t, so X rows are written in whole
    32-byte sectors, x 16 or 32 channels (32+ bytes of a pixel per load), shared memory <= 40 KB; `pstr`
    (elements per thread's staged tiles) is padded so that a warp's shared-memory reads hit distinct
    banks (2-byte: 16 threads on distinct even banks, channel pairs share a word; fp32: bank 4 * thread
    + channel)."""
    tpt = 2 if p <= 6 else 1
    if layout == "nchw":
        return Geometry(tt=32 * tpt, cc=8, tpt=tpt)
    if dt.itemsize == 2:
        tp, cc = 16, 16
    else:
        tp, cc = 8, (32 if p == 4 else 16)
    return Geometry(tt=tp * tpt, cc=cc, tpt=tpt, pstr=p * p * tpt * cc + 4)


def input_load_bytes(dt: DType, c: int) -> int:
    """Widest NHWC load (16, 8, 4 or 2 bytes) that whole channels of every pixel fill and align."""
    return next(b for b in (16, 8, 4, 2) if b >= dt.itemsize and (c * dt.itemsize) % b == 0)


def output_geometry(dt: DType, layout: str, p: int) -> Geometry:
    """NCHW: 32 tiles x 8 filters (6 for m = 6, so that the writer threads split evenly over the
    32*m staged columns), whole m x m outputs staged. NHWC: Y staged RS tile rows at a time, 64 (2-byte)
    or 32 (fp32) tiles x 8 filters; `srow` pads staged rows against bank conflicts."""
    m = p - 2
    if layout == "nchw":
        return Geometry(tt=32, cc=6 if m == 6 else 8, srow=32 * m)
    # 2-byte: 64 tiles x 8 filters, chosen by bench/transform_geometry.py on the H100 (VGG-16 fp16
    # batch 32: 92/89/84 % of copy on the 224/112/56 maps, against 80/77/74 % for 16 x 16).
    tt, cc, srow = (64, 8, 72) if dt.itemsize == 2 else (32, 8, 36)
    return Geometry(tt=tt, cc=cc, srow=srow, rs=_rows_per_stage(p, cc * srow * dt.itemsize))


def render_input(p: int, dt: DType | str, layout: str, load_bytes: int = 16,
                 compact: bool = False) -> tuple[str, dict[str, Any]]:
    """(CUDA source, template context) of the input transform (dense X or compact rows); `load_bytes`:
    NHWC load width."""
    p, d, layout = check_p(p), as_dtype(dt), check_layout(layout)
    if load_bytes not in LOAD_TYPES or load_bytes < d.itemsize:
        raise InputError(f"load width {load_bytes} bytes is not one of 16, 8, 4, 2 (>= {d.itemsize})",
                         "use input_load_bytes(dt, c)")
    m = p - 2
    g = input_geometry(d, layout, p)
    ctx = {"p": p, "m": m, "dtype": d.name, "layout": layout, "compact": bool(compact), "tt": g.tt,
           "cc": g.cc, "tpt": g.tpt, "pstr": g.pstr, "load_type": LOAD_TYPES[load_bytes],
           "bt": matrices_float(m)[2].tolist(), "conversions": _CONVERSIONS[d.storage]}
    return _render("transform_input.cu.j2", ctx), ctx


def render_output(p: int, dt: DType | str, layout: str, compact: bool = False) -> tuple[str, dict[str, Any]]:
    """(CUDA source, template context) of the output transform (dense Y or compact rows)."""
    p, d, layout = check_p(p), as_dtype(dt), check_layout(layout)
    m = p - 2
    g = output_geometry(d, layout, p)
    ctx = {"p": p, "m": m, "dtype": d.name, "layout": layout, "compact": bool(compact), "tt": g.tt,
           "cc": g.cc, "srow": g.srow, "rs": g.rs, "at": matrices_float(m)[0].tolist(),
           "conversions": _CONVERSIONS[d.storage]}
    return _render("transform_output.cu.j2", ctx), ctx


TRANSFORM_OPTIONS = ("-std=c++17",)


@functools.lru_cache(maxsize=None)
def _compiled(source: str, kernel: str):
    """The kernel `kernel` of `source`, built by NVRTC through the compile cache (kernels/cache.py:
    complete key, atomic publish, a corrupt entry is a miss, a failure keeps source and log and raises
    CompileError) and loaded with cupy.RawModule."""
    from cutlass_wsp.gpu.device import compute_capability, require_gpu

    require_gpu()
    return load_function(compile_module(source, kernel, compute_capability()), kernel)


def compile_module(source: str, kernel: str, arch: int, *, cache=None, options=TRANSFORM_OPTIONS,
                   compiler=None):
    """Path of the cubin of `source` for compute capability `arch` (no GPU needed)."""
    from cutlass_wsp.kernels.cache import default_cache

    return (cache or default_cache()).get_nvrtc(source, kernel, options=tuple(options), arch=arch, compiler=compiler)


def load_function(path, kernel: str):
    """cupy.RawModule(path=...).get_function(kernel): a compiled module of the compile cache, loaded."""
    import cupy

    return cupy.RawModule(path=str(path)).get_function(kernel)


def _check_bf16_arch(d: DType) -> None:
    if d.storage == "bfloat16":
        from cutlass_wsp.gpu.device import compute_capability

        if compute_capability() < 80:
            raise Unsupported("bf16 transforms need an sm_80 or newer GPU (cvt.rn.bf16.f32)",
                              "use fp16 or fp32 on this GPU")


# ------------------------------------------------------------------------------------------------
# Public objects
# ------------------------------------------------------------------------------------------------

def _layout_dims(shape, layout: str, what: str, ch: str) -> tuple[int, int, int, int]:
    """(batch, channels, H, W) of a 4-D NCHW or NHWC `shape`; `what`/`ch` name it in errors."""
    if len(shape) != 4:
        raise InputError(f"{what} must be 4-D {layout.upper()}; got shape {tuple(shape)}",
                         f"pass [B, {ch}, H, W] (nchw) or [B, H, W, {ch}] (nhwc)")
    if layout == "nchw":
        B, c, H, W = shape
    else:
        B, H, W, c = shape
    if min(B, c, H, W) < 1:
        raise InputError(f"{what} has an empty dimension: shape {tuple(shape)}", "every dimension must be >= 1")
    return int(B), int(c), int(H), int(W)


class InputTransform:
    """d (NCHW [B, c, H, W] or NHWC [B, H, W, c]) -> X[p*p, c, Npad] in `dt` storage; compact: only the
    channels a `ChannelMap` keeps at each position, into Xc[p*p, K, Npad]."""

    def __init__(self, p: int, dt: DType | str, layout: str, compact: bool = False):
        self.p = check_p(p)
        self.m = self.p - 2
        self.dtype = as_dtype(dt)
        self.layout = check_layout(layout)
        self.compact = bool(compact)
        self.geometry = input_geometry(self.dtype, self.layout, self.p)
        self._kernels: dict[int, Any] = {}

    def source(self, c: int = 16) -> str:
        """Kernel source for inputs of `c` channels (NHWC loads are as wide as c allows)."""
        return render_input(self.p, self.dtype, self.layout, self._load_bytes(c), self.compact)[0]

    def _load_bytes(self, c: int) -> int:
        return input_load_bytes(self.dtype, c) if self.layout == "nhwc" else 16

    def kernel(self, c: int = 16):
        """The compiled cupy.RawKernel for `c` channels (NVRTC on first use; needs a GPU)."""
        key = self._load_bytes(c)
        if key not in self._kernels:
            _check_bf16_arch(self.dtype)
            self._kernels[key] = _compiled(self.source(c), INPUT_KERNEL)
        return self._kernels[key]

    def dims(self, d_shape) -> tuple[int, int, int, int]:
        """(batch, c, H, W) of an input of shape `d_shape` in this layout."""
        return _layout_dims(d_shape, self.layout, "input", "c")

    def tiles(self, batch: int, H: int, W: int) -> int:
        th, tw = tile_grid(H, W, self.m)
        return batch * th * tw

    def x_shape(self, batch: int, c: int, H: int, W: int, K: int | None = None) -> tuple[int, int, int]:
        """X's shape; `K` rows per position for a compact Xc (default c: the dense X)."""
        return (self.p * self.p, c if K is None else K, npad(self.tiles(batch, H, W), self.dtype))

    def bytes_moved(self, batch: int, c: int, H: int, W: int, kept_rows: int | None = None) -> int:
        """Fewest bytes: d read once, X (with its pad columns) written once: `kept_rows` rows per
        position when compact (default c; Xc's pad rows are not written), plus the compact variant's
        [p*p, c] int32 channel map."""
        L, _, Np = self.x_shape(batch, c, H, W)
        rows = c if kept_rows is None else kept_rows
        moved = self.dtype.itemsize * (batch * c * H * W + L * rows * Np)
        return moved + (4 * L * c if self.compact else 0)

    @staticmethod
    def channel_rows(cols, c: int, K: int) -> np.ndarray:
        """Kept channels -> the kernel's row map, on the host (numpy int32 [L, c]).

        cols[i] (1-D integers, one array per position) = the channels position i keeps, in Xc row order:
        row j of Xc[i] takes channel cols[i][j]; -1 marks a row no channel goes to. WSP-C passes its
        ascending `Pruned.cols`, the column order of its compact weights. Result xrow[i, ch] = j, or -1
        where channel ch is pruned at position i (nothing is written for it)."""
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1:
            raise InputError(f"c={c!r} channels", "pass the input's channel count (>= 1)")
        if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
            raise InputError(f"K={K!r} rows per position", "pass Xc's rows per position (>= 1)")
        if cols is None or isinstance(cols, (str, bytes)) or len(cols) == 0:
            raise InputError("cols holds no positions", "give one array of kept channels per Winograd position")
        xrow = np.full((len(cols), int(c)), -1, dtype=np.int32)
        for i, kept in enumerate(cols):
            xrow[i] = _position_rows(np.asarray(kept), i, int(c), int(K))
        return xrow

    @staticmethod
    def channel_map(cols, c: int, K: int) -> ChannelMap:
        """`channel_rows` on the GPU, with the shapes it fits: build it once per pruning mask, not per call."""
        # checked on the host before cupy is imported: a bad map fails the same way with or without a GPU
        host = None if cols is None else [k.get() if hasattr(k, "__cuda_array_interface__") else np.asarray(k)
                                          for k in cols]
        xrow = InputTransform.channel_rows(host, c, K)
        import cupy

        counts = tuple(int((xrow[i] >= 0).sum()) for i in range(xrow.shape[0]))
        return ChannelMap(xrow=cupy.asarray(xrow), positions=xrow.shape[0], c=int(c), K=int(K), counts=counts)

    def _check_channel_map(self, channel_map, c: int) -> ChannelMap | None:
        L = self.p * self.p
        if not self.compact:
            if channel_map is not None:
                raise InputError("channel_map was given to a dense input transform",
                                 "build InputTransform(..., compact=True) for compact rows")
            return None
        if channel_map is None:
            raise InputError("the compact input transform needs channel_map",
                             "pass InputTransform.channel_map(cols, c, K)")
        if not isinstance(channel_map, ChannelMap):
            raise InputError(f"channel_map is a {type(channel_map).__name__}, not a ChannelMap",
                             "build it with InputTransform.channel_map(cols, c, K)")
        if (channel_map.positions, channel_map.c) != (L, c):
            raise InputError(f"channel_map fits {channel_map.positions} positions of {channel_map.c} channels, "
                             f"not {L} positions (p={self.p}) of c={c}",
                             "build the channel map from this layer's kept channels, one array per position")
        return channel_map

    def __call__(self, d, X=None, channel_map: ChannelMap | None = None):
        """Transform `d` into `X` (allocated when None) on CuPy's current stream; returns X.

        Compact: X is Xc[p*p, K, Npad] and `channel_map` comes from `channel_map(cols, c, K)`. Only the
        mapped rows are written; the caller zero-fills Xc once when it allocates it (an Xc allocated here
        is zeros), so that its pad rows are finite: their weight columns are zero, they add exactly 0."""
        _require_cupy(d, "input")
        import cupy

        B, c, H, W = self.dims(d.shape)
        _check_device_array(d, "input", None, self.dtype, 4, f"{self.layout.upper()} input")
        _check_pixels(B, H, W)
        cmap = self._check_channel_map(channel_map, c)
        th, tw = tile_grid(H, W, self.m)
        T = B * th * tw
        compact = cmap is not None
        shape = self.x_shape(B, c, H, W, K=cmap.K if compact else None)
        if X is None:   # a compact Xc's pad rows are never written: zeros, not garbage
            X = (cupy.zeros if compact else cupy.empty)(shape, dtype=storage_dtype(self.dtype))
        _check_device_array(X, "Xc" if compact else "X", shape, self.dtype, 3,
                            "[p*p, K, Npad]" if compact else "[p*p, c, Npad]")
        g = self.geometry
        grid = g.grid(shape[2], c)
        i32 = np.int32
        head = (d, X, cmap.xrow, i32(cmap.K)) if compact else (d, X)
        self.kernel(c)(grid, (g.threads, 1, 1),
                       head + (i32(c), i32(H), i32(W), i32(th), i32(tw), i32(T), i32(shape[2]),
                               i32(-(-shape[2] // g.tt))))
        return X


def _position_rows(kept: np.ndarray, i: int, c: int, K: int) -> np.ndarray:
    """xrow[i, :] of `channel_rows` from position i's kept channels (checked)."""
    if kept.ndim != 1 or not (np.issubdtype(kept.dtype, np.integer) or kept.size == 0):
        raise InputError(f"cols[{i}] has shape {kept.shape} and dtype {kept.dtype}",
                         "give each position's kept channels as a 1-D integer array")
    if kept.size > K:
        raise InputError(f"cols[{i}] has {kept.size} rows, more than Xc's K={K}",
                         "pass K >= the longest position (ColumnLayout.K)")
    return _invert_rows(kept, f"cols[{i}]", c, "channel")


def _invert_rows(kept: np.ndarray, where: str, size: int, unit: str) -> np.ndarray:
    """One position's compact rows -> its map: kept[j] = the `unit` row j holds (-1: a pad row);
    result[u] = j, or -1 where `unit` u was pruned. Shared by the input (channels) and output (filters) maps."""
    row = np.full(size, -1, dtype=np.int32)
    if kept.size == 0:
        return row
    if kept.min() < -1 or kept.max() >= size:
        raise InputError(f"{where} holds {unit}s outside [-1, {size}): {kept.min()}..{kept.max()}",
                         f"use {unit} indices 0..{size - 1}, -1 for a pad row")
    js = np.flatnonzero(kept >= 0)
    units = kept[js]
    if len(np.unique(units)) != len(units):
        raise InputError(f"{where} keeps a {unit} twice", f"each kept {unit} appears once per position")
    row[units] = js
    return row


class OutputTransform:
    """Y[p*p, n, Npad] (or compact Yc[p*p, nmax, Npad] + row map) -> out NCHW [B, n, H, W] or NHWC [B, H, W, n]."""

    def __init__(self, p: int, dt: DType | str, layout: str, compact: bool = False):
        self.p = check_p(p)
        self.m = self.p - 2
        self.dtype = as_dtype(dt)
        self.layout = check_layout(layout)
        self.compact = bool(compact)
        self.geometry = output_geometry(self.dtype, self.layout, self.p)
        self._kernel = None

    def source(self) -> str:
        return render_output(self.p, self.dtype, self.layout, self.compact)[0]

    def kernel(self):
        """The compiled cupy.RawKernel (NVRTC on first use; needs a GPU)."""
        if self._kernel is None:
            _check_bf16_arch(self.dtype)
            self._kernel = _compiled(self.source(), OUTPUT_KERNEL)
        return self._kernel

    def output_shape(self, batch: int, n: int, H: int, W: int) -> tuple[int, int, int, int]:
        return (batch, n, H, W) if self.layout == "nchw" else (batch, H, W, n)

    def dims(self, out_shape) -> tuple[int, int, int, int]:
        """(batch, n, H, W) of an output of shape `out_shape` in this layout."""
        return _layout_dims(out_shape, self.layout, "output", "n")

    def bytes_moved(self, batch: int, n: int, H: int, W: int, kept_rows: int | None = None) -> int:
        """Fewest bytes: Y read once (its `kept_rows` rows per position when compact, default n),
        out written once; the compact variant also reads its [p*p, n] int32 row map."""
        th, tw = tile_grid(H, W, self.m)
        Np = npad(batch * th * tw, self.dtype)
        L = self.p * self.p
        rows = n if kept_rows is None else kept_rows
        moved = self.dtype.itemsize * (L * rows * Np + batch * n * H * W)
        return moved + (4 * L * n if self.compact else 0)

    @staticmethod
    def inverse_rows(rows, n: int) -> np.ndarray:
        """Kept-row indices -> the kernel's inverse map, on the host (numpy int32 [L, n]).

        rows[i, j] = the filter held by row j of Yc at position i, or -1 for a padding row (positions
        keep different counts; Yc is padded to the largest). Result inv[i, f] = j, or -1 where filter f
        was pruned at position i (its contribution to the output is zero)."""
        r = np.asarray(rows)
        if r.ndim != 2 or not np.issubdtype(r.dtype, np.integer):
            raise InputError(f"rows must be a 2-D integer array [L, nmax]; got {r.dtype} shape {r.shape}",
                             "pass the kept filter indices per position, -1 for padding")
        return np.stack([_invert_rows(row, f"rows[{i}]", n, "filter") for i, row in enumerate(r)]) \
            if len(r) else np.full((0, n), -1, dtype=np.int32)

    @staticmethod
    def row_map(rows, n: int) -> "RowMap":
        """`inverse_rows` on the GPU, with the shapes it fits: build it once per pruning mask, not per call."""
        import cupy

        host = cupy.asnumpy(rows) if isinstance(rows, cupy.ndarray) else np.asarray(rows)
        inv = OutputTransform.inverse_rows(host, n)
        return RowMap(inv=cupy.asarray(inv), positions=host.shape[0], nrows=host.shape[1], n=n)

    def __call__(self, Y, out, row_map=None):
        """Transform Y (compact: Yc with `row_map` from `row_map(rows, n)`) into `out`; returns out."""
        _require_cupy(Y, "Y")
        _require_cupy(out, "output")
        B, n, H, W = self.dims(out.shape)
        _check_device_array(out, "output", None, self.dtype, 4, f"{self.layout.upper()} output")
        _check_pixels(B, H, W)
        th, tw = tile_grid(H, W, self.m)
        T = B * th * tw
        Np = npad(T, self.dtype)
        L = self.p * self.p
        if self.compact:
            if row_map is None:
                raise InputError("the compact output transform needs row_map",
                                 "pass row_map=OutputTransform.row_map(rows, n)")
            if Y.ndim != 3 or Y.shape[1] < 1:
                raise InputError(f"Yc must be [L={L}, nmax, Npad={Np}]; got shape {tuple(Y.shape)}",
                                 "pass the compact GEMM output of this layer")
            rows = Y.shape[1]
            _check_device_array(Y, "Yc", (L, rows, Np), self.dtype, 3, "[p*p, nmax, Npad]")
            if not isinstance(row_map, RowMap):
                raise InputError(f"row_map is a {type(row_map).__name__}, not a RowMap",
                                 "build it with OutputTransform.row_map(rows, n)")
            if (row_map.positions, row_map.nrows, row_map.n) != (L, rows, n):
                raise InputError(
                    f"row_map fits Yc[{row_map.positions}, {row_map.nrows}, :] and n={row_map.n}, "
                    f"not Yc{tuple(Y.shape)} and n={n}",
                    "build the row map from the same rows[L, nmax] that laid out Yc")
        else:
            if row_map is not None:
                raise InputError("row_map was given to a dense output transform",
                                 "build OutputTransform(..., compact=True) for compact rows")
            _check_device_array(Y, "Y", (L, n, Np), self.dtype, 3, "[p*p, n, Npad]")
        g = self.geometry
        grid = g.grid(T, n)
        i32 = np.int32
        head = (Y, row_map.inv, i32(rows), out) if self.compact else (Y, out)
        self.kernel()(grid, (g.threads, 1, 1),
                      head + (i32(n), i32(H), i32(W), i32(th), i32(tw), i32(T), i32(Np), i32(-(-T // g.tt))))
        return out


def fp32_layer_reference(d, W32, p: int, batch: int, n: int, H: int, Wd: int, layout: str = LAYER_LAYOUT):
    """The whole Winograd layer in fp32 on the GPU: A^T [(W32 . (B^T d B))] A with an fp32 cuBLAS GEMM
    of the Winograd-domain weights W32 [p*p, n, c]; `d` float32 in `layout`. The reference of the
    sweep's layer times and of cuDNN's conv."""
    from cutlass_wsp.gpu import arrays
    from cutlass_wsp.gpu.baselines import CublasBatched

    X32 = InputTransform(p, "fp32", layout)(d)
    Y32 = arrays.empty((W32.shape[0], n, X32.shape[2]), "fp32")
    CublasBatched("fp32").run(W32, X32, Y32)
    tf = OutputTransform(p, "fp32", layout)
    out32 = arrays.empty(tf.output_shape(batch, n, H, Wd), "fp32")
    return tf(Y32, out32)
