"""Generation 5's data path emulated on the CPU, lane by lane, from what the kernel is rendered with and the weights as
the host packs them, against direct convolution.

No GPU runs generation 5 here, so its index math is checked by a model that follows the kernel's own steps: the host's
tile rectangle; the region of each chunk as the TMA box lands it (zeros past the image and past C); each lane's loads
(its tile's pixel + the column it reads first or second: the bank swap, from the rendered `swappable` flags and the
TPH / PXG rule); the k steps' halves of each load; the column pass with sgn and B^T's rows into the A fragment's k
slots; the weights read from pack_cp_weights' buffer at the descriptor offsets (st * PPC + a) of the chunk's column
block, un-swizzled as wgmma reads the 32-byte K-major layout; the epilogue's A^T with the swapped tiles' sign. A wrong
channel order, swizzle, column, sign or offset anywhere gives O(1) errors; the model's own float32 weights ~1e-7.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from cutlass_wsp.families.fused import cp_desc, dense_layout, pack_cp_weights
from cutlass_wsp.fused_banks import pick_rectangle, tile_order
from cutlass_wsp.winograd import direct_conv2d, filter_transform, matrices_float, tile_grid
from test_fused_family import _tma_box_row


def _rendered(bc: int, fb: int = 64, full: bool = False, vpair: bool = False, gather: str | None = None,
              xchg: str | None = None, epi: str | None = None, region: str | None = None,
              sched: str | None = None) -> dict:
    from cutlass_wsp.kernels.emitter import render

    wg = dict(sched="persistent", producer="light") if epi == "wg" else {}   # (the full map's: the push gather)
    if sched:
        wg["sched"] = sched
    src = render(cp_desc("fp16", 64, bc=bc, fb=fb, full_rows=full, vpair=vpair, gather=gather, xchg=xchg, epi=epi,
                         region=region, **wg))
    cols = {int(c): (int(j0), int(j1), float(sg), sw == "true") for c, j0, j1, sg, sw in re.findall(
        r"if \(col == (\d)\) \{ j0 = (\d); j1 = (\d); sgn = (-?[\d.]+)f; swappable = (\w+); \}", src)}
    env: dict = {"align1k": lambda b: (b + 1023) // 1024 * 1024}
    body = src[src.index("namespace wsp_kernel {\n\nconstexpr int P ="):]
    for name, expr in re.findall(r"^constexpr int (\w+) = ([^;]+);", body, re.M):   # in order, as the compiler does
        expr = re.sub(r"//.*", "", expr).replace("/", "//")
        expr = re.sub(r"(\w+) > (\w+) \? (\w+) : (\w+)", r"(\3 if \1 > \2 else \4)", expr)
        env[name] = eval(expr, {}, env)                                     # noqa: S307 -- our own template
    assert "desc_at(ua + (st * PPC + a) * ((MI * KS * 2) >> 4), u_hi)" in src
    if vpair:   # the expressions the emulation mirrors: the pair table, the 6 rows from tile 0's columns, tile tt's 4
        assert "const int pr = (t >> 4) * 8 + (t & 7), tt = (t >> 3) & 1, half = p.BY >> 1;" in src
        assert "by = 2 * (rem / p.BX) + tt, bx = rem % p.BX;" in src and "for (int by = 2; by <= BT; by *= 2)" in src
        assert "da[0][r] = *reinterpret_cast<const Ld*>(raw + r * row_bytes + la[0]);" in src
        assert "t[r] = fma2(step_of(db[0][MO * tt + r], st), sg, step_of(da[0][MO * tt + r], st));" in src
    if gather == "batched":   # the expressions _full_epilogue's batched gather mirrors
        assert "const uint32_t off = 4u * static_cast<uint32_t>(((lc * PPC + r) * BT + t) * LDJ);" in src
        assert ("const uint32_t wl = sinv32[(4 * r + 2 * rk + lc) * NFP + fp], wr = sinv32[(4 * r + 2 * (rk ^ 1) + lc) "
                "* NFP + fp];") in src
        assert "const int l0 = static_cast<int16_t>(wl & 0xffffu), l1 = static_cast<int>(wl) >> 16;" in src
        assert "rx[r][lc] = ld_cluster_if(ms_remote + off + 4 * r0, r0);" in src
        assert "mx[r][cc] = cc / 2 == rk ? lx[r][cc % 2] : rx[r][cc % 2];" in src
        assert "reinterpret_cast<uint32_t*>(sinv)[tid + q * THREADS] = invr[q];" in src
    if gather == "push":   # the expressions _push_epilogue mirrors
        assert "const int tl0 = (w4 & 1) * 16 + g;" in src and "if ((w4 >> 1) == static_cast<int>(rank)) {" in src
        if epi != "wg":   # (the warpgroup epilogue's LDJ is a namespace constant, read above)
            (pad,) = re.findall(r"^  constexpr int LDJ = MI \+ (\d+);", src, re.M)   # the epilogue's ms rows
            env["LDJ"] = env["MI"] + int(pad)
        if xchg == "half":   # a thread's run of MI / 4 values at q * (MI / 4), word q8; the inverse map through xrow
            assert "return j < 0 ? j : ((j & 7) >> 1) * (MI / 4) + (j >> 3) * 2 + (j & 1);" in src
            assert src.count("for (int q8 = 0; q8 < MI / 8; ++q8) wv[q8] = pack_out(f * acc[a][4 * q8 + 2 * h], "
                             "f * acc[a][4 * q8 + 2 * h + 1]);") == 2
            assert "uint4* run = reinterpret_cast<uint4*>(ms + ((col * PPC + a) * HT + tl0 + 8 * h) * LDJ + q * (MI / 4));" \
                in src and "run[u] = make_uint4(wv[4 * u], wv[4 * u + 1], wv[4 * u + 2], wv[4 * u + 3]);" in src
            assert ('"r"(cute::cast_smem_ptr_to_uint(ms + (col * PPC * HT + tl0) * LDJ + q * (MI / 4))), '
                    '"r"(rank ^ 1u));') in src
            assert ':: "r"(dst + 2 * ((a * HT + 8 * h) * LDJ + 8 * u)), "r"(wv[4 * u]), "r"(wv[4 * u + 1]),' in src
            assert "(static_cast<uint32_t>(xrow(static_cast<int16_t>(w & 0xffffu))) & 0xffffu) |" in src
            assert "(static_cast<uint32_t>(xrow(static_cast<int>(w) >> 16)) << 16);" in src
            zero = "et; r < PP * HT; r += EPI_THREADS" if epi == "wg" else "tid; r < PP * HT; r += THREADS"
            assert f"for (int r = {zero}) ms[r * LDJ + MI] = 0;" in src
            if epi != "wg":
                assert "mx[i / P][i % P] = x2f(mt[jx[i]]);" in src and "my[i / P][i % P] = x2f(mt[jy[i]]);" in src
        else:
            assert "ms + ((col * PPC + a) * HT + tl0 + 8 * h) * LDJ + q8 * 8 + 2 * q" in src
            assert '"r"(cute::cast_smem_ptr_to_uint(ms + (col * PPC * HT + tl0) * LDJ + 2 * q)), "r"(rank ^ 1u));' in src
            assert ':: "r"(dst + 4 * ((a * HT + 8 * h) * LDJ + q8 * 8)), "f"(f * acc[a][4 * q8 + 2 * h]),' in src
            assert "for (int r = tid; r < PP * HT; r += THREADS) ms[r * LDJ + MI] = 0.0f;" in src
        mt = "uint16_t" if xchg == "half" else "float"   # ms's element
        if epi == "wg":   # the epilogue warpgroup: one filter a lane, its 4 warps over this rank's tiles
            assert "const uint16_t* msw = ms + ew * LDJ;" in src and "const uint16_t* mt = msw + EPI_WARPS * kt * LDJ;" in src
            assert "const int4 ti = tiles[static_cast<int>(rank) * HT + ew + EPI_WARPS * kt];" in src
            assert "jx[i] = ((i % P) * PPC + i / P) * HT * LDJ +" in src
            assert ("static_cast<int>(min(static_cast<uint32_t>(static_cast<int>(sinv[i * FB + fl])), "
                    "static_cast<uint32_t>(MI)));") in src
            assert "for (int r = 0; r < P; ++r) mq[r] = x2f(mt[jx[r * P + q]]);" in src
            assert ("reinterpret_cast<uint32_t*>(sinv)[e] = (static_cast<uint32_t>(xrow(static_cast<int16_t>(w & "
                    "0xffffu))) & 0xffffu) |") in src
            assert "*reinterpret_cast<uint16_t*>(dst0 + (u * p.W + 1) * p.n_out) = pack_out1(" in src
        else:   # the pair gather: a word of the inverse map per filter pair and position
            assert f"const {mt}* msw = ms + warp * LDJ;" in src and f"const {mt}* mt = msw + WARPS * kt * LDJ;" in src
            assert "const int so = ((i % P) * PPC + i / P) * HT * LDJ;" in src
            assert ("jx[i] = so + static_cast<int>(min(static_cast<uint32_t>(static_cast<int>(static_cast<int16_t>(w & "
                    "0xffffu))),") in src
            assert "jy[i] = so + static_cast<int>(min(static_cast<uint32_t>(static_cast<int>(w) >> 16), " in src
            assert "const int4 ti = tiles[static_cast<int>(rank) * HT + warp + WARPS * kt];" in src
    if epi == "wg" and not full:   # the expressions _wg_epilogue mirrors
        assert "uint4* const zw = reinterpret_cast<uint4*>(smem + ZBUF_OFFSET) + lt;" in src
        assert ("zw[((c * 2 + u) * NP + jj) * 128] = make_uint4(zh[u][4 * jj], zh[u][4 * jj + 1], zh[u][4 * jj + 2], "
                "zh[u][4 * jj + 3]);") in src
        assert "const float f = ((kk >> 1) & 1) ? f1 : f0;" in src
        assert "const uint4 z0 = zb[((0 * 2 + u) * NP + jj) * 128], z1 = zb[((1 * 2 + u) * NP + jj) * 128];" in src
        assert "o[2 * q] = cf[0] * x0 + cf[1] * y0;" in src and "ak[cw] = vk ? a1 : a0;" in src
        assert ':: "r"(dst + (u * NP + jj) * 128 * 16), "r"(pack_out(o[0], o[1])),' in src
        assert "const uint4 r = pb[(u * NP + jj) * 128];" in src
        assert "const int q8 = 2 * jj + q / 2, h = q % 2;" in src
        assert "const int t = w4 * 16 + (lane >> 2) + 8 * h;" in src
        assert "const int R = (bi * 2 * p.BY + MO * by + u) * p.BX + bx;" in src
        assert "*reinterpret_cast<uint32_t*>(box + R * 128 + ((q8 ^ (R & 7)) << 4) + 4 * (lane & 3)) =" in src
        assert ("SM90_TMA_STORE_4D::copy(rank == 0 ? &omap0 : &omap1, box, block * FB, ix * p.BX, iy * p.BY * MO,"
                in src)
    if region == "planes":   # the expressions the planes' emulation mirrors: the host's maps and the kernel's offsets
        x = "w.y" if sched == "persistent" or epi == "wg" else "x0"
        for e in ("p.PW = p.RW / 2;", "p.plane = p.BI * p.RH * p.PW * RAW_CH * 2;", "p.oddh = a.W / 2 ? 0 : -(1 << 20);",
                  "const cuuint64_t odd = (cuuint64_t)(a.W / 2), even = (cuuint64_t)((a.W + 1) / 2);",
                  "const cuuint64_t dims[4] = {(cuuint64_t)a.C, odd ? odd : even, (cuuint64_t)a.H, (cuuint64_t)a.batch};",
                  "const cuuint64_t dims1[4] = {(cuuint64_t)a.C, even, (cuuint64_t)a.H, (cuuint64_t)a.batch};",
                  "const cuuint64_t strides[3] = {(cuuint64_t)a.C * 2 * 2, (cuuint64_t)a.W * a.C * 2,",
                  "const cuuint32_t box[4] = {(cuuint32_t)RAW_CH, (cuuint32_t)p.PW, (cuuint32_t)p.RH, (cuuint32_t)p.BI};",
                  "const_cast<Element*>(in + (m == 0 && odd ? a.C : 0)), m ? dims1 : dims, strides, box,",
                  f"(({x} - 1) >> 1) + p.oddh", "smem + s * RAW_BYTES + p.plane, ", f"({x} + 1) >> 1, ",
                  "tiles[t] = make_int4(ok ? b : -1, ty * MO, tx * MO, (bi * p.RH + by * MO) * p.PW + bx);",
                  "int off0 = (j0 & 1) * p.plane + (j0 >> 1) * (RAW_CH * 2), off1 = (j1 & 1) * p.plane + (j1 >> 1) * "
                  "(RAW_CH * 2);", "la[tt] = src + (sw ? off1 : off0);", "lb[tt] = src + (sw ? off0 : off1);",
                  "const int row_bytes = __shfl_sync(0xffffffffu, p.PW * (RAW_CH * 2), 0);"):
            assert e in src, e
        assert all(sw for *_, sw in cols.values())   # every column swaps
    return {"cols": cols, "vpair": vpair, "gather": gather, "xchg": xchg, "epi": epi, "planes": region == "planes",
            **env}


def _planes_region(d: np.ndarray, b0: int, y0: int, x0: int, ch: int, bc: int, BI: int, RH: int, PW: int,
                   chunks: int) -> np.ndarray:
    """Raw stage of region "planes" [2 planes x BI x RH x PW, bc] as the host's two tensor maps land it: map (odd
    columns from pixel 1, or where the layer has none the even map's with its box moved out by p.oddh) at column
    ((x0 - 1) >> 1) + oddh, map1 (even columns) at (x0 + 1) >> 1; y0 and x0 count from -1 (the padding); zeros past
    the image and past C."""
    B, H, W, C = d.shape
    odd, even = W // 2, (W + 1) // 2
    dc = np.zeros((B, H, W, chunks * bc))
    dc[..., :C] = d
    planes = []
    b, y = b0 + np.arange(BI), y0 + np.arange(RH)
    for m in range(2):
        base = 1 if (m == 0 and odd) else 0        # in + a.C: pixel 1
        ext = even if m else (odd or even)
        h = ((x0 + 1) >> 1 if m else ((x0 - 1) >> 1) + (0 if odd else -(1 << 20))) + np.arange(PW)
        inb, iny, inh = b < B, (y >= 0) & (y < H), (h >= 0) & (h < ext)   # out of bounds: zeros
        box = np.zeros((BI, RH, PW, bc))
        box[np.ix_(inb, iny, inh)] = dc[np.ix_(b[inb], y[iny], base + 2 * h[inh])][..., ch * bc:(ch + 1) * bc]
        planes.append(box.reshape(-1, bc))
    return np.concatenate(planes)


def _emulate(d: np.ndarray, U: np.ndarray, packed: np.ndarray, n_out: int, bc: int, k: dict,
             inv: np.ndarray | None = None) -> np.ndarray:
    """The kernel's output [B, H, W, n_out] for NHWC input d (float64), packed weights of U [blocks, 16, 64, Cpad];
    with `inv` ([blocks, 16, FB]) the full map's epilogue, else the dense map's."""
    B, H, W, C = d.shape
    blocks, mi = U.shape[0], U.shape[2]
    chunks = -(-C // bc)
    th, tw = tile_grid(H, W, 2)
    vpair = k["vpair"]
    BI, BY, BX = pick_rectangle(B, th, tw, vpair=vpair)
    RH, RW = 2 * BY + 2, 2 * BX + 2
    planes, PW = k.get("planes"), BX + 1
    plane_px = BI * RH * PW                                   # (p.plane in pixels)
    gy, gx = -(-th // BY), -(-tw // BX)
    units = -(-B // BI) * gy * gx
    _, _, BT = matrices_float(2)
    AT = matrices_float(2)[0]
    P = packed.reshape(blocks, chunks, 4, bc // 16, 4, mi, 16)
    swz = ((np.arange(mi) >> 2) & 1).astype(bool)
    Uop = P.copy()                     # wgmma's view: the 16-byte halves un-swapped on every 4th row (SW32)
    Uop[..., swz, :] = np.concatenate([P[..., swz, 8:], P[..., swz, :8]], axis=-1)
    dpad = np.zeros((B + BI, H + 2 * BY * 2 + 4, W + 2 * BX * 2 + 4, chunks * bc))
    dpad[:B, 1:H + 1, 1:W + 1, :C] = d                       # region coordinates start at -1: one pixel of zeros
    out = np.zeros((B, H, W, n_out))
    for unit in range(units):
        ix, iy, ib = unit % gx, (unit // gx) % gy, unit // (gx * gy)
        b0, y0, x0 = ib * BI, iy * BY * 2, ix * BX * 2       # (+1 for the pad)
        tiles = []
        for bi, by, bx in tile_order(BI, BY, BX, vpair=vpair):   # the kernel's table (M row t: a pair's row tt)
            ok = bi < BI and b0 + bi < B and iy * BY + by < th and ix * BX + bx < tw
            w_ = (bi * RH + by * 2) * PW + bx if planes else (bi * RH + by * 2) * RW + bx * 2   # its pixel (in a plane)
            tiles.append((b0 + bi if ok else -1, (iy * BY + by) * 2, (ix * BX + bx) * 2, w_))
        w = [t[3] for t in tiles]
        for block in range(blocks):
            accs, swaps = {}, {}
            for col, (j0, j1, sgn, swappable) in k["cols"].items():
                def swapped(t, swappable=swappable):
                    base, g = t - t % 8, t % 8
                    before = sum((w[base + j] ^ w[t]) & (k["PXG"] - 1) == 0 for j in range(g & ~(k["TPH"] - 1), g))
                    return swappable and before % 2 == 1
                swaps[col] = [swapped(t) for t in range(64)]
                first = [j1 if swapped(t) else j0 for t in range(64)]
                second = [j0 if swapped(t) else j1 for t in range(64)]
                acc = np.zeros((4, 64, mi))                    # [row a of the column][tile][filter]
                for ch in range(chunks):
                    if planes:
                        region = _planes_region(d, b0, y0 - 1, x0 - 1, ch, bc, BI, RH, PW, chunks)
                        row, off = PW, lambda j: (j & 1) * plane_px + (j >> 1)
                    else:
                        region = dpad[b0:b0 + BI, y0:y0 + RH, x0:x0 + RW, ch * bc:(ch + 1) * bc].reshape(-1, bc)
                        row, off = RW, lambda j: j
                    for st in range(k["KSTEPS"]):
                        A = np.zeros((4, 64, 16))              # the fragments: [position row][tile][k slot]
                        for t in range(64):
                            # the loads of the thread's first tile (rows g of its warp's 16) and, with vertical pairs,
                            # tile tt = 1 reading rows 2 .. 5 of them
                            tt_ = (t >> 3) & 1 if vpair else 0
                            t0 = t - 8 * tt_
                            for q in range(4):                 # lane (g, q): channels CPI q + 4 st + (0, 1 | 2, 3)
                                chs = k["CPI"] * q + 4 * st + np.arange(4)
                                r0 = k.get("pair_rows", 2) * tt_         # the kernel's MO * tt
                                da = np.array([region[w[t0] + (r0 + r) * row + off(first[t0]), chs] for r in range(4)])
                                db = np.array([region[w[t0] + (r0 + r) * row + off(second[t0]), chs] for r in range(4)])
                                tt = da + sgn * db             # t[r] = fma2(db, sg, da)
                                V = BT @ tt                    # [row a][4 channels]
                                A[:, t, [2 * q, 2 * q + 1, 2 * q + 8, 2 * q + 9]] = V
                        for a in range(4):
                            Bk = Uop[block, ch, col, st, a]    # [filter n][k slot]
                            acc[a] += A[a] @ Bk.T
                accs[col] = acc
            if inv is None:
                if k.get("epi") == "wg":
                    _wg_epilogue(accs, swaps, k, tiles, block, mi, n_out, H, W, AT, out, (b0, iy, ix, BI, BY, BX))
                else:
                    _epilogue(accs, swaps, k["cols"], tiles, block, mi, n_out, H, W, AT, out)
            else:
                _full_epilogue(accs, swaps, k["cols"], tiles, block, mi, inv[block], n_out, H, W, AT, out, k)
    return out


def _fragments(acc: np.ndarray, mi: int) -> np.ndarray:
    """acc[a][tile][row] as the threads hold it: [a][kk][lt], accumulator kk of thread lt = 32 w4 + 4 g + q being
    (tile 16 w4 + g + 8 ((kk >> 1) & 1), row 8 (kk >> 2) + 2q + (kk & 1))."""
    f = np.zeros((4, mi // 2, 128))
    for lt in range(128):
        w4, g, q = lt // 32, (lt % 32) >> 2, lt & 3
        for kk in range(mi // 2):
            f[:, kk, lt] = acc[:, 16 * w4 + g + 8 * ((kk >> 1) & 1), 8 * (kk >> 2) + 2 * q + (kk & 1)]
    return f


def _full_epilogue(accs, swaps, cols, tiles, block, mi, inv, n_out, H, W, AT, out, k) -> None:
    """The full map's epilogue as the kernel writes it: each thread stores its fragments to ms[c * 4 + a][tile][LDJ]
    (tile 16 w4 + g + 8 h, row 8 q8 + 2 q + e; a swapped tile's values times sgn); rank r then transforms the filter
    pairs r, r + 2, ... of every tile from position i's ms of rank (i % 4) // 2, warpgroup i % 2, row inv[i][f]."""
    fb, gather = inv.shape[1], k["gather"]
    ldj = mi + 4
    if gather == "push":
        _push_epilogue(accs, swaps, cols, tiles, block, mi, inv, n_out, H, W, AT, out, k)
        return
    ms = np.full((2, 8, 64, ldj), np.nan)                     # unwritten entries poison whatever reads them
    for col, acc in accs.items():
        rank, c = col // 2, col % 2
        sgn = cols[col][2]
        fr = _fragments(acc, mi)
        for lt in range(128):
            w4, lane = lt // 32, lt % 32
            g, q = lane >> 2, lane & 3
            f0 = sgn if swaps[col][w4 * 16 + g] else 1.0
            f1 = sgn if swaps[col][w4 * 16 + g + 8] else 1.0
            for a in range(4):
                for q8 in range(mi // 8):
                    for h in (0, 1):
                        t, j = w4 * 16 + g + 8 * h, q8 * 8 + 2 * q
                        f = f1 if h else f0
                        ms[rank, c * 4 + a, t, j:j + 2] = f * fr[a, 4 * q8 + 2 * h:4 * q8 + 2 * h + 2, lt]
    nfp = fb // 2
    # the inverse map as the batched gather reads it: one little-endian 32-bit word per filter pair and position
    words = inv.astype(np.int16).view(np.uint16).astype(np.uint32).reshape(16, nfp, 2)
    words = words[..., 0] | (words[..., 1] << 16)
    for rank in (0, 1):
        for fp in range(rank, nfp, 2):
            for t, (b, ty, tx, _) in enumerate(tiles):
                f = block * fb + 2 * fp
                if b < 0 or f >= n_out:
                    continue
                M = np.zeros((2, 4, 4))
                if gather == "batched":   # rows r and columns lc of this rank (own ms) and of the partner (its ms)
                    for r in range(4):
                        for lc in (0, 1):
                            for owner in (rank, rank ^ 1):
                                w = int(words[4 * r + 2 * owner + lc, fp])
                                j0 = w & 0xFFFF
                                j0 = j0 - 0x10000 if j0 & 0x8000 else j0
                                j1 = (w - (1 << 32) if w & 0x80000000 else w) >> 16
                                for e, j in ((0, j0), (1, j1)):   # column cc = 2 owner + lc
                                    M[e, r, 2 * owner + lc] = ms[owner, lc * 4 + r, t, j] if j >= 0 else 0.0
                else:
                    for i in range(16):
                        rr, cc = i // 4, i % 4
                        for e in (0, 1):
                            j = inv[i, 2 * fp + e]
                            M[e, rr, cc] = ms[cc // 2, (i % 2) * 4 + rr, t, j] if j >= 0 else 0.0
                _store_pair(M, AT, b, ty, tx, f, n_out, H, W, out)


def _store_pair(M, AT, b, ty, tx, f, n_out, H, W, out) -> None:
    """Filters f, f + 1's output of one tile from their 4 x 4 M (Y = A^T M A), the pixels and filters past the layer
    dropped, as the kernel's _fused_out_transform.cu.j2 stores them."""
    for e in (0, 1):
        if f + e >= n_out:
            continue
        Y = AT @ M[e] @ AT.T
        for u in range(2):
            for v in range(2):
                if ty + u < H and tx + v < W:
                    out[b, ty + u, tx + v, f + e] = Y[u, v]


def _push_epilogue(accs, swaps, cols, tiles, block, mi, inv, n_out, H, W, AT, out, k) -> None:
    """gather "push": warp w4 of column col's warpgroup writes its fragments into the ms of rank w4 >> 1 (its own, or
    the partner's by st.async), slot col * 4 + a, tile (w4 & 1) * 16 + g + 8 h of that rank's half; rank r then
    transforms its 32 tiles for every filter pair, position i = 4 r' + cc read from slot cc * 4 + r'. With xchg
    "half", row 8 q8 + 2 q + e lies at q (MI / 4) + 2 q8 + e (the thread's run, word q8) and the inverse map is staged
    through xrow; k["round"] (if set) rounds each stored value as the 16-bit type does."""
    fb, half = inv.shape[1], k["xchg"] == "half"
    ldj, ht, nfp = k["LDJ"], 32, fb // 2
    assert ldj == mi + (8 if half else 4)
    rnd = k.get("round", lambda v: v)
    ms = np.full((2, 16, ht, ldj), np.nan)                    # [rank][slot][tile of its half][row]
    for col, acc in accs.items():
        sgn = cols[col][2]
        fr = _fragments(acc, mi)
        for lt in range(128):
            w4, lane = lt // 32, lt % 32
            g, q = lane >> 2, lane & 3
            owner, tl0 = w4 >> 1, (w4 & 1) * 16 + g
            f0 = sgn if swaps[col][w4 * 16 + g] else 1.0
            f1 = sgn if swaps[col][w4 * 16 + g + 8] else 1.0
            for a in range(4):
                for q8 in range(mi // 8):
                    for h in (0, 1):
                        j = q * (mi // 4) + 2 * q8 if half else q8 * 8 + 2 * q
                        ms[owner, col * 4 + a, tl0 + 8 * h, j:j + 2] = rnd(
                            (f1 if h else f0) * fr[a, 4 * q8 + 2 * h:4 * q8 + 2 * h + 2, lt])
    ms[:, :, :, mi] = 0.0                                     # the zero column a pruned row reads

    def xrow(j):   # the kernel's lambda (half), applied as it stages the inverse map
        if j < 0 or not half or not k.get("stage_xrow", True):
            return j
        return ((j & 7) >> 1) * (mi // 4) + (j >> 3) * 2 + (j & 1)

    for rank in (0, 1):
        for tl in range(ht):
            b, ty, tx, _ = tiles[32 * rank + tl]
            for fp in range(nfp):
                f = block * fb + 2 * fp
                if b < 0 or f >= n_out:
                    continue
                M = np.zeros((2, 4, 4))
                for i in range(16):
                    for e in (0, 1):   # min(unsigned(j), MI): -1 -> MI
                        j = min(xrow(int(inv[i, 2 * fp + e])) & 0xFFFFFFFF, mi)
                        M[e, i // 4, i % 4] = ms[rank, (i % 4) * 4 + i // 4, tl, j]
                _store_pair(M, AT, b, ty, tx, f, n_out, H, W, out)


def _epilogue(accs, swaps, cols, tiles, block, mi, n_out, H, W, AT, out) -> None:
    """The kernel's epilogue thread by thread: accumulator kk of thread (warp w4, lane 4g + q) of warpgroup c in rank
    r holds (tile 16 w4 + g + 8 ((kk >> 1) & 1), filter 8 (kk >> 2) + 2q + (kk & 1)) of column 2r + c; keep / xs1 with
    av[(kk >> 1) & 1], the trade between the warpgroups, mine and the remote xs2, the stores. (A thread's two tiles,
    rows g and g + 8, start a multiple of 4 pixels apart in every rectangle the host picks, so they share their swap:
    which of them av's sign follows cannot show here.)"""
    nacc = mi // 2
    frag = {}                                                   # (rank, c) -> [a][kk][lt]
    for col, acc in accs.items():
        f = np.zeros((4, nacc, 128))
        for lt in range(128):
            w4, g, q = lt // 32, (lt % 32) >> 2, lt & 3
            for kk in range(nacc):
                f[:, kk, lt] = acc[:, 16 * w4 + g + 8 * ((kk >> 1) & 1), 8 * (kk >> 2) + 2 * q + (kk & 1)]
        frag[col // 2, col % 2] = f
    xs2 = {}
    mine = {}
    for rank in (0, 1):
        xs1 = np.zeros((2, 2, nacc, 128))
        keep = {}
        for c in (0, 1):
            col = 2 * rank + c
            _, _, sgn, _ = cols[col]
            f = frag[rank, c]
            av = np.zeros((128, 2, 2))                          # [lt][tt][v]
            for lt in range(128):
                w4, g = lt // 32, (lt % 32) >> 2
                for tt in (0, 1):
                    sw = swaps[col][16 * w4 + 8 * tt + g]
                    av[lt, tt] = [(sgn if sw else 1.0) * AT[v, col] for v in (0, 1)]
            z = np.einsum("ur,rkl->ukl", AT, f)                 # [u][kk][lt]
            zk, zs = (z[0], z[1]) if c == 0 else (z[1], z[0])
            tt_of = (np.arange(nacc) >> 1) & 1
            a_kk = av[:, tt_of, :].transpose(2, 1, 0)           # [v][kk][lt]
            keep[c] = a_kk * zk
            xs1[c] = a_kk * zs
        for c in (0, 1):
            y = keep[c] + xs1[1 - c]                            # [v][kk][lt]
            mine[rank, c] = y[rank]
            xs2[1 - rank, c] = y[1 - rank]                      # st_remote into the other CTA's xs2[c]
    for rank in (0, 1):
        for c in (0, 1):
            u, v = c, rank
            for lt in range(128):
                w4, lane = lt // 32, lt % 32
                for h in (0, 1):
                    b, ty, tx, _ = tiles[w4 * 16 + (lane >> 2) + 8 * h]
                    y, x = ty + u, tx + v
                    if b < 0 or y >= H or x >= W:
                        continue
                    for q8 in range(mi // 8):
                        f = block * mi + q8 * 8 + 2 * (lane & 3)
                        kk = 4 * q8 + 2 * h
                        for e in (0, 1):
                            if f + e < n_out:
                                out[b, y, x, f + e] = mine[rank, c][kk + e, lt] + xs2[rank, c][kk + e, lt]


def _wg_epilogue(accs, swaps, k, tiles, block, mi, n_out, H, W, AT, out, rect) -> None:
    """epi "wg" thread by thread: mainloop thread lt of warpgroup c packs f Z_col[u] of accumulators kk, kk + 1 into
    word kk / 2 (ZBUF pack jj = word // 4, of slot (c, u)); epilogue thread et = lt combines both warpgroups' Z of
    pack jj with A^T[v][2 rank + c]: v = 1 - rank sent into the partner's PBUF, v = rank kept plus the partner's; word
    q of a pack is accumulators 8 jj + 2 q, + 1: filters 8 q8 + 2 (lane & 3), + 1 with q8 = 2 jj + q // 2 of tile
    16 w4 + (lane >> 2) + 8 (q % 2); the box row R = (bi 2 BY + 2 by + u) BX + bx (tile_coords), 16-byte group q8 at
    q8 ^ (R % 8); output map `rank` stores row R at pixel (b0 + bi, 2 (iy BY + by) + u, 2 (ix BX + bx) + rank), clipped.
    k["round"] (if set) rounds each packed value as the 16-bit type does."""
    b0, iy, ix, BI, BY, BX = rect
    rnd = k.get("round", lambda v: v)
    nacc, np_ = mi // 2, mi // 16
    zbuf = {}                                                   # (rank, c, u) -> [word][lt] pairs as [kk][lt]
    for col, acc in accs.items():
        rank, c = col // 2, col % 2
        sgn = k["cols"][col][2]
        fr = _fragments(acc, mi)                                # [a][kk][lt]
        z = np.einsum("ur,rkl->ukl", AT, fr)                    # [u][kk][lt]
        for lt in range(128):
            w4, g = lt // 32, (lt % 32) >> 2
            for kk in range(nacc):
                if swaps[col][16 * w4 + g + 8 * ((kk >> 1) & 1)]:
                    z[:, kk, lt] *= sgn
        for u in (0, 1):
            zbuf[rank, c, u] = rnd(z[u])
    pbuf = {}
    for rank in (0, 1):
        vs = 1 - rank
        for u in (0, 1):   # the partner's column, sent into its PBUF
            pbuf[rank ^ 1, u] = rnd(sum(AT[vs, 2 * rank + c] * zbuf[rank, c, u] for c in (0, 1)))
    for rank in (0, 1):
        rows = 2 * 64                                           # box rows R of MI filters (unswizzled here)
        box = np.full((rows, mi), np.nan)
        for u in (0, 1):
            y = sum(AT[rank, 2 * rank + c] * zbuf[rank, c, u] for c in (0, 1)) + pbuf[rank, u]   # [kk][et]
            for et in range(128):
                w4, lane = et // 32, et % 32
                for jj in range(np_):
                    for q in range(4):
                        q8, h = 2 * jj + q // 2, q % 2
                        t = w4 * 16 + (lane >> 2) + 8 * h
                        R = _tma_box_row(t, BI, BY, BX, u, k["vpair"])   # (the template's tile_coords)
                        f0 = q8 * 8 + 2 * (lane & 3)
                        kk = 8 * jj + 2 * q
                        box[R, f0:f0 + 2] = y[kk:kk + 2, et]
        for R in range(rows):   # the TMA store of output map `rank`: clipped past the batch, the image, n_out
            bx, rest = R % BX, R // BX
            yrow, bi = rest % (2 * BY), rest // (2 * BY)
            b, yy, xx = b0 + bi, 2 * iy * BY + yrow, 2 * (ix * BX + bx) + rank
            if bi >= BI or b >= out.shape[0] or yy >= H or xx >= W:
                continue
            n = min(mi, n_out - block * mi)
            out[b, yy, xx, block * mi:block * mi + n] = box[R, :n]


def test_generation_5s_warpgroup_epilogue_gives_the_convolution_and_its_fp16_rounding_stays_small():
    """epi "wg": the mainloop's Z into ZBUF, the epilogue warpgroup's partials, the pair's st.async into PBUF and the
    box of the TMA store, emulated from the rendered kernel against direct convolution: exact with no rounding (a
    wrong word, pack, filter, tile row or box row gives O(1) errors), and with Z and the traded partial rounded to fp16
    once each, well inside the GPU check's tolerance."""
    from cutlass_wsp.gpu.verify import layer_rtol

    rng = np.random.default_rng(9)
    B, c, n, H, W = 2, 40, 80, 9, 7
    g = rng.standard_normal((n, c, 3, 3))
    d = rng.standard_normal((B, H, W, c))
    lay = dense_layout(filter_transform(g, 2).astype(np.float32), 4, fb=64)
    ref = direct_conv2d(d.transpose(0, 3, 1, 2), g).transpose(0, 2, 3, 1)
    scale = np.abs(ref).max()
    k = _rendered(32, vpair=True, xchg="half", epi="wg")
    got = _emulate(d, lay.U, pack_cp_weights(lay.U, 32), n, 32, k)
    assert np.abs(got - ref).max() < 1e-4 * scale   # (the model's float32 weights)
    rounded = _emulate(d, lay.U, pack_cp_weights(lay.U, 32), n, 32, {**k, "round": lambda v: v.astype(np.float16)})
    err = np.abs(rounded - ref).max() / scale
    assert 1e-5 < err < layer_rtol("fp16", 4, 9 * c) / 4


@pytest.mark.parametrize("vpair", [False, True])
@pytest.mark.parametrize("bc", [16, 32])
@pytest.mark.parametrize("B,c,n,H,W", [(1, 40, 80, 7, 9), (3, 64, 48, 5, 6), (1, 32, 64, 3, 20)])
def test_generation_5s_data_path_gives_the_convolution(bc, B, c, n, H, W, vpair):
    """(3 x 20: two tile rows, so the vertical pairs' rectangle of even tile rows is the image's height.)"""
    rng = np.random.default_rng(B + c + n + bc)
    g = rng.standard_normal((n, c, 3, 3))
    d = rng.standard_normal((B, H, W, c))
    lay = dense_layout(filter_transform(g, 2).astype(np.float32), 4, fb=64)
    k = _rendered(bc, vpair=vpair)
    assert (k["BC"], k["KSTEPS"]) == (bc, bc // 16)
    got = _emulate(d, lay.U, pack_cp_weights(lay.U, bc), n, bc, k)
    ref = direct_conv2d(d.transpose(0, 3, 1, 2), g).transpose(0, 2, 3, 1)
    assert np.abs(got - ref).max() < 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize("sched", [None, "persistent"])
@pytest.mark.parametrize("B,c,n,H,W", [(1, 40, 80, 7, 9), (3, 64, 48, 5, 6), (1, 32, 64, 3, 20), (2, 32, 64, 5, 1),
                                       (1, 32, 64, 6, 3), (8, 32, 64, 13, 5)])
def test_the_region_in_planes_gives_the_convolution(B, c, n, H, W, sched):
    """Region "planes": the two tensor maps' boxes (odd columns, even columns; a layer one pixel wide has no odd one)
    land each chunk's region by column parity, and the loads read patch column j at plane j % 2, pixel + j / 2.
    (8 x 13 x 5: a rectangle one tile wide, where every second tile of a phase swaps its columns, each with its sign.)"""
    rng = np.random.default_rng(B + c + n + H + W)
    g = rng.standard_normal((n, c, 3, 3))
    d = rng.standard_normal((B, H, W, c))
    lay = dense_layout(filter_transform(g, 2).astype(np.float32), 4, fb=64)
    k = _rendered(32, vpair=True, epi="tma", region="planes", sched=sched)
    got = _emulate(d, lay.U, pack_cp_weights(lay.U, 32), n, 32, k)
    ref = direct_conv2d(d.transpose(0, 3, 1, 2), g).transpose(0, 2, 3, 1)
    assert np.abs(got - ref).max() < 1e-4 * np.abs(ref).max()


def test_the_planes_emulation_catches_planes_swapped(monkeypatch):
    """The check can fail: the two planes landing in each other's place gives the wrong layer."""
    rng = np.random.default_rng(4)
    g = rng.standard_normal((64, 32, 3, 3))
    d = rng.standard_normal((1, 6, 10, 32))
    lay = dense_layout(filter_transform(g, 2).astype(np.float32), 4, fb=64)
    k = _rendered(32, vpair=True, epi="tma", region="planes")
    ref = direct_conv2d(d.transpose(0, 3, 1, 2), g).transpose(0, 2, 3, 1)
    right = _planes_region

    def swapped(*a):
        r = right(*a)
        return np.concatenate([r[len(r) // 2:], r[:len(r) // 2]])
    monkeypatch.setattr(__import__(__name__), "_planes_region", swapped)
    got = _emulate(d, lay.U, pack_cp_weights(lay.U, 32), 64, 32, k)
    assert np.abs(got - ref).max() > 0.1 * np.abs(ref).max()


def test_the_emulation_catches_a_wrong_channel_order():
    """The check can fail: k step 1 of a 32-channel chunk reading step 0's channels, or the epilogue dropping the swapped
    tiles' sign, gives the wrong layer."""
    rng = np.random.default_rng(9)
    g = rng.standard_normal((64, 64, 3, 3))
    d = rng.standard_normal((1, 5, 9, 64))
    lay = dense_layout(filter_transform(g, 2).astype(np.float32), 4, fb=64)
    ref = direct_conv2d(d.transpose(0, 3, 1, 2), g).transpose(0, 2, 3, 1)
    k = _rendered(32)
    wrong = pack_cp_weights(lay.U, 32).copy()
    wrong[:, :, :, 1] = wrong[:, :, :, 0]                   # step 1's operand tiles hold step 0's weights
    assert np.abs(_emulate(d, lay.U, wrong, 64, 32, k) - ref).max() > 1e-2 * np.abs(ref).max()
    k16 = _rendered(16)
    unsigned = {c: (j0, j1, 1.0 if sw else sg, sw) for c, (j0, j1, sg, sw) in k16["cols"].items()}
    assert np.abs(_emulate(d, lay.U, pack_cp_weights(lay.U, 16), 64, 16, {**k16, "cols": unsigned}) - ref).max() \
        > 1e-2 * np.abs(ref).max()
    # vertical pairs: the second tile reading the first one's rows (no MO * tt offset) is caught too
    kv = _rendered(32, vpair=True)
    assert np.abs(_emulate(d, lay.U, pack_cp_weights(lay.U, 32), 64, 32, kv) - ref).max() < 1e-4 * np.abs(ref).max()
    assert np.abs(_emulate(d, lay.U, pack_cp_weights(lay.U, 32), 64, 32, {**kv, "pair_rows": 0}) - ref).max() \
        > 1e-2 * np.abs(ref).max()


def _winograd_reference(d: np.ndarray, lay) -> np.ndarray:
    """The layer the layout stands for, in float64: W[i][f] = U[block][i][inv[i][f]] (0 where pruned), Y_i = W_i X_i,
    the output transform; d NHWC, out NHWC."""
    from cutlass_wsp.winograd import input_transform, output_transform

    B, H, W, C = d.shape
    Wf = np.zeros((16, lay.n_out, C))
    for b in range(lay.blocks):
        for i in range(16):
            fl = np.flatnonzero(lay.inv[b, i] >= 0)
            fl = fl[b * lay.fb + fl < lay.n_out]
            Wf[i, b * lay.fb + fl] = lay.U[b, i, lay.inv[b, i, fl], :C]
    X = input_transform(d.transpose(0, 3, 1, 2), 2)            # [16, C, T]
    return output_transform(np.einsum("ifc,ict->ift", Wf, X), 2, B, H, W).transpose(0, 2, 3, 1)


@pytest.mark.parametrize("bc,vpair,gather,xchg,epi", [(16, False, None, None, None), (32, False, None, None, None),
                                                      (32, True, None, None, None), (32, True, "batched", None, None),
                                                      (16, False, "batched", None, None), (32, True, "push", None, None),
                                                      (16, False, "push", None, None), (32, True, "push", "half", None),
                                                      (16, False, "push", "half", None), (32, True, "push", "half", "wg"),
                                                      (32, True, "push", "half", "planes")])
@pytest.mark.parametrize("ratio,n,fb", [(0.7, 200, 192), (0.5, 150, 128)])
def test_generation_5s_full_map_gives_the_row_pruned_layer(bc, vpair, gather, xchg, epi, ratio, n, fb):
    """WSP-RB in the wide blocks of the full map (64 packed rows per position standing for FB filters; n leaves the
    last block partly empty): the emulated kernel against the layer its layout stands for. (epi "wg": the push
    gather's ms writes by the mainloop, its gather one filter a lane by the epilogue warpgroup: the same values;
    "planes": the push gather with the region in planes.)"""
    lay, d = _wsp_rb_case(ratio, n, fb, bc)
    region = "planes" if epi == "planes" else None
    k = _rendered(bc, fb=fb, full=True, vpair=vpair, gather=gather, xchg=xchg, epi=None if region else epi,
                  region=region)
    got = _emulate(d, lay.U, pack_cp_weights(lay.U, bc), lay.n_out, bc, k, inv=lay.inv)
    ref = _winograd_reference(d, lay)
    assert np.abs(ref).max() > 0.1 and np.abs(got - ref).max() < 1e-9 * np.abs(ref).max()


def _wsp_rb_case(ratio, n, fb, bc):
    from cutlass_wsp.families.fused import layout_for
    from cutlass_wsp.pruning import prune
    from cutlass_wsp.weights import he_winograd_weights

    rng = np.random.default_rng(n + bc)
    lay = layout_for(prune(he_winograd_weights((n, 48), 4, seed=3), "wsp-rb", ratio, block=fb), 4, fb=fb, mi=64)
    assert lay.mi == 64 and lay.fb == fb and not lay.identity
    return lay, rng.standard_normal((2, 7, 5, 48))


def test_the_push_gathers_fp16_products_stay_inside_the_layers_tolerance():
    """xchg "half" rounds each product M to fp16 once before the output transform (as the unfused pipeline rounds
    Y): that alone moves the output by well under the GPU check's tolerance (layer_rtol), and a layout that put a
    thread's run in the fp32 order (rows 8 q8 + 2 q + e at their own index) reads the wrong products."""
    from cutlass_wsp.gpu.verify import layer_rtol

    lay, d = _wsp_rb_case(0.7, 200, 192, 32)
    k = _rendered(32, fb=192, full=True, vpair=True, gather="push", xchg="half")
    ref = _winograd_reference(d, lay)
    scale = np.abs(ref).max()
    got = _emulate(d, lay.U, pack_cp_weights(lay.U, 32), lay.n_out, 32, {**k, "round": lambda v: v.astype(np.float16)},
                   inv=lay.inv)
    err = np.abs(got - ref).max() / scale
    assert 0 < err < layer_rtol("fp16", 4, 9 * 48) / 4
    # the runs stored, the inverse map staged as it comes (no xrow): the gather reads other rows' products
    wrong = _emulate(d, lay.U, pack_cp_weights(lay.U, 32), lay.n_out, 32, {**k, "stage_xrow": False}, inv=lay.inv)
    assert np.abs(wrong - ref).max() > 1e-2 * scale
