"""GPU Winograd transforms against the numpy float64 references of cutlass_wsp.winograd: input and
output transforms for p = 4, 6, 8 x fp16/bf16/fp32 x NCHW/NHWC on odd and even maps, poisoned outputs
fully written (X's pad columns zero), the compact-row output, and the compact (WSP-C) input against the
dense one. Bandwidth numbers are printed by bench/smoke_times.py, not here."""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest

from cutlass_wsp import winograd as wg
from cutlass_wsp.dtypes import get_dtype
from cutlass_wsp.errors import InputError
from cutlass_wsp.gpu import arrays
from cutlass_wsp.gpu.transforms import InputTransform, OutputTransform
from cutlass_wsp.gpu.verify import check

cp = pytest.importorskip("cupy")

PS = (4, 6, 8)
DTS = ("fp16", "bf16", "fp32")
LAYOUTS = ("nchw", "nhwc")
# (batch, c or n, H, W): odd maps with partial tiles, even maps, a VGG-sized one. The channel counts
# give NHWC loads of every width: c*itemsize a multiple of 16 (24, 64), of 8 (12), of 4 (6), odd (3).
SHAPES = [(2, 3, 7, 9), (1, 6, 13, 13), (2, 12, 14, 14), (1, 24, 9, 7), (2, 64, 56, 56)]


def _to_layout(nchw: np.ndarray, layout: str) -> np.ndarray:
    return np.ascontiguousarray(nchw if layout == "nchw" else nchw.transpose(0, 2, 3, 1))


def _from_layout(a: np.ndarray, layout: str) -> np.ndarray:
    return a if layout == "nchw" else a.transpose(0, 3, 1, 2)


def _stored_values(dev, dt) -> np.ndarray:
    """float64 host copy of exactly what is stored on the device (after rounding to dt)."""
    return arrays.to_host_float32(dev, dt).astype(np.float64)


def _seed(*key) -> int:
    return zlib.crc32(repr(key).encode())


def _sync():
    cp.cuda.get_current_stream().synchronize()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("p,name,layout", list(itertools.product(PS, DTS, LAYOUTS)))
def test_input_transform_matches_reference(p, name, layout, shape):
    dt = get_dtype(name)
    B, c, H, W = shape
    rng = np.random.default_rng(_seed(p, name, layout, shape))
    d_nchw = rng.standard_normal((B, c, H, W)).astype(np.float32)
    d = arrays.from_host(_to_layout(d_nchw, layout), dt)
    tr = InputTransform(p, dt, layout)
    X = arrays.poison(arrays.empty(tr.x_shape(B, c, H, W), dt), dt)
    assert tr(d, X) is X
    _sync()
    ref = wg.input_transform(_from_layout(_stored_values(d, dt), layout), p - 2)  # [L, c, T]
    T = ref.shape[2]
    assert X.shape[2] == arrays.npad(T, dt)
    check(X[..., :T], ref, dt, f"input_transform p={p} {name} {layout}", shape=shape)
    pad = arrays.to_float32(X[..., T:], dt)
    assert bool((pad == 0).all()), "X's pad columns must be written as zeros"


def test_input_transform_allocates_and_tf32_equals_fp32():
    B, c, H, W = 2, 6, 11, 10
    d32 = arrays.random((B, H, W, c), "fp32", seed=3)
    X32 = InputTransform(6, "fp32", "nhwc")(d32)
    Xtf = InputTransform(6, "tf32", "nhwc")(d32)
    _sync()
    assert X32.shape == (36, c, arrays.npad(2 * 3 * 3, "fp32"))
    assert bool(cp.array_equal(X32, Xtf))  # tf32 layers transform in fp32: same kernel


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("p,name,layout", list(itertools.product(PS, DTS, LAYOUTS)))
def test_output_transform_matches_reference(p, name, layout, shape):
    dt = get_dtype(name)
    B, n, H, W = shape
    m = p - 2
    th, tw = wg.tile_grid(H, W, m)
    T = B * th * tw
    rng = np.random.default_rng(_seed(p, name, layout, shape, "out"))
    Y = arrays.pad_columns(rng.standard_normal((p * p, n, T)).astype(np.float32), dt)
    if Y.shape[2] > T:
        arrays.poison(Y[..., T:])  # pad columns are never results: they must not reach the output
    tr = OutputTransform(p, dt, layout)
    out = arrays.poison(arrays.empty(tr.output_shape(B, n, H, W), dt), dt)
    assert tr(Y, out) is out
    _sync()
    ref = wg.output_transform(_stored_values(Y[..., :T], dt), m, B, H, W)  # NCHW
    got = out if layout == "nchw" else out.transpose(0, 3, 1, 2)
    check(got, ref, dt, f"output_transform p={p} {name} {layout}", shape=shape)


def _compact_case(rng, p, n, T, dt):
    """Random WSP-R rows: position i keeps k_i of n filters (k_i unequal, one 0, one n) in a random row
    order; Yc is padded to max k_i with poisoned (NaN) padding rows, which the kernel must never read.
    Returns (Yc, rows, Y_full): Y_full[i, f] = the stored Yc row holding f, zeros for pruned rows."""
    L = p * p
    counts = rng.integers(0, n + 1, size=L)
    counts[0], counts[-1] = 0, n
    nmax = int(counts.max())
    rows = np.full((L, nmax), -1, dtype=np.int64)
    yc = np.full((L, nmax, T), np.nan, dtype=np.float32)
    for i in range(L):
        kept = rng.permutation(n)[: counts[i]]
        slots = rng.permutation(nmax)[: counts[i]]
        rows[i, slots] = kept
        yc[i, slots] = rng.standard_normal((counts[i], T))
    Yc = arrays.pad_columns(yc, dt)
    stored = _stored_values(Yc, dt)
    Yfull = np.zeros((L, n, T))
    for i, j in zip(*np.nonzero(rows >= 0)):
        Yfull[i, rows[i, j]] = stored[i, j, :T]
    return Yc, rows, Yfull


@pytest.mark.parametrize("shape", SHAPES[:4], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("p,name,layout", list(itertools.product(PS, DTS, LAYOUTS)))
def test_compact_output_transform_zeroes_missing_rows(p, name, layout, shape):
    dt = get_dtype(name)
    B, n, H, W = shape
    m = p - 2
    th, tw = wg.tile_grid(H, W, m)
    T = B * th * tw
    rng = np.random.default_rng(_seed(p, name, layout, shape, "compact"))
    Yc, rows, Yfull = _compact_case(rng, p, n, T, dt)
    tr = OutputTransform(p, dt, layout, compact=True)
    out = arrays.poison(arrays.empty(tr.output_shape(B, n, H, W), dt), dt)
    tr(Yc, out, row_map=OutputTransform.row_map(rows, n))
    _sync()
    ref = wg.output_transform(Yfull, m, B, H, W)
    got = out if layout == "nchw" else out.transpose(0, 3, 1, 2)
    check(got, ref, dt, f"compact output_transform p={p} {name} {layout}", shape=shape)


def test_compact_with_every_row_kept_equals_dense():
    dt, p, (B, n, H, W) = get_dtype("fp16"), 6, (2, 9, 10, 11)
    th, tw = wg.tile_grid(H, W, p - 2)
    Y = arrays.pad_columns(np.random.default_rng(5).standard_normal((p * p, n, B * th * tw)).astype(np.float32), dt)
    rows = np.tile(np.arange(n), (p * p, 1))
    dense = OutputTransform(p, dt, "nhwc")(Y, arrays.empty((B, H, W, n), dt))
    compact = OutputTransform(p, dt, "nhwc", compact=True)(Y, arrays.empty((B, H, W, n), dt),
                                                           row_map=OutputTransform.row_map(rows, n))
    _sync()
    assert bool(cp.array_equal(dense, compact))


def _bits(a):
    """The stored bits of a storage array (NaN-safe bitwise comparison)."""
    return a.view(cp.uint16 if a.dtype.itemsize == 2 else cp.uint32)


def _channel_case(rng, L: int, c: int, pad: int = 2):
    """Random WSP-C kept channels: position i keeps k_i of c (one 0, one c, the rest random) in a random
    row order of Xc, with -1 rows (padding) mixed in; K = max k_i + pad. Returns (cols [L][K], K)."""
    counts = rng.integers(1, c + 1, size=L)
    counts[0], counts[-1] = 0, c
    K = int(counts.max()) + pad
    cols = np.full((L, K), -1, dtype=np.int64)
    for i in range(L):
        cols[i, rng.permutation(K)[: counts[i]]] = rng.permutation(c)[: counts[i]]
    return cols, K


# (p, dtype, layout, (batch, c, H, W)): every p, dtype and layout once; NHWC loads of 16 and 4 bytes.
COMPACT_CASES = [(4, "fp16", "nhwc", (2, 24, 9, 7)), (6, "bf16", "nchw", (1, 12, 13, 13)),
                 (8, "fp32", "nhwc", (2, 6, 11, 10)), (4, "fp32", "nchw", (2, 16, 14, 14)),
                 (6, "fp16", "nhwc", (1, 64, 20, 20))]


@pytest.mark.parametrize("p,name,layout,shape", COMPACT_CASES, ids=lambda v: "x".join(map(str, v))
                         if isinstance(v, tuple) else str(v))
def test_compact_input_transform_writes_exactly_the_kept_rows(p, name, layout, shape):
    """Xc[i, j] is bitwise the dense transform's X[i, cols[i][j]] (pad columns included); rows no channel
    maps to keep the poison they had (never written)."""
    dt = get_dtype(name)
    B, c, H, W = shape
    rng = np.random.default_rng(_seed(p, name, layout, shape, "compact-in"))
    d = arrays.from_host(_to_layout(rng.standard_normal((B, c, H, W)).astype(np.float32), layout), dt)
    X = InputTransform(p, dt, layout)(d)
    cols, K = _channel_case(rng, p * p, c)
    tc = InputTransform(p, dt, layout, compact=True)
    Xc = arrays.poison(arrays.empty(tc.x_shape(B, c, H, W, K=K), dt), dt)
    assert tc(d, Xc, InputTransform.channel_map(cols, c, K)) is Xc
    _sync()
    got, dense = cp.asnumpy(_bits(Xc)), cp.asnumpy(_bits(X))
    nan = cp.asnumpy(_bits(arrays.poison(arrays.empty((1,), dt), dt)))[0]
    kept = cols >= 0
    assert np.array_equal(got[kept], dense[np.nonzero(kept)[0], cols[kept]])
    assert (got[~kept] == nan).all(), "the compact transform wrote a row no channel maps to"


def test_compact_input_transform_allocates_zero_pad_rows():
    dt, p, (B, c, H, W) = get_dtype("fp16"), 4, (1, 8, 6, 6)
    d = arrays.random((B, H, W, c), dt, seed=4)
    cols = [np.array([1, 5])] * 8 + [np.array([7])] * 8
    Xc = InputTransform(p, dt, "nhwc", compact=True)(d, None, InputTransform.channel_map(cols, c, 8))
    X = InputTransform(p, dt, "nhwc")(d)
    _sync()
    assert Xc.shape == (16, 8, X.shape[2])
    assert bool(cp.array_equal(Xc[:8, :2], X[:8, cp.asarray([1, 5])]))
    assert bool(cp.array_equal(Xc[8:, 0], X[8:, 7]))
    assert not bool(Xc[:8, 2:].any()) and not bool(Xc[8:, 1:].any())


def test_compact_input_calls_are_validated_before_launch():
    dt = get_dtype("fp16")
    d = arrays.zeros((1, 7, 9, 8), dt)                        # NHWC, c = 8: 4 x 5 tiles -> Npad 24
    cmap = InputTransform.channel_map([np.arange(4)] * 16, 8, 8)
    tc = InputTransform(4, dt, "nhwc", compact=True)
    Xc = arrays.poison(arrays.empty((16, 8, 24), dt), dt)
    with pytest.raises(InputError, match="needs channel_map"):
        tc(d, Xc)
    with pytest.raises(InputError, match="not a ChannelMap"):
        tc(d, Xc, cmap.xrow)
    with pytest.raises(InputError, match="fits 16 positions of 8 channels, not 36"):
        InputTransform(6, dt, "nhwc", compact=True)(d, None, cmap)
    with pytest.raises(InputError, match="not 16 positions .* of c=4"):
        tc(arrays.zeros((1, 7, 9, 4), dt), None, cmap)
    with pytest.raises(InputError, match="expected"):
        tc(d, arrays.empty((16, 4, 24), dt), cmap)            # K = 8, not 4
    with pytest.raises(InputError, match="channel_map was given to a dense"):
        InputTransform(4, dt, "nhwc")(d, None, cmap)
    _sync()
    assert bool(cp.isnan(Xc.astype(cp.float32)).all()), "a refused call was launched"


def test_calls_are_validated_before_launch():
    dt = get_dtype("fp16")
    it = InputTransform(4, dt, "nchw")
    d = arrays.zeros((1, 3, 7, 9), dt)
    with pytest.raises(InputError, match="dtype float32"):
        it(cp.zeros((1, 3, 7, 9), cp.float32))
    with pytest.raises(InputError, match="expected"):
        it(d, arrays.empty((16, 3, 8), dt))  # 4 x 5 tiles -> Npad 24, not 8
    with pytest.raises(InputError, match="C-contiguous"):
        it(arrays.zeros((1, 7, 9, 3), dt).transpose(0, 3, 1, 2))
    ot = OutputTransform(4, dt, "nhwc")
    out = arrays.empty((1, 7, 9, 3), dt)
    with pytest.raises(InputError, match="expected"):
        ot(arrays.zeros((16, 3, 16), dt), out)  # T = 20 -> Npad 24
    with pytest.raises(InputError, match="row_map was given"):
        ot(arrays.zeros((16, 3, 24), dt), out, row_map=OutputTransform.row_map(np.zeros((16, 1), int), 3))
    oc = OutputTransform(4, dt, "nhwc", compact=True)
    with pytest.raises(InputError, match="needs row_map"):
        oc(arrays.zeros((16, 2, 24), dt), out)
    with pytest.raises(InputError, match="row_map fits"):
        oc(arrays.zeros((16, 2, 24), dt), out, row_map=OutputTransform.row_map(np.zeros((16, 1), int), 3))
