"""Winograd F(m×m, 3×3) in numpy: Cook–Toom matrices in exact rationals, the EC2B transforms, tiling,
a reference Winograd convolution and the direct convolution it must equal.

Layouts (see docs/winograd.md): X[L, c, T], W[L, n, c], Y[L, n, T] with L = p², p = m + 2,
tile index t = (b * th + ty) * tw + tx and Winograd position i = row * p + col.
"""

from __future__ import annotations

import operator
from fractions import Fraction
from functools import lru_cache
from math import prod

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.polynomial import polynomial as npoly

from cutlass_wsp.errors import InputError

R = 3  # filter size: only 3×3 stride-1 convs are Winograd layers here

# wincnn's interpolation points; the point at infinity is implicit (last row of the Vandermonde).
POINTS: dict[int, tuple[Fraction, ...]] = {
    2: tuple(map(Fraction, (0, 1, -1))),
    4: tuple(map(Fraction, (0, 1, -1, 2, -2))),
    6: tuple(map(Fraction, (0, 1, -1, 2, -2))) + (Fraction(1, 2), Fraction(-1, 2)),
}
TILE_SIZES: tuple[int, ...] = tuple(POINTS)            # output tile m
TILE_PS: tuple[int, ...] = tuple(m + R - 1 for m in POINTS)  # input tile p = m + 2

_FLOAT_DTYPES = (np.dtype(np.float64), np.dtype(np.float32), np.dtype(np.float16))


# ---------------------------------------------------------------------------------------------
# Exact matrices
# ---------------------------------------------------------------------------------------------

def _vandermonde_inf(points: tuple[Fraction, ...], cols: int) -> np.ndarray:
    """Rows a_i^j (j < cols) for each finite point, plus the row of the point at infinity
    (picks the leading coefficient): (len(points) + 1) × cols, object Fractions."""
    rows = [[a ** j for j in range(cols)] for a in points]
    rows.append([Fraction(0)] * (cols - 1) + [Fraction(1)])
    return np.array(rows, dtype=object)


def cook_toom(points: tuple[Fraction, ...], m: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Aᵀ, G, Bᵀ) of F(m, r) on `points` (m + r - 2 distinct finite points, plus infinity), built as
    wincnn's cookToomFilter does with fractions in G:

        Aᵀ = V_m(a)ᵀ,  G = S⁻¹ V_r(a),  Bᵀ = S (L T | e)ᵀ

    V_k: Vandermonde-with-infinity of k columns; L: Lagrange basis coefficients (L[j, i] = coefficient
    of x^j in prod_{k≠i}(x - a_k) / f_i, f_i = prod_{k≠i}(a_i - a_k)); T = [I | -a_i^(alpha-1)]
    reduces modulo prod(x - a_i); S = diag(f_0, ..., f_{alpha-2}, 1) with f_0 made positive.
    The result satisfies y = Aᵀ[(G g) ⊙ (Bᵀ d)] for the correlation y_k = sum_j g_j d_{k+j}."""
    a = tuple(Fraction(x) for x in points)
    alpha = m + r - 1
    n = alpha - 1
    if len(a) != n:
        raise InputError(f"F({m},{r}) needs {n} finite interpolation points; got {len(a)}",
                         "pass m + r - 2 distinct points")
    if len(set(a)) != n:
        raise InputError(f"interpolation points must be distinct; got {a}", "remove the repeated point")

    f = [prod(a[i] - a[k] for k in range(n) if k != i) for i in range(n)]
    s = f + [Fraction(1)]
    if s[0] < 0:  # wincnn's sign convention; the sign cancels between G and Bᵀ
        s[0] = -s[0]

    AT = _vandermonde_inf(a, m).T
    G = np.array([[x / s[i] for x in row] for i, row in enumerate(_vandermonde_inf(a, r))], dtype=object)

    lagrange = np.empty((n, n), dtype=object)  # lagrange[j, i]
    for i in range(n):
        others = np.array([a[k] for k in range(n) if k != i], dtype=object)
        coeffs = npoly.polyfromroots(others)  # ascending powers, exact in Fractions
        for j in range(n):
            lagrange[j, i] = Fraction(coeffs[j]) / f[i]
    reduce_mod = np.zeros((n, alpha), dtype=object)
    reduce_mod[:, :n] = np.identity(n, dtype=int)
    reduce_mod[:, n] = [-(x ** n) for x in a]
    e_last = np.array([[Fraction(0)] * n + [Fraction(1)]], dtype=object)  # the point at infinity
    B = np.vstack([lagrange.dot(reduce_mod), e_last])
    BT = np.diag(np.array(s, dtype=object)).dot(B.T)
    fr = np.vectorize(Fraction, otypes=[object])
    return fr(AT), fr(G), fr(BT)


def _check_m(m) -> int:
    try:
        mi = operator.index(m)
    except TypeError:
        mi = None
    if mi not in POINTS:
        raise InputError(f"tile size m={m} is not supported",
                         f"use m = 2, 4 or 6 (p = {', '.join(map(str, TILE_PS[:-1]))} or {TILE_PS[-1]})")
    return mi


def tile_m(p: int) -> int:
    """Output tile size m of an input tile size p (4 → 2, 6 → 4, 8 → 6)."""
    try:
        pi = operator.index(p)
    except TypeError:
        pi = None
    if pi not in TILE_PS:
        raise InputError(f"tile size p={p} is not supported", "use 4, 6 or 8")
    return pi - (R - 1)


@lru_cache(maxsize=None)
def _matrices_cached(m: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mats = cook_toom(POINTS[m], m, r)
    for x in mats:
        x.flags.writeable = False
    return mats


def matrices(m: int, r: int = R) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact (Aᵀ [m×p], G [p×r], Bᵀ [p×p]) of F(m, 3) as object arrays of Fraction (read-only)."""
    m = _check_m(m)
    if r != R:
        raise InputError(f"filter size r={r} is not supported",
                         "only 3×3 stride-1 convolutions are Winograd layers; use r=3")
    return _matrices_cached(m, r)


def _check_float_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in _FLOAT_DTYPES:
        raise InputError(f"dtype {dtype!r} is not supported", "use numpy.float64, float32 or float16")
    return dt


@lru_cache(maxsize=None)
def _matrices_float_cached(m: int, dt: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    out = []
    for x in matrices(m):
        y = x.astype(np.float64).astype(dt)  # round each rational once, from float64
        y.flags.writeable = False
        out.append(y)
    return tuple(out)


def matrices_float(m: int, dtype=np.float64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Aᵀ, G, Bᵀ) rounded to `dtype` (float64, float32 or float16); cached, read-only."""
    return _matrices_float_cached(_check_m(m), _check_float_dtype(dtype))


# ---------------------------------------------------------------------------------------------
# Tiling and transforms
# ---------------------------------------------------------------------------------------------

def tile_grid(H: int, W: int, m: int) -> tuple[int, int]:
    """(th, tw) = (ceil(H/m), ceil(W/m)): output tiles covering an H×W map."""
    m = _check_m(m)
    if H < 1 or W < 1:
        raise InputError(f"feature map {H}×{W} is empty", "H and W must be at least 1")
    return -(-H // m), -(-W // m)


def _precision(dt: np.dtype) -> tuple[np.dtype, np.dtype]:
    """(storage, compute) dtypes for an array: fp16 is stored as fp16 and computed in fp32, as a
    GPU kernel does; float32 stays float32; anything else (ints, float64) is float64."""
    if dt == np.float16:
        return np.dtype(np.float16), np.dtype(np.float32)
    if dt == np.float32:
        return np.dtype(np.float32), np.dtype(np.float32)
    return np.dtype(np.float64), np.dtype(np.float64)


def _as_real_array(x, name: str, layout: str) -> np.ndarray:
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists etc.
        raise InputError(f"{name} is not an array ({exc})", f"pass a numeric numpy array {layout}") from None
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InputError(f"{name} has dtype {arr.dtype}", f"pass a real numeric array {layout}")
    if arr.ndim != 4:
        raise InputError(f"{name} must be a 4-D array {layout}; got shape {arr.shape}",
                         f"reshape it to {layout}")
    if 0 in arr.shape:
        raise InputError(f"{name} has an empty dimension: shape {arr.shape}", "every dimension must be ≥ 1")
    return arr


def _check_input(d) -> np.ndarray:
    return _as_real_array(d, "input d", "[B, c, H, W] (NCHW)")


def _check_filters(g) -> np.ndarray:
    g = _as_real_array(g, "filters g", "[n, c, 3, 3]")
    if g.shape[2:] != (R, R):
        raise InputError(
            f"only 3×3 stride-1 convolutions are Winograd layers; got {g.shape[2]}×{g.shape[3]}",
            "run this layer as a direct convolution")
    return g


def input_transform(d, m: int) -> np.ndarray:
    """X[L, c, T] = Bᵀ d_tile B for every p×p input tile of d[B, c, H, W].

    'same' padding: one zero row/column on each side, then zeros at the bottom/right so that the
    th×tw tiles (stride m, overlap 2) cover partial tiles. X[i, ch, t] with i = row*p + col and
    t = (b*th + ty)*tw + tx. fp16 input → fp32 arithmetic, fp16 result."""
    m = _check_m(m)
    d = _check_input(d)
    st, ct = _precision(d.dtype)
    Bn, c, H, W = d.shape
    th, tw = tile_grid(H, W, m)
    p = m + R - 1
    pad_h, pad_w = th * m + 2 - H - 1, tw * m + 2 - W - 1
    dp = np.pad(d.astype(st).astype(ct), ((0, 0), (0, 0), (1, pad_h), (1, pad_w)))
    tiles = sliding_window_view(dp, (p, p), axis=(2, 3))[:, :, ::m, ::m]  # [B, c, th, tw, p, p]
    BT = matrices_float(m, ct)[2]
    X = np.einsum("ik,bcyxkl,jl->ijcbyx", BT, tiles, BT, optimize=True)
    return np.ascontiguousarray(X.reshape(p * p, c, Bn * th * tw), dtype=st)


def filter_transform(g, m: int) -> np.ndarray:
    """W[L, n, c] = (G g[n, c] Gᵀ)[i // p, i % p] for g[n, c, 3, 3]. fp16 in → fp32 math, fp16 out."""
    m = _check_m(m)
    g = _check_filters(g)
    st, ct = _precision(g.dtype)
    n, c = g.shape[:2]
    p = m + R - 1
    G = matrices_float(m, ct)[1]
    U = np.einsum("ik,nckl,jl->ijnc", G, g.astype(st).astype(ct), G, optimize=True)
    return np.ascontiguousarray(U.reshape(p * p, n, c), dtype=st)


def output_transform(Y, m: int, B: int, H: int, W: int) -> np.ndarray:
    """out[B, n, H, W] from Y[L, n, T]: Aᵀ y_tile A per tile, tiles placed at (ty*m, tx*m), cropped
    to H×W. fp16 in → fp32 math, fp16 out."""
    m = _check_m(m)
    th, tw = tile_grid(H, W, m)
    p = m + R - 1
    Y = np.asarray(Y)
    if Y.ndim != 3 or Y.shape[0] != p * p or Y.shape[2] != B * th * tw or Y.shape[1] < 1:
        raise InputError(
            f"Y must have shape [L={p * p}, n, T={B * th * tw}] for F({m},3), B={B}, {H}×{W}; got {Y.shape}",
            "pass the GEMM batch output of this layer's input_transform/filter_transform")
    st, ct = _precision(Y.dtype)
    n = Y.shape[1]
    AT = matrices_float(m, ct)[0]
    y = Y.astype(st).astype(ct).reshape(p, p, n, B, th, tw)
    o = np.einsum("ik,klnbyx,jl->bnyixj", AT, y, AT, optimize=True)  # [B, n, th, m, tw, m]
    return np.ascontiguousarray(o.reshape(B, n, th * m, tw * m)[:, :, :H, :W], dtype=st)


# ---------------------------------------------------------------------------------------------
# Convolutions
# ---------------------------------------------------------------------------------------------

def _check_pair(d, g) -> tuple[np.ndarray, np.ndarray]:
    d, g = _check_input(d), _check_filters(g)
    if d.shape[1] != g.shape[1]:
        raise InputError(f"input has c={d.shape[1]} channels but filters expect c={g.shape[1]}",
                         "pass filters of shape [n, c, 3, 3] with the input's channel count")
    return d, g


def winograd_conv2d(d, g, m: int, dtype=np.float64) -> np.ndarray:
    """'same' 3×3 stride-1 cross-correlation of d[B, c, H, W] with g[n, c, 3, 3] by F(m×m, 3×3):
    output_transform(Y_i = W_i · X_i). dtype float64/float32: all arithmetic in it. float16: GPU
    emulation — inputs, X, W, Y and the output are rounded to fp16 between steps; transforms and the
    GEMM accumulate in fp32 (transform constants held in fp32)."""
    m = _check_m(m)
    dt = _check_float_dtype(dtype)
    d, g = _check_pair(d, g)
    st, ct = _precision(dt)
    Bn, _, H, W = d.shape
    X = input_transform(d.astype(st), m)
    Wt = filter_transform(g.astype(st), m)
    Y = np.matmul(Wt.astype(ct), X.astype(ct)).astype(st)
    return output_transform(Y, m, Bn, H, W)


def direct_conv2d(d, g) -> np.ndarray:
    """Reference: out[b, n, y, x] = sum_{c,u,v} g[n, c, u, v] · d_pad[b, c, y+u, x+v] (pad 1), float64."""
    d, g = _check_pair(d, g)
    dp = np.pad(d.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = sliding_window_view(dp, (R, R), axis=(2, 3))  # [B, c, H, W, 3, 3]
    out = np.tensordot(win, g.astype(np.float64), axes=([1, 4, 5], [1, 2, 3]))  # [B, H, W, n]
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
