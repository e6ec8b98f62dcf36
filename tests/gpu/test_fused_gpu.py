"""The fused Winograd layer on the GPU: dense against float64 direct convolution, the pruned forms against
the fp32 unfused pipeline with the same packed weights, every generation and warp count, odd H x W and
small batches (generation 3 also batch 32 and a half chunk of channels); and a config search over its menu
that verifies, records and is read back."""

from __future__ import annotations

import numpy as np
import pytest

cp = pytest.importorskip("cupy")


def _sm90():
    from cutlass_wsp.gpu.device import compute_capability

    if compute_capability() != 90:
        pytest.skip("the fused layer kernel is sm90 code")


KERNELS = {   # name -> (p, kernel for a layout)
    "gen4": (4, lambda lay, dt: _rs(lay, dt)),
    "gen3": (4, lambda lay, dt: _ws(lay, dt)),
    "gen2-w8": (4, lambda lay, dt: _pair(lay, dt, 8)),
    "gen2-w16": (4, lambda lay, dt: _pair(lay, dt, 16)),
    "gen1-p4": (4, lambda lay, dt: _gen1(lay, dt)),
    "gen1-p6": (6, lambda lay, dt: _gen1(lay, dt)),
}


def _pair(lay, dt, warps):
    from cutlass_wsp.families.fused import pair_desc

    if warps == 16 and lay.mi % 32:
        pytest.skip("16 warps need MI a multiple of 32")
    return pair_desc(dt, lay.mi, fb=lay.fb, dense_map=lay.identity, warps=warps)


def _ws(lay, dt):
    from cutlass_wsp.families.fused import ws_desc

    return ws_desc(dt, lay.mi, fb=lay.fb, dense_map=lay.identity)


def _rs(lay, dt):
    from cutlass_wsp.families.fused import rs_desc

    return rs_desc(dt, lay.mi, fb=lay.fb, dense_map=lay.identity, cmap=lay.pruned_chunks)


WGMMA_GENS = {"gen3": ("ws_desc", {}), "gen4": ("rs_desc", {}),            # the wgmma generations: FB 32 layouts
              "gen4-mc2": ("rs_desc", {"mcast": 2}),                         # weights multicast to a CTA pair
              "gen4-smem": ("rs_desc", {"epi": "smem"}),                    # dense map: the shared-memory epilogue
                                                                             # (generation 4's default is 'regs')
              "gen4-halves": ("rs_desc", {"pipe": "halves"}),               # two commit groups per chunk
              "gen4-persistent": ("rs_desc", {"sched": "persistent"}),      # dense map: one CTA per SM, items walked
              "gen4-persistent-halves": ("rs_desc", {"sched": "persistent", "pipe": "halves"}),
              "gen4-rmc2": ("rs_desc", {"rmcast": 2}),     # input region multicast to the CTAs of 2 filter blocks
              "gen4-rmc4": ("rs_desc", {"rmcast": 4}),     # ... of 4 (n = 32, 48, 80: CTAs past the last block)
              "gen4-persistent-rmc2": ("rs_desc", {"sched": "persistent", "rmcast": 2})}   # clusters walking items


def _wgmma_desc(gen: str):
    import cutlass_wsp.families.fused as fused
    from cutlass_wsp.errors import Unsupported

    name, kw = WGMMA_GENS[gen]

    def make(*args, **kwargs):
        try:
            return getattr(fused, name)(*args, **kwargs, **kw)
        except Unsupported as e:
            if kw.get("epi") or kw.get("sched"):   # variants for some layouts only (the register epilogue: dense map)
                pytest.skip(f"{gen}: {e}")
            raise
    return make


def _fb(kernel: str, pruned: bool) -> int:
    """Filter block of the test layouts: generation 3 holds at most 32 rows per position (FB 32); generation 2
    64; generation 1 32 dense, 64 pruned."""
    if kernel in WGMMA_GENS:
        return 32
    return 64 if kernel.startswith("gen2") or pruned else 32


def _dense_layer_error(lay, g, desc, dtype, batch, H, W, cache_dir, what) -> float:
    """Run the dense fused layer `desc` on fresh random NHWC input into a poisoned output and check it against
    float64 direct convolution with the spatial filters g; the relative error (the check raises past tolerance)."""
    from cutlass_wsp.families.fused import FusedLayer
    from cutlass_wsp.gpu import arrays
    from cutlass_wsp.gpu.verify import check, layer_rtol
    from cutlass_wsp.kernels.cache import KernelCache
    from cutlass_wsp.winograd import direct_conv2d

    c = lay.c
    layer = FusedLayer(lay, dtype, desc).setup(KernelCache(cache_dir))
    d = arrays.random((batch, H, W, c), dtype)
    out = arrays.poison(arrays.empty(layer.output_shape(batch, H, W), dtype), dtype)
    layer.run(d, out)
    cp.cuda.get_current_stream().synchronize()
    ref = direct_conv2d(arrays.to_host_float32(d, dtype).transpose(0, 3, 1, 2), g).transpose(0, 2, 3, 1)
    return check(arrays.to_host_float32(out, dtype), ref, dtype, what, K=9 * c, rtol=layer_rtol(dtype, lay.p, c))


# The pruned cases' lists and layouts, shared with scripts/fused_carry.py (it builds these tests' kernels ahead).
PRUNED_CASES = [("wsp-r", 0.7, dict(balance="unbalanced")), ("wsp-r", 0.5, {}), ("fp", 0.5, {}),
                ("wsp-rb", 0.75, dict(block=32)), ("wsp-rb", 0.5, dict(block=32)), ("wsp-cb", 0.5, {}),
                ("wsp-cb", 0.75, {})]
WIDE_CASES = [("wsp-rb", 0.7, True), ("wsp-rb", 0.9, True), ("wsp-rb", 0.7, False), ("wsp-r", 0.7, True),
              ("wsp-r-unbalanced", 0.7, True)]
PERSISTENT_FULL_CASES = [("wsp-rb", 0.7, 8, 48, 56, 56), ("wsp-rb", 0.9, 32, 16, 48, 48), ("wsp-r", 0.7, 4, 64, 57, 43)]
# generation 4's variants in the wide-block tests (the full map): two commit groups, persistent CTAs, region multicast
WIDE_VARIANTS = [{}, {"pipe": "halves"}, {"sched": "persistent"}, {"sched": "persistent", "pipe": "halves"},
                 {"rmcast": 2}, {"rmcast": 2, "pipe": "halves"}, {"sched": "persistent", "rmcast": 2}]
# ... and in the persistent walks (sched="persistent" added): a cluster of 2 walks its group items together
PERSISTENT_VARIANTS = [{}, {"pipe": "halves"}, {"rmcast": 2}]


def _check_against_unfused(lay, dtype, desc, batch, H, W, cache_dir, what) -> None:
    """The fused layer `desc` on `lay` against the fp32 unfused pipeline with the same packed weights (the harness's
    check, output poisoned first), then timed briefly: both must have happened."""
    from cutlass_wsp.families.fused import layer_op
    from cutlass_wsp.gpu.harness import bench
    from cutlass_wsp.kernels.cache import KernelCache

    op = layer_op(lay, dtype, desc, batch, H, W, KernelCache(cache_dir), what)
    m = bench(op.launch, outputs=op.out, result=op.result, reference=op.reference, check=op.check,
              budget_s=0.01, min_reps=2, max_reps=3, warmup=1)
    assert m.rel_error > 0 and m.timing.median_ms > 0


def _variant_id(kw: dict) -> str:
    return "-".join(f"{k}{v}" for k, v in kw.items()) or "one"


def pruned_layout(pattern: str, ratio: float, kw: dict):
    """n = 96, c = 64 in filter blocks of 32 (the wgmma pruned tests)."""
    from cutlass_wsp.families.fused import layout_for
    from cutlass_wsp.pruning import prune
    from cutlass_wsp.weights import he_winograd_weights

    return layout_for(prune(he_winograd_weights((96, 64), 4, seed=5), pattern, ratio, **kw), 4, fb=32)


def wide_layout(pattern: str, ratio: float, wide: bool = True, c: int = 64, seed: int = 7):
    """(layout, filter block) of n = 256: WSP-RB in its balanced block (or 32), WSP-R (balanced, or
    "wsp-r-unbalanced") in the widest block that fits 32 rows per position."""
    from cutlass_wsp.families.fused import balanced_block, layout_for, wide_filter_block
    from cutlass_wsp.pruning import prune
    from cutlass_wsp.weights import he_winograd_weights

    W4 = he_winograd_weights((256, c), 4, seed=seed)
    if pattern == "wsp-rb":
        fb = balanced_block(ratio, 256) if wide else 32
        pr = prune(W4, "wsp-rb", ratio, block=fb)
    else:
        pr = prune(W4, "wsp-r", ratio, balance="unbalanced" if pattern.endswith("unbalanced") else "balanced")
        fb = wide_filter_block(pr.rows, 256)
    return layout_for(pr, 4, fb=fb), fb


def _gen1(lay, dt):
    from cutlass_wsp.families.fused import fused_desc

    return fused_desc(dt, lay.p, lay.mi, fb=lay.fb)


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("batch,c,n,H,W", [(1, 64, 64, 15, 17), (3, 48, 80, 9, 11)])
def test_dense_fused_layer_equals_direct_convolution(kernel, dtype, batch, c, n, H, W, compile_cache_dir):
    from cutlass_wsp.families.fused import dense_layout
    from cutlass_wsp.winograd import filter_transform

    _sm90()
    p, make = KERNELS[kernel]
    rng = np.random.default_rng(batch * 100 + c)
    g = (rng.standard_normal((n, c, 3, 3)) * np.sqrt(2.0 / (9 * c))).astype(np.float32)
    fb = _fb(kernel, False)
    lay = dense_layout(filter_transform(g.astype(np.float64), p - 2).astype(np.float32), p, fb=fb)
    err = _dense_layer_error(lay, g, make(lay, dtype), dtype, batch, H, W, compile_cache_dir, f"fused {kernel}")
    assert 0 < err


@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("pattern,ratio,kw", [("wsp-r", 0.7, dict(balance="unbalanced")), ("wsp-r", 0.5, {}),
                                              ("fp", 0.5, {}), ("wsp-rb", 0.75, dict(block=64))])
def test_pruned_fused_layers_equal_the_unfused_pipeline_with_the_same_mask(kernel, pattern, ratio, kw,
                                                                           compile_cache_dir):
    from cutlass_wsp.families.fused import layout_for
    from cutlass_wsp.pruning import prune
    from cutlass_wsp.weights import he_winograd_weights

    _sm90()
    p, make = KERNELS[kernel]
    pr = prune(he_winograd_weights((96, 64), p, seed=5), pattern, ratio, **kw)
    lay = layout_for(pr, p, fb=_fb(kernel, True))
    _check_against_unfused(lay, "fp16", make(lay, "fp16"), 3, 13, 10, compile_cache_dir,
                           f"{kernel} {pattern}")


# ------------------------------------------------------------ generations 3 and 4 (warp-specialized, wgmma)
# Written and compiled without a GPU (docs/fused.md, "Generation 3", "Generation 4"): generation 4's first run. Batches 1, 3
# and 32, odd H x W, c with a half chunk (40: the TMA box reads channels 40..47 out of bounds, zero), n not a
# multiple of the filter block, both dtypes. A protocol bug traps (mbarrier watchdog, ~8 s) instead of hanging.
GEN3_DENSE_SHAPES = [(1, 64, 64, 15, 17), (3, 48, 80, 9, 11), (32, 64, 64, 28, 28), (1, 40, 32, 7, 9),
                     (32, 32, 48, 13, 15), (3, 128, 96, 5, 3)]


@pytest.mark.parametrize("gen", list(WGMMA_GENS))
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("batch,c,n,H,W", GEN3_DENSE_SHAPES)
def test_wgmma_dense_equals_direct_convolution(gen, dtype, batch, c, n, H, W, compile_cache_dir):
    from cutlass_wsp.families.fused import dense_layout
    from cutlass_wsp.winograd import filter_transform

    _sm90()
    rng = np.random.default_rng(batch * 100 + c + H)
    g = (rng.standard_normal((n, c, 3, 3)) * np.sqrt(2.0 / (9 * c))).astype(np.float32)
    lay = dense_layout(filter_transform(g.astype(np.float64), 2).astype(np.float32), 4, fb=32)
    desc = _wgmma_desc(gen)(dtype, lay.mi, fb=32, dense_map=lay.identity)
    err = _dense_layer_error(lay, g, desc, dtype, batch, H, W, compile_cache_dir, f"fused {gen} {desc.name}")
    assert 0 < err


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("batch,H,W", [(1, 15, 17), (3, 13, 10), (32, 9, 11)])
@pytest.mark.parametrize("pattern,ratio,kw", PRUNED_CASES)
@pytest.mark.parametrize("gen", list(WGMMA_GENS))
def test_wgmma_pruned_equals_the_unfused_pipeline_with_the_same_mask(gen, dtype, batch, H, W, pattern, ratio, kw,
                                                                     compile_cache_dir):
    """MI 16 (WSP-RB 0.75) and 32 with the row map: positions whose kept rows fit one m16 tile take the N = 16
    wgmma, empty ones none; FP's identity layout takes the dense map. WSP-CB (generation 4 only: the chunk map):
    every row kept (dense map), the products of pruned (position, 16-channel chunk) pairs skipped; at 0.75 each
    position keeps 1 of the 4 chunks, so some chunks skip every product of a warpgroup."""

    if pattern == "wsp-cb" and not gen.startswith("gen4"):
        pytest.skip("the chunk map is generation 4's")
    _sm90()
    lay = pruned_layout(pattern, ratio, kw)
    cmap = dict(cmap=lay.pruned_chunks) if gen.startswith("gen4") else {}
    desc = _wgmma_desc(gen)(dtype, lay.mi, fb=32, dense_map=lay.identity, **cmap)
    _check_against_unfused(lay, dtype, desc, batch, H, W, compile_cache_dir,
                           f"{gen} {pattern} {ratio}")


# generation 5's chunk widths, its vertical tile pairs (rectangles of even tile rows, 6 pixel rows per thread), and
# its mainloop in one commit group per k step (pipe "halves"), and its lean dense-map epilogue (epi "lean")
GEN5_VARIANTS = [dict(bc=16), dict(bc=32), dict(bc=32, vpair=True), dict(bc=32, vpair=True, pipe="halves"),
                 dict(bc=32, vpair=True, epi="lean"), dict(bc=32, vpair=True, epi="early"),
                 dict(bc=32, vpair=True, epi="async"), dict(bc=32, vpair=True, epi="tma"),
                 dict(bc=32, vpair=True, epi="async", sched="persistent"),
                 dict(bc=32, vpair=True, epi="tma", sched="persistent"),
                 dict(bc=32, vpair=True, epi="tma", refill="late"),
                 dict(bc=32, vpair=True, epi="tma", sched="persistent", refill="late", table="early"),
                 dict(bc=32, vpair=True, epi="tma", producer="light"),
                 dict(bc=32, vpair=True, epi="tma", sched="persistent", producer="light"),
                 dict(bc=32, vpair=True, epi="tma", producer="split"),
                 dict(bc=32, vpair=True, epi="tma", sched="persistent", producer="split"),
                 dict(bc=32, vpair=True, epi="tma", producer="light", xchg="half"),
                 dict(bc=32, vpair=True, epi="tma", sched="persistent", producer="light", xchg="half"),
                 dict(bc=32, vpair=True, epi="wg", sched="persistent", producer="light", xchg="half"),
                 dict(bc=32, vpair=True, gather="batched"), dict(bc=32, vpair=True, gather="push"),
                 dict(bc=32, vpair=True, gather="push", xchg="half"), dict(bc=32, vpair=True, gather="push", producer="light"),
                 dict(bc=32, vpair=True, gather="push", producer="light", xchg="half"),
                 dict(bc=32, vpair=True, gather="push", producer="light", xchg="half", join="relaxed"),
                 dict(bc=32, vpair=True, gather="push", producer="light", xchg="half", join="relaxed", stores="fast"),
                 dict(bc=32, vpair=True, gather="push", producer="light", xchg="half", epi="wg", sched="persistent"),
                 dict(bc=32, vpair=True, epi="tma", producer="light", xchg="half", region="planes"),
                 dict(bc=32, vpair=True, epi="tma", sched="persistent", producer="light", xchg="half", region="planes"),
                 dict(bc=32, vpair=True, gather="push", producer="light", xchg="half", join="relaxed", stores="fast",
                      region="planes")]
GEN5_IDS = ["k16", "k32", "k32-vpair", "k32-vpair-halves", "k32-vpair-lean", "k32-vpair-early", "k32-vpair-async",
            "k32-vpair-tma",   # tma: n_out % 8 == 0 stores by TMA (the dense shapes, FP 0.5), else per thread (FP 0.7)
            "k32-vpair-persist", "k32-vpair-tma-persist",   # pairs walking items (the test below: several a pair)
            "k32-vpair-tma-late", "k32-vpair-tma-persist-late-table",   # the refill after the issue; the next table early
            "k32-vpair-tma-light", "k32-vpair-tma-persist-light",   # the producer in the conflict-free warpgroup
            "k32-vpair-tma-split", "k32-vpair-tma-persist-split",   # half of the producer in each warpgroup
            "k32-vpair-tma-light-half", "k32-vpair-tma-persist-light-half",   # the exchanges in the 16-bit type
            "k32-vpair-wg-persist-light-half",   # the epilogue in a warpgroup of its own, under the next item's chunks
            "k32-vpair-gather", "k32-vpair-push",   # the full map's gathers batched, pushed (the full-map test only)
            "k32-vpair-push-half", "k32-vpair-push-light", "k32-vpair-push-light-half",   # ms in fp16; the producer
            "k32-vpair-push-light-half-relaxed",   # and the pair's joins relaxed
            "k32-vpair-push-light-half-relaxed-fast",   # and the stores with one branch a tile
            "k32-vpair-push-light-half-wg-persist",   # the full map's epilogue in a warpgroup of its own
            # the region's columns in two planes by parity (no bank conflict in any column): the defaults with it
            "k32-vpair-tma-light-half-planes", "k32-vpair-tma-persist-light-half-planes",
            "k32-vpair-push-light-half-relaxed-fast-planes"]


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("variant", GEN5_VARIANTS, ids=GEN5_IDS)
@pytest.mark.parametrize("batch,c,n,H,W", GEN3_DENSE_SHAPES)
def test_gen5_dense_equals_direct_convolution(dtype, variant, batch, c, n, H, W, compile_cache_dir):
    """Generation 5: a cluster pair splitting V's columns, each warpgroup one column with N = 64 (n = 32, 48, 80, 96
    leave a block partly empty), the region multicast to both CTAs, partial outputs traded within the CTA and across
    the pair; chunks of 16 or 32 channels (c = 40, 48: the last chunk half past the input, its weights padded).
    Dense against float64 direct convolution."""
    from cutlass_wsp.families.fused import cp_desc, dense_layout
    from cutlass_wsp.winograd import filter_transform

    _sm90()
    rng = np.random.default_rng(batch * 100 + c + H + 5)
    g = (rng.standard_normal((n, c, 3, 3)) * np.sqrt(2.0 / (9 * c))).astype(np.float32)
    lay = dense_layout(filter_transform(g.astype(np.float64), 2).astype(np.float32), 4, fb=64)
    if "gather" in variant:
        pytest.skip("the full map's gathers are its own epilogue")
    desc = cp_desc(dtype, lay.mi, **variant)
    err = _dense_layer_error(lay, g, desc, dtype, batch, H, W, compile_cache_dir, f"fused gen5 {desc.name}")
    assert 0 < err


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("sched", [None, "persistent"])
@pytest.mark.parametrize("batch,c,n,H,W", [(2, 64, 64, 9, 1), (3, 32, 48, 7, 2), (8, 64, 64, 14, 14),
                                           (8, 96, 80, 13, 5), (32, 64, 64, 28, 28)])
def test_gen5_region_in_planes_equals_direct_convolution(dtype, sched, batch, c, n, H, W, compile_cache_dir):
    """Region "planes": each chunk's region as two TMA boxes, the input's odd columns and its even ones (a layer one
    pixel wide has no odd column: its box lands out of bounds, zeros; W = 2: one of each), every column's loads
    swapping on a rectangle one tile wide (8 x 14 x 14 and 8 x 13 x 5: the 14 x 14 layers' rectangle). Dense against
    direct convolution, one-shot and as persistent pairs (several items a pair on the larger shapes)."""
    from cutlass_wsp.families.fused import cp_desc, dense_layout
    from cutlass_wsp.winograd import filter_transform

    _sm90()
    rng = np.random.default_rng(batch * 100 + c + H + W + 11)
    g = (rng.standard_normal((n, c, 3, 3)) * np.sqrt(2.0 / (9 * c))).astype(np.float32)
    lay = dense_layout(filter_transform(g.astype(np.float64), 2).astype(np.float32), 4, fb=64)
    desc = cp_desc(dtype, lay.mi, bc=32, vpair=True, epi="tma", sched=sched, producer="light", xchg="half",
                   region="planes")
    err = _dense_layer_error(lay, g, desc, dtype, batch, H, W, compile_cache_dir, f"fused gen5 {desc.name}")
    assert 0 < err


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("epi", ["async", "tma", "tma-late-table", "tma-light", "tma-split", "tma-light-half",
                                 "wg-light-half", "tma-light-half-planes"])
@pytest.mark.parametrize("batch,c,n,H,W", [(32, 40, 96, 31, 31), (32, 16, 64, 29, 29), (16, 96, 128, 57, 23),
                                           (32, 64, 58, 28, 28)])
def test_gen5_persistent_pairs_walking_several_items_equal_direct_convolution(dtype, epi, batch, c, n, H, W,
                                                                             compile_cache_dir):
    """The persistent pair on layers with more items than resident pairs (2 to 5 items a pair on 132 SMs): its rings
    run on across items and each item's exchange reuses a weight stage, so every item after the first is what this
    checks. c = 40: two chunks, the last half past the input; c = 16: one chunk an item (each item's second chunk of
    weights is the next item's); n = 96: a last filter block half empty; odd sizes: rectangles past the image; tma:
    each item's box stored while the next item runs (n = 58: n_out % 8, the per-thread stores); tma-late-table: the
    next item's tile table written during this item's first chunk (c = 16: its only one); tma-light: the raw ring's
    producer in warpgroup 1 - rank; tma-split: half of it in each warpgroup (each with its own cached item);
    wg-light-half: the epilogue in a warpgroup of its own, item i's under item i + 1's chunks (ZBUF, the pair's PBUF and
    the tile table's halves handed over per item)."""
    from cutlass_wsp.families.fused import cp_desc, dense_layout
    from cutlass_wsp.winograd import filter_transform

    _sm90()
    rng = np.random.default_rng(batch * 100 + c + H + 9)
    g = (rng.standard_normal((n, c, 3, 3)) * np.sqrt(2.0 / (9 * c))).astype(np.float32)
    lay = dense_layout(filter_transform(g.astype(np.float64), 2).astype(np.float32), 4, fb=64)
    # tma-late-table: the weight refill after the issue, the next item's tile table written during this item
    kw = {"tma-late-table": dict(epi="tma", refill="late", table="early"),
          "tma-light": dict(epi="tma", producer="light"),
          "tma-split": dict(epi="tma", producer="split"),
          "tma-light-half": dict(epi="tma", producer="light", xchg="half"),
          "wg-light-half": dict(epi="wg", producer="light", xchg="half"),
          "tma-light-half-planes": dict(epi="tma", producer="light", xchg="half", region="planes")}.get(epi, dict(epi=epi))
    desc = cp_desc(dtype, lay.mi, bc=32, vpair=True, sched="persistent", **kw)
    err = _dense_layer_error(lay, g, desc, dtype, batch, H, W, compile_cache_dir, f"fused gen5 {desc.name}")
    assert 0 < err


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("variant", GEN5_VARIANTS, ids=GEN5_IDS)
@pytest.mark.parametrize("batch,H,W", [(1, 15, 17), (3, 13, 10), (32, 9, 11)])
@pytest.mark.parametrize("ratio", [0.5, 0.7])
def test_gen5_fp_equals_the_unfused_pipeline_with_the_same_mask(dtype, variant, batch, H, W, ratio,
                                                                compile_cache_dir):
    """Generation 5 with FP's identity layout (the kept filters of n = 96, c = 64, in blocks of 64), chunks of 16 or
    32 channels."""
    from cutlass_wsp.families.fused import cp_desc, layout_for
    from cutlass_wsp.pruning import prune
    from cutlass_wsp.weights import he_winograd_weights

    _sm90()
    lay = layout_for(prune(he_winograd_weights((96, 64), 4, seed=13), "fp", ratio), 4, fb=64)
    assert lay.identity
    if "gather" in variant:
        pytest.skip("the full map's gathers are its own epilogue")
    desc = cp_desc(dtype, lay.mi, **variant)
    _check_against_unfused(lay, dtype, desc, batch, H, W, compile_cache_dir,
                           f"gen5 fp {ratio}")


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("variant", GEN5_VARIANTS, ids=GEN5_IDS)
@pytest.mark.parametrize("batch,H,W", [(1, 15, 17), (3, 13, 10), (32, 9, 11)])
@pytest.mark.parametrize("ratio,n,fb", [(0.7, 200, 192), (0.5, 150, 128)])
def test_gen5_full_map_equals_the_unfused_pipeline_with_the_same_mask(dtype, variant, batch, H, W, ratio, n, fb,
                                                                     compile_cache_dir):
    """Generation 5's full map: WSP-RB in wide blocks (64 packed rows per position for FB filters; n leaves the last
    block partly empty), its epilogue reading the partner CTA's columns remotely."""
    from cutlass_wsp.families.fused import cp_desc, layout_for
    from cutlass_wsp.pruning import prune
    from cutlass_wsp.weights import he_winograd_weights

    _sm90()
    lay = layout_for(prune(he_winograd_weights((n, 64), 4, seed=17), "wsp-rb", ratio, block=fb), 4, fb=fb, mi=64)
    if "epi" in variant and "gather" not in variant:
        pytest.skip(f"the {variant['epi']} epilogue is the dense map's")
    desc = cp_desc(dtype, lay.mi, fb=fb, full_rows=True, **variant)
    _check_against_unfused(lay, dtype, desc, batch, H, W, compile_cache_dir,
                           f"gen5 wsp-rb {ratio}")


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("batch,c,n,H,W,fb", [(32, 64, 200, 56, 56, 192), (16, 40, 150, 31, 29, 128)])
def test_gen5_full_map_wg_persist_walks_many_items_and_equals_the_unfused_pipeline(dtype, batch, c, n, H, W, fb,
                                                                                  compile_cache_dir):
    """The full map's warpgroup epilogue (push gather, persistent pairs): 5 to 12 items a pair on 132 SMs, so each
    item's MS, inverse map and tile table are handed over while the next item's chunks run (msfull, msfree, rmsfree);
    c = 40: two chunks, the last half past the input; n leaves the last block partly empty; odd sizes: rectangles
    past the image. WSP-RB 0.7 / 0.5 against the fp32 unfused pipeline with the same mask."""
    from cutlass_wsp.families.fused import cp_desc, layout_for
    from cutlass_wsp.pruning import prune
    from cutlass_wsp.weights import he_winograd_weights

    _sm90()
    ratio = 0.7 if fb == 192 else 0.5
    lay = layout_for(prune(he_winograd_weights((n, c), 4, seed=23), "wsp-rb", ratio, block=fb), 4, fb=fb, mi=64)
    desc = cp_desc(dtype, lay.mi, bc=32, vpair=True, fb=fb, full_rows=True, gather="push", producer="light",
                   xchg="half", epi="wg", sched="persistent")
    _check_against_unfused(lay, dtype, desc, batch, H, W, compile_cache_dir, f"gen5 wg wsp-rb {ratio}")


def test_a_fused_config_search_verifies_records_and_is_read_back(compile_cache_dir, tmp_path):
    from cutlass_wsp.families import registry
    from cutlass_wsp.families.fused import FusedTuneProblem, layout_for
    from cutlass_wsp.kernels import search
    from cutlass_wsp.kernels.cache import KernelCache
    from cutlass_wsp.kernels.store import TunedChoices, TuningStore
    from cutlass_wsp.pruning import prune
    from cutlass_wsp.weights import he_winograd_weights

    _sm90()
    lay = layout_for(prune(he_winograd_weights((128, 64), 4, seed=1), "dense", 0.0), 4, fb=64)
    problem = FusedTuneProblem.of(lay, 4, 28, 28)
    cache = KernelCache(compile_cache_dir)
    store = TuningStore(tmp_path / "tuning.json")
    result = search.tune(problem, "fp16", "sm90", family="fused", families=registry.tunable(), cache=cache,
                         store=store, budget_s=0.5)
    assert result.best is not None and result.recorded
    assert sum(t.ok for t in result.trials) >= 2                 # the menu's candidates all verified
    choices = TunedChoices.load(cache, store=store, checks=registry.checks())
    assert choices.lookup("fused", problem, "fp16", "sm90") == result.best


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("variant", PERSISTENT_VARIANTS, ids=_variant_id)
@pytest.mark.parametrize("batch,c,n,H,W", [(32, 16, 96, 30, 30), (8, 48, 96, 56, 56), (2, 64, 64, 57, 43)])
def test_gen4_persistent_ctas_walk_many_items_and_equal_direct_convolution(dtype, variant, batch, c, n, H, W,
                                                                           compile_cache_dir):
    """Persistent CTAs (one per SM) walking several work items each, the raw and weight rings running on across
    items: 1 chunk per item (c = 16: every chunk starts an item), 3 (fewer than the weight ring's stages: a
    leader's first loads span items), 4 (odd H x W, fewer items than SMs: one item per CTA). With the region
    multicast, clusters of 2 walk group items (n = 96: the second group's second CTA redoes the last block). Dense
    against float64 direct convolution."""
    from cutlass_wsp.families.fused import dense_layout, rs_desc
    from cutlass_wsp.gpu.device import current_sm_count
    from cutlass_wsp.winograd import filter_transform

    _sm90()
    rng = np.random.default_rng(batch * 100 + c + H)
    g = (rng.standard_normal((n, c, 3, 3)) * np.sqrt(2.0 / (9 * c))).astype(np.float32)
    lay = dense_layout(filter_transform(g.astype(np.float64), 2).astype(np.float32), 4, fb=32)
    tiles = batch * -(-H // 2) * -(-W // 2)
    if (batch, c) != (2, 64):   # at least ceil(tiles / 64) rectangles x blocks items: several per CTA
        assert -(-tiles // 64) * lay.blocks > 2 * current_sm_count()
    desc = rs_desc(dtype, lay.mi, fb=32, dense_map=True, sched="persistent", **variant)
    err = _dense_layer_error(lay, g, desc, dtype, batch, H, W, compile_cache_dir, f"fused persistent {desc.name}")
    assert 0 < err


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("variant", PERSISTENT_VARIANTS, ids=_variant_id)
@pytest.mark.parametrize("pattern,ratio,batch,c,H,W", PERSISTENT_FULL_CASES)
def test_gen4_persistent_full_map_walks_many_items_and_equals_the_unfused_pipeline(dtype, variant, pattern, ratio,
                                                                                   batch, c, H, W, compile_cache_dir):
    """Persistent CTAs with the full map (n = 256 in WSP-RB's wide blocks of 96 or 256, balanced WSP-R in its widest
    block): several items per CTA, the shared-memory epilogue in two passes beside the refilling rings, each item's
    inverse map; against the fp32 unfused pipeline with the same mask."""
    from cutlass_wsp.families.fused import rs_desc
    from cutlass_wsp.gpu.device import current_sm_count

    _sm90()
    lay, fb = wide_layout(pattern, ratio, c=c, seed=11)
    tiles = batch * -(-H // 2) * -(-W // 2)
    if pattern == "wsp-rb":   # at least ceil(tiles / 64) rectangles x blocks items: several per CTA
        assert -(-tiles // 64) * lay.blocks > 2 * current_sm_count()
    desc = rs_desc(dtype, lay.mi, fb=fb, full_rows=True, sched="persistent", **variant)
    _check_against_unfused(lay, dtype, desc, batch, H, W, compile_cache_dir,
                           f"persistent {pattern} {ratio} FB {fb}")


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("batch,H,W", [(1, 15, 17), (3, 13, 10), (32, 9, 11)])
@pytest.mark.parametrize("pattern,ratio,wide", WIDE_CASES)
@pytest.mark.parametrize("variant", WIDE_VARIANTS, ids=_variant_id)
def test_gen4_wide_filter_blocks_and_the_full_map_equal_the_unfused_pipeline(dtype, batch, H, W, pattern, ratio,
                                                                             wide, variant, compile_cache_dir):
    """Generation 4 with filter blocks wider than its 32 packed rows (families/fused.wide_filter_block,
    balanced_block): n = 256 in blocks of 96 (WSP-RB 0.7: 96, 96 and a partial 64), 256 (WSP-RB 0.9) or the
    widest that fits (WSP-R), every position multiplying all its packed rows (the "full" map: padding rows are
    zero); WSP-RB 0.7 in blocks of 32 (10 kept rows: MI 16); unbalanced WSP-R in blocks of 32 with the full map."""
    from cutlass_wsp.families.fused import rs_desc

    _sm90()
    lay, fb = wide_layout(pattern, ratio, wide)
    desc = rs_desc(dtype, lay.mi, fb=fb, full_rows=True, **variant)
    assert (fb > 32) == (wide and pattern != "wsp-r-unbalanced") and "_mapfull_" in desc.name
    _check_against_unfused(lay, dtype, desc, batch, H, W, compile_cache_dir,
                           f"gen4 {pattern} {ratio} FB {fb}")


@pytest.mark.parametrize("pattern,ratio,balance", [("dense", None, None), ("fp", 0.5, None), ("wsp-r", 0.7, "balanced"),
                                                   ("wsp-r", 0.7, "unbalanced"), ("wsp-rb", 0.7, None),
                                                   ("wsp-rb", 0.9, None), ("wsp-cb", 0.75, None)])
def test_the_sweeps_gen4_and_gen5_fused_points_verify_and_time(pattern, ratio, balance, compile_cache_dir):
    """The sweep's path (registry -> FusedFamily -> the kernel of its filter block -> the harness's check against
    the fp32 unfused pipeline, then timing): ResNet-18 layer3 (256 -> 256 at 14 x 14), batch 3. Dense and FP run
    generation 5 at 32 channels a chunk with vertical tile pairs and the tma epilogue in blocks of 64
    (identity_filter_block), WSP-R and WSP-RB generation 5's full map with the push gather (row_filter_block: c = 256;
    ms in fp16, the light producer, relaxed joins, fast stores), WSP-CB generation 4."""
    from cutlass_wsp.families.fused import balanced_block
    from cutlass_wsp.gpu.harness import TimingOptions
    from cutlass_wsp.kernels.cache import KernelCache
    from cutlass_wsp.pruning import kept_count
    from cutlass_wsp.sweep.measure import Measurer
    from cutlass_wsp.sweep.plan import Point

    _sm90()
    m = Measurer(TimingOptions(budget_s=0.01), cache=KernelCache(compile_cache_dir))
    pt = Point("resnet18", ("layer3.0.conv2",), 256, 256, 14, 14, 3, 4, "fp16", pattern, "fused", ratio, balance)
    row = m.measure(pt)      # raises where the check fails
    gen5 = pattern in ("dense", "fp")
    full5 = pattern in ("wsp-r", "wsp-rb")   # generation 5's full map: the push gather, 64 rows a position
    assert row["rel_error"] > 0 and row["median_ms"] > 0
    assert ("_gen5_" if gen5 or full5 else "_gen4_") in row["kernel"] and ("_gatherpush_" in row["kernel"]) == full5
    assert ("_tilesvpair_" in row["kernel"]) == (gen5 or full5) and ("_epitma_" in row["kernel"]) == gen5
    assert ("_schedpersistent_" in row["kernel"]) == gen5   # c = 256: persistent pairs (up to c = 256)
    assert ("_producerlight_" in row["kernel"]) == (gen5 or full5)   # the raw ring's producer without bank conflicts
    assert ("_xchghalf" in row["kernel"]) == (gen5 or full5)         # fp16: the epilogue's exchanges (full map: ms)
    assert ("_joinrelaxed_" in row["kernel"]) == full5 and ("_storesfast_" in row["kernel"]) == full5
    assert ("_mapdense_" in row["kernel"]) == (pattern in ("dense", "fp", "wsp-cb"))
    if gen5:
        assert row["kernel_config"]["filter_block"] == row["kernel_config"]["rows_per_position"] == 64
    assert ("_cmapblocks_" in row["kernel"]) == (pattern == "wsp-cb")   # WSP-CB skips its pruned chunks
    if full5:   # 64 packed rows a position, in a block at least as wide as generation 4's
        assert row["kernel_config"]["rows_per_position"] == 64 and row["kernel_config"]["filter_block"] >= 64
        # the full map multiplies all 64 rows of every (block, position): its padding is counted against those
        blocks = -(-256 // row["kernel_config"]["filter_block"])
        assert row["kernel_config"]["pad_waste"] == pytest.approx(1 - sum(row["kept_m"]) / (blocks * 16 * 64),
                                                                  abs=1e-4)
    if pattern == "wsp-rb":   # WSP-RB's default block (the 32-row unit): the 64-row block holds whole ones
        block = min(balanced_block(ratio, 256), 256)
        fb = row["kernel_config"]["filter_block"]
        assert fb % block == 0 and fb >= block > 32 and kept_count(ratio, block) * (fb // block) <= 64
