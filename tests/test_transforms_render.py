"""GPU transform kernels, CPU side: every p x dtype x layout renders (StrictUndefined), the constants
in the generated source are winograd.matrices_float's, block geometries satisfy the kernels'
invariants, inputs are validated before any launch, and (with nvcc) every variant compiles."""

from __future__ import annotations

import dataclasses
import itertools
import re
import subprocess

import numpy as np
import pytest

from cutlass_wsp.dtypes import DTYPES, get_dtype
from cutlass_wsp.errors import InputError, ToolchainError, Unsupported
from cutlass_wsp.gpu import transforms as tr
from cutlass_wsp.winograd import matrices_float

PS = (4, 6, 8)
DTS = tuple(DTYPES)  # fp16, bf16, tf32, fp32
LAYOUTS = ("nchw", "nhwc")
COMBOS = list(itertools.product(PS, DTS, LAYOUTS))


def parse_lincomb(expr: str, var: str) -> dict[int, float]:
    """'4.0f * v[0][q] - v[2][q]' -> {0: 4.0, 2: -1.0}; `var` is a regex with one group for the index."""
    expr = expr.strip()
    if expr == "0.0f":
        return {}
    first_sign = 1.0
    if expr.startswith("-"):
        first_sign, expr = -1.0, expr[1:]
    tokens = re.split(r" ([+-]) ", expr)
    terms = [(first_sign, tokens[0])] + [(1.0 if s == "+" else -1.0, t) for s, t in zip(tokens[1::2], tokens[2::2])]
    coefs: dict[int, float] = {}
    for sign, term in terms:
        m = re.fullmatch(r"(?:(\d+(?:\.\d+)?(?:e[+-]?\d+)?)f \* )?" + var, term)
        assert m, f"unparsed term {term!r} in {expr!r}"
        idx = int(m.group(2))
        assert idx not in coefs, f"index {idx} twice in {expr!r}"
        coefs[idx] = sign * (float(m.group(1)) if m.group(1) else 1.0)
    return coefs


def matrix_from_lines(source: str, line_re: str, var: str, shape: tuple[int, int]) -> np.ndarray:
    """Rows of a constant matrix read back from the generated statements `line_re` (row index group 1,
    expression group 2)."""
    mat = np.zeros(shape)
    seen = set()
    for row, expr in re.findall(line_re, source):
        seen.add(int(row))
        for col, c in parse_lincomb(expr, var).items():
            mat[int(row), col] = c
    assert seen == set(range(shape[0])), f"rows found: {sorted(seen)}"
    return mat


# --- rendering -------------------------------------------------------------------------------------

@pytest.mark.parametrize("p,dt,layout", COMBOS)
def test_input_renders_with_the_matrices_constants(p, dt, layout):
    src, ctx = tr.render_input(p, dt, layout)
    m = p - 2
    BT = matrices_float(m)[2]
    assert 'extern "C" __global__' in src and tr.INPUT_KERNEL in src
    assert f"constexpr int P = {p};" in src and f"constexpr int M = {m};" in src
    assert np.array_equal(np.array(ctx["bt"]), BT)
    # first pass, w = B^T v (rows r of B^T as columns of v), and second pass, u = w B (rows s of B^T)
    first = matrix_from_lines(src, r"w\[h\]\[(\d+)\]\[q\] = (.*);", r"v\[h\]\[(\d+)\]\[q\]", (p, p))
    second = matrix_from_lines(src, r"u\[h\]\[(\d+)\] = (.*);", r"w\[h\]\[r\]\[(\d+)\]", (p, p))
    assert np.array_equal(first, BT)
    assert np.array_equal(second, BT)
    assert "0.0f *" not in src  # zero terms are left out, not multiplied


@pytest.mark.parametrize("p,dt,layout", COMBOS)
@pytest.mark.parametrize("compact", [False, True])
def test_output_renders_with_the_matrices_constants(p, dt, layout, compact):
    src, ctx = tr.render_output(p, dt, layout, compact)
    m = p - 2
    AT = matrices_float(m)[0]
    assert 'extern "C" __global__' in src and tr.OUTPUT_KERNEL in src
    assert np.array_equal(np.array(ctx["at"]), AT)
    first = matrix_from_lines(src, r"tmp\[(\d+)\]\[q\] = (.*);", r"y\[(\d+)\]\[q\]", (m, p))
    second = matrix_from_lines(src, r"o\[r\]\[(\d+)\] = (.*);", r"tmp\[r\]\[(\d+)\]", (m, p))
    assert np.array_equal(first, AT)
    assert np.array_equal(second, AT)
    assert "0.0f *" not in src
    # the compact variant, and only it, reads the inverse row map
    assert ("const int* __restrict__ inv" in src) == compact
    assert ("inv[i * N +" in src) == compact


@pytest.mark.parametrize("p,dt,layout", COMBOS)
def test_compact_input_renders_and_only_it_reads_the_channel_map(p, dt, layout):
    """The compact variant computes the same transform (same constants) and differs only in where it
    stores: the row of Xc that xrow names, in blocks of K rows per position, skipping -1."""
    dense, dctx = tr.render_input(p, dt, layout)
    compact, cctx = tr.render_input(p, dt, layout, compact=True)
    assert (dctx["compact"], cctx["compact"]) == (False, True)
    assert compact != dense
    BT = matrices_float(p - 2)[2]
    second = matrix_from_lines(compact, r"u\[h\]\[(\d+)\] = (.*);", r"w\[h\]\[r\]\[(\d+)\]", (p, p))
    assert np.array_equal(second, BT)
    sig = compact[compact.index(tr.INPUT_KERNEL + "("): compact.index("{", compact.index(tr.INPUT_KERNEL + "("))]
    assert re.sub(r"\s+", " ", sig).endswith(
        "storage_t* __restrict__ X, const int* __restrict__ xrow, int K, int C, int H, int W, int th, int tw, "
        "int T, int Npad, int tile_groups) ")
    assert "__restrict__ xrow" not in dense and "rowp" not in dense and "int K," not in dense
    assert "(long long)K * Npad" in compact and "(long long)C * Npad" not in compact
    assert "if (row < 0) continue;" in compact and "(long long)row * Npad" in compact
    assert "compact rows" in compact.splitlines()[1] and "compact rows" not in dense.splitlines()[1]


@pytest.mark.parametrize("dt,marker", [("fp16", "cvt.rn.f16.f32"), ("bf16", "cvt.rn.bf16.f32"),
                                       ("fp32", "typedef float storage_t"), ("tf32", "typedef float storage_t")])
def test_storage_conversions_follow_the_dtype(dt, marker):
    for src in (tr.render_input(4, dt, "nhwc")[0], tr.render_output(4, dt, "nchw")[0]):
        assert marker in src
        others = {"cvt.rn.f16.f32", "cvt.rn.bf16.f32", "typedef float storage_t"} - {marker}
        assert not any(o in src for o in others)


def test_layout_changes_the_load_path():
    nchw, nhwc = tr.render_input(4, "fp16", "nchw")[0], tr.render_input(4, "fp16", "nhwc")[0]
    for src in (nchw, nhwc):  # both: consecutive threads on consecutive tiles, for contiguous X stores
        assert "const int jp = tid % TP, k = tid / TP;" in src
    assert "stage_store" in nhwc and "stage_store" not in nchw  # NHWC reads go through shared memory
    assert "* C + cc)" in nhwc                                  # ... in pieces along C
    assert "to_f32(row[q])" in nchw                              # NCHW: straight from the row
    assert "typedef Vec16 load_t;" in nhwc
    assert "typedef unsigned short load_t;" in tr.render_input(4, "fp16", "nhwc", load_bytes=2)[0]


@pytest.mark.parametrize("name,c,expected", [("fp16", 64, 16), ("fp16", 24, 16), ("fp16", 12, 8), ("fp16", 6, 4),
                                             ("fp16", 3, 2), ("bf16", 5, 2), ("fp32", 4, 16), ("fp32", 6, 8),
                                             ("fp32", 3, 4), ("tf32", 512, 16)])
def test_nhwc_load_width_follows_the_channels(name, c, expected):
    assert tr.input_load_bytes(get_dtype(name), c) == expected
    it = tr.InputTransform(4, name, "nhwc")
    assert f"typedef {tr.LOAD_TYPES[expected]} load_t;" in it.source(c)


def test_load_width_is_validated():
    with pytest.raises(InputError, match="load width 2"):
        tr.render_input(4, "fp32", "nhwc", load_bytes=2)
    with pytest.raises(InputError, match="load width 3"):
        tr.render_input(4, "fp16", "nhwc", load_bytes=3)


def test_lincomb_skips_zeros_and_unit_coefficients():
    from cutlass_wsp.kernels.emitter import lincomb

    assert lincomb([1, 0, -2.5, -1], "v[@]") == "v[0] - 2.5f * v[2] - v[3]"
    assert lincomb([0, -4, 0.25], "x[@][q]") == "-4.0f * x[1][q] + 0.25f * x[2][q]"
    assert lincomb([0, 0], "v[@]") == "0.0f"
    assert parse_lincomb(lincomb([0.125, -21 / 4, 0, 1], "v[@]"), r"v\[(\d+)\]") == {0: 0.125, 1: -5.25, 3: 1.0}


# --- geometry ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("p,dt,layout", COMBOS)
def test_geometries_meet_the_kernels_invariants(p, dt, layout):
    d = get_dtype(dt)
    vec = 16 // d.itemsize
    m = p - 2
    gi = tr.input_geometry(d, layout, p)
    go = tr.output_geometry(d, layout, p)
    for g in (gi, go):
        assert 32 <= g.threads <= 1024 and g.threads % 32 == 0
        assert p % g.rs == 0 and g.tt % g.tpt == 0
        assert g.tt * d.itemsize >= 32  # X/Y rows touched in whole 32-byte sectors per block
    # input: a thread's tiles are stored together, so Npad (a multiple of 16 bytes) never splits them
    assert gi.tpt in (1, 2) and (16 // d.itemsize) % gi.tpt == 0
    if layout == "nhwc":
        assert gi.cc * d.itemsize >= 32  # whole sectors of channels per pixel
        assert (gi.pstr * d.itemsize) % 8 == 0
        assert gi.tt // gi.tpt * gi.pstr * d.itemsize <= 40 * 1024
        # bank-conflict-free reads of the staged input: 2-byte: odd multiple of 2 words per thread;
        # fp32: 4 words apart modulo the 32 banks
        if d.itemsize == 2:
            assert (gi.pstr // 2) % 4 == 2
        else:
            assert gi.pstr % 32 == 4
        assert go.tt % vec == 0 and (go.srow * d.itemsize) % 16 == 0 and go.srow >= go.tt
        assert go.rs * p * go.cc * go.srow * d.itemsize <= tr.STAGE_BYTES
    else:
        assert go.threads % (go.tt * m) == 0 and go.srow >= go.tt * m


def test_grid_puts_channel_groups_first_and_splits_tile_groups():
    g = tr.Geometry(tt=16, cc=16)
    assert g.grid(401408, 64) == (4, 25088, 1)
    x, y, z = g.grid(16 * 200000, 3)  # 200000 tile groups: over the 65535 limit of y
    assert x == 1 and y <= 65535 and y * z >= 200000


# --- validation -------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [2, 3, 5, 7, 10, 4.0, "4"])
def test_unsupported_p(p):
    with pytest.raises(Unsupported, match="p=.*4, 6 or 8"):
        tr.InputTransform(p, "fp16", "nchw")
    with pytest.raises(Unsupported):
        tr.OutputTransform(p, "fp16", "nchw")


def test_bad_layout_and_dtype():
    with pytest.raises(InputError, match="layout 'ncwh'.*'nchw' or 'nhwc'"):
        tr.InputTransform(4, "fp16", "ncwh")
    with pytest.raises(InputError, match="layout"):
        tr.OutputTransform(4, "fp16", "chw", compact=True)
    with pytest.raises(InputError, match="dtype 'fp8'"):
        tr.InputTransform(4, "fp8", "nchw")
    assert tr.InputTransform(6, "bf16", "NHWC").layout == "nhwc"


def test_shapes_and_bytes():
    it = tr.InputTransform(4, "fp16", "nhwc")  # m = 2
    assert it.dims((2, 7, 9, 3)) == (2, 3, 7, 9)
    assert it.x_shape(2, 3, 7, 9) == (16, 3, 40)            # 2 * 4 * 5 tiles, already a multiple of 8
    assert tr.InputTransform(6, "fp16", "nchw").x_shape(2, 3, 7, 9) == (36, 3, 16)  # 12 tiles -> 16
    assert tr.InputTransform(6, "fp32", "nchw").x_shape(2, 3, 7, 9) == (36, 3, 12)  # 12 tiles, 4 per 16 B
    # 1 x 2 x 4 x 4 fp16: d = 64 B; 4 tiles -> Npad 8: X = 16 * 2 * 8 * 2 B = 512 B
    assert tr.InputTransform(4, "fp16", "nchw").bytes_moved(1, 2, 4, 4) == 64 + 512
    ot = tr.OutputTransform(4, "fp32", "nchw")
    assert ot.output_shape(2, 5, 7, 9) == (2, 5, 7, 9)
    assert tr.OutputTransform(4, "fp32", "nhwc").output_shape(2, 5, 7, 9) == (2, 7, 9, 5)
    # Y: 16 x 5 x 40 fp32 = 12800 B, out 2*5*7*9*4 = 2520 B
    assert ot.bytes_moved(2, 5, 7, 9) == 12800 + 2520
    oc = tr.OutputTransform(4, "fp32", "nchw", compact=True)
    assert oc.bytes_moved(2, 5, 7, 9, kept_rows=2) == 16 * 2 * 40 * 4 + 2520 + 4 * 16 * 5
    for bad in [(2, 7, 9), (2, 0, 7, 9)]:
        with pytest.raises(InputError):
            it.dims(bad)
        with pytest.raises(InputError):
            ot.dims(bad)


def test_compact_input_shapes_and_bytes():
    it = tr.InputTransform(4, "fp16", "nhwc", compact=True)
    assert it.compact and not tr.InputTransform(4, "fp16", "nhwc").compact
    assert it.x_shape(2, 48, 7, 9, K=24) == (16, 24, 40)
    assert it.x_shape(2, 48, 7, 9) == (16, 48, 40)
    # d: 2*48*7*9 fp16 = 12096 B; Xc: 16 positions x 20 written rows x 40 columns x 2 B; map 16 x 48 int32
    assert it.bytes_moved(2, 48, 7, 9, kept_rows=20) == 12096 + 16 * 20 * 40 * 2 + 4 * 16 * 48
    dense = tr.InputTransform(4, "fp16", "nhwc")
    assert dense.bytes_moved(2, 48, 7, 9) == 12096 + 16 * 48 * 40 * 2
    # the compact transform writes (1 - ratio) of X: at 70 % pruned, under half the dense bytes of X
    assert it.bytes_moved(2, 48, 7, 9, kept_rows=14) - 12096 < 0.5 * (dense.bytes_moved(2, 48, 7, 9) - 12096)


def test_channel_rows():
    # position 0 keeps channels 1, 4 (rows 0, 1); position 1 keeps 3 in row 1 (row 0 padding); 2 keeps none
    cols = [np.array([1, 4]), np.array([-1, 3]), np.array([], dtype=np.int64)]
    xrow = tr.InputTransform.channel_rows(cols, 5, 2)
    assert xrow.dtype == np.int32 and xrow.shape == (3, 5)
    assert xrow.tolist() == [[-1, 0, -1, -1, 1], [-1, -1, -1, 1, -1], [-1, -1, -1, -1, -1]]
    # any row order; a 2-D array is one row per position
    assert tr.InputTransform.channel_rows(np.array([[2, 0], [0, 1]]), 3, 4).tolist() == [[1, -1, 0], [0, 1, -1]]


@pytest.mark.parametrize("cols,c,K,match", [
    ([np.array([0, 5])], 5, 4, r"cols\[0\] holds channels outside \[-1, 5\)"),
    ([np.array([-2, 1])], 5, 4, "outside"),
    ([np.array([1, 2]), np.array([3, 3])], 5, 4, r"cols\[1\] keeps a channel twice"),
    ([np.array([0, 1, 2])], 5, 2, r"cols\[0\] has 3 rows, more than Xc's K=2"),
    ([np.array([[0, 1]])], 5, 4, r"cols\[0\] has shape \(1, 2\)"),
    ([np.array([0.0, 1.0])], 5, 4, "1-D integer"),
    ([], 5, 4, "no positions"),
    (None, 5, 4, "no positions"),
    ([np.array([0])], 0, 4, "c=0"),
    ([np.array([0])], 5, 0, "K=0"),
    ([np.array([0])], 5, 2.0, "K=2.0"),
])
def test_bad_channel_maps_are_input_errors(cols, c, K, match):
    with pytest.raises(InputError, match=match):
        tr.InputTransform.channel_rows(cols, c, K)
    with pytest.raises(InputError, match=match):          # checked before anything goes to the GPU
        tr.InputTransform.channel_map(cols, c, K)


def test_channel_map_counts_and_kept_rows():
    cmap = tr.ChannelMap(xrow=None, positions=4, c=8, K=8, counts=(8, 6, 6, 4))
    assert cmap.kept_rows == 6
    with pytest.raises(dataclasses.FrozenInstanceError):
        cmap.K = 4


def test_compact_input_call_is_validated_before_cupy():
    with pytest.raises(InputError, match="not a CuPy array"):
        tr.InputTransform(4, "fp16", "nhwc", compact=True)(np.zeros((1, 4, 4, 2), np.float16), None, None)


def test_arrays_must_be_cupy():
    with pytest.raises(InputError, match="not a CuPy array"):
        tr.InputTransform(4, "fp16", "nchw")(np.zeros((1, 2, 4, 4), np.float16))
    with pytest.raises(InputError, match="not a CuPy array"):
        tr.OutputTransform(4, "fp16", "nchw")(np.zeros((16, 2, 8), np.float16), np.zeros((1, 2, 4, 4), np.float16))


def test_inverse_rows():
    # position 0 keeps filters 3, 0 (in that row order); position 1 keeps 1; position 2 keeps none
    rows = np.array([[3, 0], [-1, 1], [-1, -1]])
    inv = tr.OutputTransform.inverse_rows(rows, 4)
    assert inv.dtype == np.int32
    assert inv.tolist() == [[1, -1, -1, 0], [-1, 1, -1, -1], [-1, -1, -1, -1]]
    with pytest.raises(InputError, match="twice"):
        tr.OutputTransform.inverse_rows(np.array([[2, 2]]), 4)
    with pytest.raises(InputError, match="outside"):
        tr.OutputTransform.inverse_rows(np.array([[0, 4]]), 4)
    with pytest.raises(InputError, match="outside"):
        tr.OutputTransform.inverse_rows(np.array([[-2, 0]]), 4)
    with pytest.raises(InputError, match="2-D integer"):
        tr.OutputTransform.inverse_rows(np.array([[0.0, 1.0]]), 4)
    with pytest.raises(InputError, match="2-D integer"):
        tr.OutputTransform.inverse_rows(np.array([0, 1]), 4)


# --- compile (nvcc, when present) -----------------------------------------------------------------

@pytest.mark.compile
def test_every_variant_compiles(tmp_path):
    """All 96 storage x layout x p x variant (x NHWC load width) kernels in one translation unit (each in its own namespace,
    its kernel renamed), to PTX: catches template syntax errors and the static_asserts."""
    from cutlass_wsp.kernels.toolchain import find_nvcc

    try:
        nvcc = find_nvcc()
    except ToolchainError as e:
        pytest.skip(f"nvcc not found: {e}")
    sources = []
    for p, dt, layout in itertools.product(PS, ("fp16", "bf16", "fp32"), LAYOUTS):
        widths = [b for b in (16, 8, 4, 2) if b >= get_dtype(dt).itemsize] if layout == "nhwc" else [16]
        sources += [tr.render_input(p, dt, layout, load_bytes=b)[0] for b in widths]
        sources.append(tr.render_input(p, dt, layout, compact=True)[0])   # the map only moves the stores
        sources += [tr.render_output(p, dt, layout)[0], tr.render_output(p, dt, layout, compact=True)[0]]
    parts = []
    for k, src in enumerate(sources):
        src = re.sub(r"\b(wsp_(?:input|output)_transform)\b", rf"\1_{k}", src)
        parts.append(f"namespace v{k} {{\n{src}\n}}  // namespace v{k}\n")
    cu = tmp_path / "transforms_all.cu"
    cu.write_text("\n".join(parts))
    res = subprocess.run([nvcc, "-std=c++17", "-arch=compute_90", "-ptx", "-o", str(tmp_path / "t.ptx"), str(cu)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    ptx = (tmp_path / "t.ptx").read_text()
    assert ptx.count(".entry wsp_") == len(sources) == 96
