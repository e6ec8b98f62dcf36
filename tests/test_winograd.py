"""Winograd F(m×m, 3×3): exact matrices, the 1-D identity, layouts of X/W/Y, tiling, and the numpy
Winograd convolution against a direct correlation."""

from __future__ import annotations

from fractions import Fraction as Fr

import numpy as np
import pytest

from cutlass_wsp.errors import InputError
from cutlass_wsp import winograd as wg

MS = (2, 4, 6)


def frac_matrix(rows) -> np.ndarray:
    return np.array([[Fr(x) for x in row] for row in rows], dtype=object)


# The BRIEF's matrices (Lavin & Gray, wincnn points), typed in from the BRIEF: the contract.
BRIEF = {
    2: (
        frac_matrix([[1, 1, 1, 0], [0, 1, -1, 1]]),
        frac_matrix([[1, 0, 0], ["1/2", "1/2", "1/2"], ["1/2", "-1/2", "1/2"], [0, 0, 1]]),
        frac_matrix([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, -1, 0, 1]]),
    ),
    4: (
        frac_matrix([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]),
        frac_matrix([["1/4", 0, 0], ["-1/6", "-1/6", "-1/6"], ["-1/6", "1/6", "-1/6"],
                     ["1/24", "1/12", "1/6"], ["1/24", "-1/12", "1/6"], [0, 0, 1]]),
        frac_matrix([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                     [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]),
    ),
}


def naive_conv2d(d, g):
    """Loop-by-loop 'same' 3×3 cross-correlation: the definition, independent of direct_conv2d."""
    B, c, H, W = d.shape
    n = g.shape[0]
    dp = np.zeros((B, c, H + 2, W + 2))
    dp[:, :, 1:-1, 1:-1] = d
    out = np.zeros((B, n, H, W))
    for y in range(H):
        for x in range(W):
            out[:, :, y, x] = np.einsum("bcuv,ncuv->bn", dp[:, :, y:y + 3, x:x + 3], g)
    return out


def rel_err(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


# ---------------------------------------------------------------------------------------------
# Exact matrices
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("m", [2, 4])
def test_matrices_equal_brief_exactly(m):
    for got, want in zip(wg.matrices(m), BRIEF[m]):
        assert got.shape == want.shape
        assert all(isinstance(x, Fr) for x in got.flat)
        assert (got == want).all()


@pytest.mark.parametrize("m", MS)
def test_matrix_shapes_and_points(m):
    p = m + 2
    AT, G, BT = wg.matrices(m)
    assert AT.shape == (m, p) and G.shape == (p, 3) and BT.shape == (p, p)
    assert len(wg.POINTS[m]) == p - 1
    # Aᵀ's columns are the powers of the points (then infinity): the points really used.
    assert tuple(AT[1, :-1]) == wg.POINTS[m]


def test_f63_uses_half_points():
    assert set(wg.POINTS[6]) == {Fr(0), Fr(1), Fr(-1), Fr(2), Fr(-2), Fr(1, 2), Fr(-1, 2)}


@pytest.mark.parametrize("m", MS)
def test_bt_is_scaled_inverse_vandermonde(m):
    """Transposition principle: S⁻¹Bᵀ = V⁻ᵀ with V the Vandermonde-with-infinity, S = diag(G[:,0]⁻¹ …).
    Checked as Vᵀ · diag(G's scale) · Bᵀ = I, independent of the Lagrange construction."""
    p = m + 2
    AT, G, BT = wg.matrices(m)
    pts = wg.POINTS[m]
    V = np.array([[a ** j for j in range(p)] for a in pts] + [[Fr(0)] * (p - 1) + [Fr(1)]], dtype=object)
    # G = S⁻¹ V_3, so S⁻¹ = G[:, 0] / V[:, 0] on finite points with V[:, 0] = 1, and 1 at infinity.
    s_inv = np.diag(np.array(list(G[:-1, 0]) + [Fr(1)], dtype=object))
    prod = V.T.dot(s_inv).dot(BT)
    assert (prod == np.identity(p, dtype=int)).all()


@pytest.mark.parametrize("m", MS)
def test_1d_identity_exact(m):
    """y = Aᵀ[(G g) ⊙ (Bᵀ d)] is exactly the 1-D correlation y_k = Σ_j g_j d_{k+j}."""
    rng = np.random.default_rng(m)
    AT, G, BT = wg.matrices(m)
    p = m + 2
    for _ in range(5):
        g = np.array([Fr(int(v), int(q)) for v, q in zip(rng.integers(-9, 10, 3), rng.integers(1, 7, 3))],
                     dtype=object)
        d = np.array([Fr(int(v), int(q)) for v, q in zip(rng.integers(-9, 10, p), rng.integers(1, 7, p))],
                     dtype=object)
        y = AT.dot(G.dot(g) * BT.dot(d))
        want = np.array([sum(g[j] * d[k + j] for j in range(3)) for k in range(m)], dtype=object)
        assert (y == want).all()


@pytest.mark.parametrize("m", MS)
def test_2d_tile_identity_exact(m):
    """Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A equals the 2-D correlation of one p×p tile, exactly."""
    rng = np.random.default_rng(10 + m)
    AT, G, BT = wg.matrices(m)
    p = m + 2
    g = np.vectorize(Fr, otypes=[object])(rng.integers(-5, 6, (3, 3)))
    d = np.vectorize(Fr, otypes=[object])(rng.integers(-5, 6, (p, p)))
    y = AT.dot(G.dot(g).dot(G.T) * BT.dot(d).dot(BT.T)).dot(AT.T)
    want = np.array([[(g * d[u:u + 3, v:v + 3]).sum() for v in range(m)] for u in range(m)], dtype=object)
    assert (y == want).all()


def test_matrices_float_cached_and_rounded():
    a = wg.matrices_float(4)
    assert a is wg.matrices_float(4, np.float64)
    assert not a[1].flags.writeable
    G32 = wg.matrices_float(4, np.float32)[1]
    assert G32.dtype == np.float32 and G32[1, 0] == np.float32(-1 / 6)
    assert np.array_equal(a[2], wg.matrices(4)[2].astype(np.float64))


# ---------------------------------------------------------------------------------------------
# Tiling and layouts
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("H,W,m,want", [(7, 9, 2, (4, 5)), (7, 9, 4, (2, 3)), (13, 11, 6, (3, 2)),
                                        (1, 1, 6, (1, 1)), (8, 8, 4, (2, 2)), (224, 224, 6, (38, 38))])
def test_tile_grid(H, W, m, want):
    assert wg.tile_grid(H, W, m) == want


def test_tile_m():
    assert [wg.tile_m(p) for p in (4, 6, 8)] == [2, 4, 6]
    with pytest.raises(InputError, match=r"tile size p=5 is not supported.*use 4, 6 or 8"):
        wg.tile_m(5)


def hand_tile(d, b, ch, ty, tx, m):
    """The p×p input tile of tile (ty, tx): padded rows ty*m .. ty*m+p-1 (pad 1 top/left, zeros past
    the map), by explicit indexing."""
    p = m + 2
    H, W = d.shape[2:]
    tile = np.zeros((p, p))
    for r in range(p):
        for s in range(p):
            y, x = ty * m + r - 1, tx * m + s - 1
            if 0 <= y < H and 0 <= x < W:
                tile[r, s] = d[b, ch, y, x]
    return tile


@pytest.mark.parametrize("m", MS)
def test_input_transform_layout_every_tile(m):
    """X[i, ch, t] == (Bᵀ d_tile B)[i // p, i % p] with t = (b*th + ty)*tw + tx, for every entry."""
    rng = np.random.default_rng(1)
    B, c, H, W = 2, 3, 7, 11  # partial tiles in both directions for every m
    d = rng.standard_normal((B, c, H, W))
    p = m + 2
    th, tw = wg.tile_grid(H, W, m)
    BT = wg.matrices_float(m)[2]
    X = wg.input_transform(d, m)
    assert X.shape == (p * p, c, B * th * tw) and X.flags.c_contiguous
    for b in range(B):
        for ch in range(c):
            for ty in range(th):
                for tx in range(tw):
                    want = BT @ hand_tile(d, b, ch, ty, tx, m) @ BT.T
                    np.testing.assert_allclose(X[:, ch, (b * th + ty) * tw + tx], want.reshape(-1),
                                               rtol=1e-12, atol=1e-12)


def test_input_transform_layout_specific_entry_and_swaps():
    """One documented entry: b=1, ch=2, ty=1, tx=2, i = 1*p + 3 for F(4,3); every plausible mix-up of
    axes (b/ty order, row/col, c/T swap) reads a different value."""
    m, p = 4, 6
    rng = np.random.default_rng(2)
    B, c, H, W = 2, 3, 9, 11  # th=3, tw=3
    d = rng.standard_normal((B, c, H, W))
    th, tw = wg.tile_grid(H, W, m)
    X = wg.input_transform(d, m)
    BT = wg.matrices_float(m)[2]
    b, ch, ty, tx, row, col = 1, 2, 1, 2, 1, 3
    want = (BT @ hand_tile(d, b, ch, ty, tx, m) @ BT.T)[row, col]
    t = (b * th + ty) * tw + tx
    assert X[row * p + col, ch, t] == pytest.approx(want, rel=1e-12)
    wrong = [
        X[col * p + row, ch, t],                      # i = col*p + row
        X[row * p + col, ch, (ty * B + b) * tw + tx],  # batch inside the tile rows
        X[row * p + col, ch, (b * tw + tx) * th + ty],  # tx before ty
        X.reshape(c, p * p, -1)[ch, row * p + col, t],  # [c, L, T] read as [L, c, T]
        wg.input_transform(d.transpose(0, 1, 3, 2), m)[row * p + col, ch, (b * th + ty) * tw + tx],  # H/W
    ]
    for v in wrong:
        assert abs(v - want) > 1e-6


@pytest.mark.parametrize("m", MS)
def test_filter_transform_layout(m):
    rng = np.random.default_rng(3)
    n, c, p = 5, 3, m + 2
    g = rng.standard_normal((n, c, 3, 3))
    G = wg.matrices_float(m)[1]
    Wt = wg.filter_transform(g, m)
    assert Wt.shape == (p * p, n, c) and Wt.flags.c_contiguous
    for i in range(p * p):
        for f in range(n):
            for ch in range(c):
                assert Wt[i, f, ch] == pytest.approx((G @ g[f, ch] @ G.T)[i // p, i % p], rel=1e-12, abs=1e-14)
    # n and c are not interchangeable: the transposed reading is wrong
    assert not np.allclose(Wt[:, 1, 2], (np.einsum("ik,nckl,jl->ijnc", G, g, G).reshape(p * p, n, c))[:, 2, 1])


@pytest.mark.parametrize("m", MS)
def test_output_transform_layout(m):
    """out[b, f, ty*m + u, tx*m + v] == (Aᵀ Y[:, f, t].reshape(p, p) A)[u, v], cropped to H×W."""
    rng = np.random.default_rng(4)
    B, n, H, W, p = 2, 3, 5, 13, m + 2
    th, tw = wg.tile_grid(H, W, m)
    Y = rng.standard_normal((p * p, n, B * th * tw))
    AT = wg.matrices_float(m)[0]
    out = wg.output_transform(Y, m, B, H, W)
    assert out.shape == (B, n, H, W)
    for b in range(B):
        for f in range(n):
            for ty in range(th):
                for tx in range(tw):
                    tile = AT @ Y[:, f, (b * th + ty) * tw + tx].reshape(p, p) @ AT.T
                    ys, xs = slice(ty * m, min(H, ty * m + m)), slice(tx * m, min(W, tx * m + m))
                    np.testing.assert_allclose(out[b, f, ys, xs], tile[:ys.stop - ys.start, :xs.stop - xs.start],
                                               rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Convolutions
# ---------------------------------------------------------------------------------------------

def test_direct_conv_matches_definition():
    rng = np.random.default_rng(5)
    d = rng.standard_normal((2, 3, 6, 5))
    g = rng.standard_normal((4, 3, 3, 3))
    np.testing.assert_allclose(wg.direct_conv2d(d, g), naive_conv2d(d, g), rtol=1e-12, atol=1e-12)
    # cross-correlation, not convolution: a flipped filter gives a different answer
    assert not np.allclose(wg.direct_conv2d(d, g), wg.direct_conv2d(d, g[:, :, ::-1, ::-1]))


# float64 bound (docs/winograd.md): 1e-10 for every m; measured 1e-16..1e-14, F(6,3) the largest
F64_BOUND = {2: 1e-10, 4: 1e-10, 6: 1e-10}


@pytest.mark.parametrize("m", MS)
@pytest.mark.parametrize("H,W", [(7, 9), (5, 5), (13, 11), (1, 1), (2, 3), (8, 12)])
def test_winograd_conv_float64_matches_direct(m, H, W):
    rng = np.random.default_rng(H * 100 + W)
    B, c, n = 3, 4, 5
    d = rng.standard_normal((B, c, H, W))
    g = rng.standard_normal((n, c, 3, 3))
    out = wg.winograd_conv2d(d, g, m)
    assert out.shape == (B, n, H, W) and out.dtype == np.float64
    assert rel_err(out, naive_conv2d(d, g)) < F64_BOUND[m]


@pytest.mark.parametrize("m", MS)
def test_partial_tile_corner_is_not_lost(m):
    """Only the bottom-right pixel is non-zero: it sits in the last, partial tile."""
    H, W = 7, 9
    d = np.zeros((2, 1, H, W))
    d[1, 0, H - 1, W - 1] = 1.0
    g = np.arange(18, dtype=float).reshape(2, 1, 3, 3) + 1
    out = wg.winograd_conv2d(d, g, m)
    ref = naive_conv2d(d, g)
    assert np.abs(ref).sum() > 0
    np.testing.assert_allclose(out, ref, atol=1e-12)


@pytest.mark.parametrize("m,tol32,tol16", [(2, 1e-6, 3e-3), (4, 1e-5, 1e-2), (6, 3e-5, 3e-2)])
def test_reduced_precision_errors(m, tol32, tol16):
    rng = np.random.default_rng(6)
    d = rng.standard_normal((2, 16, 9, 10))
    g = rng.standard_normal((8, 16, 3, 3)) * np.sqrt(2 / (16 * 9))
    ref = naive_conv2d(d, g)
    out32 = wg.winograd_conv2d(d, g, m, np.float32)
    out16 = wg.winograd_conv2d(d, g, m, np.float16)
    assert out32.dtype == np.float32 and out16.dtype == np.float16
    e32, e16 = rel_err(out32, ref), rel_err(out16, ref)
    assert e32 < tol32 and e16 < tol16
    # the emulation really rounds: fp16 error is far above fp32's, fp32's far above float64's
    assert e16 > 20 * e32 and e32 > 1e3 * rel_err(wg.winograd_conv2d(d, g, m), ref)


def test_fp16_emulation_rounds_between_steps():
    """fp16 mode must equal the step-by-step recipe: fp16 X and W, fp32-accumulated GEMM rounded to fp16."""
    rng = np.random.default_rng(7)
    m = 4
    d = rng.standard_normal((1, 8, 6, 6))
    g = rng.standard_normal((4, 8, 3, 3))
    X = wg.input_transform(d.astype(np.float16), m)
    Wt = wg.filter_transform(g.astype(np.float16), m)
    assert X.dtype == np.float16 and Wt.dtype == np.float16
    Y = (Wt.astype(np.float32) @ X.astype(np.float32)).astype(np.float16)
    want = wg.output_transform(Y, m, 1, 6, 6)
    np.testing.assert_array_equal(wg.winograd_conv2d(d, g, m, np.float16), want)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------

d_ok = np.zeros((1, 2, 5, 5))
g_ok = np.zeros((3, 2, 3, 3))


@pytest.mark.parametrize("call,msg", [
    (lambda: wg.matrices(3), r"tile size m=3 is not supported.*2, 4 or 6"),
    (lambda: wg.matrices(4, r=5), r"r=5"),
    (lambda: wg.matrices_float(8), r"m=8"),
    (lambda: wg.matrices_float(2, np.int32), r"dtype"),
    (lambda: wg.tile_m(2.0), r"p=2.0"),
    (lambda: wg.tile_grid(0, 5, 2), r"empty"),
    (lambda: wg.winograd_conv2d(d_ok, np.zeros((3, 2, 5, 5)), 2),
     r"only 3×3 stride-1 convolutions are Winograd layers; got 5×5"),
    (lambda: wg.direct_conv2d(d_ok, np.zeros((3, 2, 1, 3))), r"got 1×3"),
    (lambda: wg.winograd_conv2d(d_ok, np.zeros((3, 4, 3, 3)), 2), r"c=2 channels but filters expect c=4"),
    (lambda: wg.winograd_conv2d(d_ok[0], g_ok, 2), r"4-D array \[B, c, H, W\]"),
    (lambda: wg.filter_transform(np.zeros((2, 3, 3)), 2), r"4-D array \[n, c, 3, 3\]"),
    (lambda: wg.winograd_conv2d(d_ok, g_ok, 5), r"m=5"),
    (lambda: wg.winograd_conv2d(d_ok, g_ok, 2, np.complex64), r"dtype"),
    (lambda: wg.input_transform(np.zeros((1, 2, 0, 5)), 2), r"empty"),
    (lambda: wg.input_transform(d_ok.astype(complex), 2), r"real numeric"),
    (lambda: wg.output_transform(np.zeros((16, 3, 5)), 2, 1, 5, 5), r"T=9"),
    (lambda: wg.cook_toom((0, 1, 1), 2, 3), r"distinct"),
])
def test_bad_input_raises_input_error(call, msg):
    with pytest.raises(InputError, match=msg):
        call()
