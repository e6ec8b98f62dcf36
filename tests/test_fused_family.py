"""The fused layer family on the CPU: its compact layout rebuilds exactly the masked weights, its
kernel descriptions refuse what the template cannot build, and one kernel renders and compiles."""

from __future__ import annotations

import numpy as np
import pytest

from cutlass_wsp.errors import InputError, Unsupported
from cutlass_wsp.families.fused import (WIDE_FB, accumulators, balanced_block, check_fused_desc, cp_desc,
                                        cp_k_channels, cp_smem_bytes, cp_ustages, dense_layout, fused_desc,
                                        layout_for, pack_cp_weights, wide_filter_block,
                                        pack_rs_chunk_map, pack_rs_weights, pack_ws_weights, pair_desc,
                                        pair_smem_bytes, row_layout, rs_desc, rs_k_slots, rs_smem_bytes, smem_bytes,
                                        ws_desc, ws_smem_bytes)
from cutlass_wsp.pruning import prune
from cutlass_wsp.weights import he_winograd_weights


def rebuild(layout) -> np.ndarray:
    """Masked dense weights [p², n_out, c] from the compact form, through the inverse map only."""
    L = layout.p * layout.p
    W = np.zeros((L, layout.n_out, layout.c), dtype=np.float32)
    for b in range(layout.blocks):
        for i in range(L):
            for fl, j in enumerate(layout.inv[b, i]):
                f = b * layout.fb + fl
                if j >= 0:
                    assert f < layout.n_out
                    W[i, f] = layout.U[b, i, j, :layout.c]
    return W


@pytest.mark.parametrize("p", [4, 6])
@pytest.mark.parametrize("pattern,kw", [("dense", {}), ("wsp-r", dict(balance="unbalanced")),
                                        ("wsp-r", {}), ("wsp-rb", dict(block=32)), ("fp", {}), ("wsp-cb", {})])
def test_layout_rebuilds_the_masked_weights(p, pattern, kw):
    W = he_winograd_weights((80, 48), p, seed=3)          # n = 80: a partial last filter block
    pr = prune(W, pattern, 0.0 if pattern == "dense" else 0.6, **kw)
    lay = layout_for(pr, p, fb=32)
    want = pr.dense_weights()
    if pattern == "fp":                                   # FP's output holds the kept filters only
        want = want[:, pr.rows[0], :]
    np.testing.assert_array_equal(rebuild(lay), want)
    # pad rows are zero and never referenced; the 16-row tile counts cover exactly the kept rows
    counts = np.zeros_like(lay.mtiles)
    for b in range(lay.blocks):
        for i in range(p * p):
            k = int((lay.inv[b, i] >= 0).sum())
            counts[b, i] = k
            assert not lay.U[b, i, k:].any()
            assert sorted(lay.inv[b, i][lay.inv[b, i] >= 0]) == list(range(k))
    np.testing.assert_array_equal(lay.mtiles, -(-counts // 16))
    assert lay.kept == int(counts.sum())
    assert 0.0 <= lay.pad_waste < 1.0
    # the chunk map: WSP-CB's kept blocks of 16 channels in every filter block, all chunks for the others
    if pattern == "wsp-cb":
        want_keep = pr.mask[:, 0, ::16]                               # [p², chunks]
        assert lay.pruned_chunks and not want_keep.all()
        np.testing.assert_array_equal(lay.ckeep, np.broadcast_to(want_keep, lay.ckeep.shape))
        assert lay.identity                                           # every row kept: the dense map
    else:
        assert lay.ckeep.shape == (lay.blocks, p * p, 3) and not lay.pruned_chunks
    assert lay.kept_weights == int(pr.mask.sum())                     # the layer's MACs per tile (cost model)


def test_block_balanced_rows_waste_nothing_when_the_count_fills_whole_mma_tiles():
    W = he_winograd_weights((128, 64), 4, seed=1)
    balanced = layout_for(prune(W, "wsp-rb", 0.75, block=64), 4, fb=64)      # 16 of 64 per block
    assert balanced.mi == 16 and balanced.pad_waste == 0.0
    unbalanced = layout_for(prune(W, "wsp-r", 0.75, balance="unbalanced"), 4, fb=64)
    assert unbalanced.pad_waste > 0.0                                          # the per-block counts vary


def test_layout_refuses_what_the_kernel_cannot_load():
    W = he_winograd_weights((64, 12), 4)
    with pytest.raises(Unsupported, match="multiple of 8"):
        dense_layout(W, 4)
    W = he_winograd_weights((64, 64), 4)
    with pytest.raises(InputError, match="p=6"):
        dense_layout(W, 6)
    with pytest.raises(InputError, match="MI >= 32"):
        row_layout(W, 4, [np.arange(64)] * 16, fb=32, mi=16)


def test_descriptions_fit_registers_and_shared_memory():
    for p in (4, 6):
        for mi in (16, 32, 48, 64):
            d = fused_desc("fp16", p, mi)
            m, bt, _ = d.tile
            assert accumulators(p, m, bt) <= 128
            assert smem_bytes(p, m, bt, d.extra_dict()["fb"], d.stages) <= 227 * 1024
    with pytest.raises(Unsupported, match="accumulators"):
        fused_desc("fp16", 4, 64, bt=64)
    with pytest.raises(Unsupported, match="shared memory"):
        fused_desc("fp16", 6, 16, bt=64, stages=3)
    with pytest.raises(Unsupported, match="fp16, bf16"):
        fused_desc("tf32", 4, 32)
    with pytest.raises(Unsupported, match="p=8"):
        fused_desc("fp16", 8, 32)
    d = fused_desc("bf16", 4, 32)
    assert check_fused_desc(d) is d and d.name.startswith("wsp_fused_bf16_sm90_32x64x16")


DESCS = [fused_desc("fp16", 4, 32), pair_desc("fp16", 64, fb=64, dense_map=True),
         ws_desc("fp16", 32, dense_map=True),
         rs_desc("fp16", 32, dense_map=True, cmap=True),
         rs_desc("fp16", 32, dense_map=True, sched="persistent", pipe="halves"),
         rs_desc("fp16", 32, fb=96, full_rows=True, sched="persistent"),
         rs_desc("fp16", 32, dense_map=True, rmcast=2),
         rs_desc("fp16", 32, dense_map=True, sched="persistent", rmcast=2),
         cp_desc("fp16"), cp_desc("fp16", bc=32, vpair=True, epi="async"), cp_desc("fp16", 64, fb=192, full_rows=True),
         cp_desc("fp16", bc=32, vpair=True, epi="tma", sched="persistent", producer="light", xchg="half")]
# (compiled here: test_readme.py counts them)


def test_only_an_identity_layout_may_skip_the_inverse_map():
    """Generation 2's dense map reads packed row j as filter j: right for dense and FP, wrong for WSP-R
    even when a block keeps all MI rows (a 0.7 unbalanced layer once verified wrong on the H200 that way)."""
    W = he_winograd_weights((80, 48), 4, seed=2)
    assert layout_for(prune(W, "dense", 0.0), 4, fb=64).identity
    assert layout_for(prune(W, "fp", 0.7), 4, fb=64).identity
    rows = layout_for(prune(W, "wsp-r", 0.7, balance="unbalanced"), 4, fb=64)
    assert rows.mi == 64 and not rows.identity


def test_pair_descriptions():
    d = pair_desc("fp16", 64, fb=64, dense_map=True)
    assert d.extra_dict()["gen"] == 2 and d.extra_dict()["map"] == "dense" and d.tile == (64, 64, 16)
    assert pair_smem_bytes(64, 64, 64, 3, 576) <= 227 * 1024
    assert pair_desc("bf16", 20, fb=64).tile[0] == 32                      # rows round up to 16
    with pytest.raises(Unsupported, match="'dense' with MI == FB"):
        pair_desc("fp16", 32, fb=64, dense_map=True)
    with pytest.raises(Unsupported, match="3 or more"):
        pair_desc("fp16", 64, stages=2)
    with pytest.raises(Unsupported, match="MI in 16..64"):                  # over 128 accumulators
        pair_desc("fp16", 80, fb=80)


# --------------------------------------------------------------------------------------------- generation 3
def _refuses_what_wgmma_kernels_cannot_build(make, too_deep: int) -> None:
    """What generations 3 and 4 (families/fused._check_wgmma) refuse, each in one line naming the fix."""
    with pytest.raises(Unsupported, match="MI in"):                           # 8 positions x 24 rows: 192 regs
        make("fp16", 48, fb=64)
    with pytest.raises(Unsupported, match="'dense' with MI == FB"):
        make("fp16", 16, fb=32, dense_map=True)
    with pytest.raises(Unsupported, match="ring takes"):
        make("fp16", 32, stages=too_deep)
    with pytest.raises(Unsupported, match="fp16, bf16"):
        make("tf32", 32)


def test_ws_descriptions():
    d = ws_desc("fp16", 32, dense_map=True)
    x = d.extra_dict()
    assert (x["gen"], x["warps"], x["map"], x["fb"], x["p"]) == (3, 12, "dense", 32, 4)
    assert d.tile == (32, 64, 16) and d.stages == 4 and check_fused_desc(d) is d
    assert ws_smem_bytes(32, 32, 4) <= 227 * 1024 < ws_smem_bytes(32, 32, 5)   # the deepest ring that fits
    assert ws_desc("bf16", 20, fb=64).tile[0] == 32                           # rows round up to 16
    assert ws_desc("fp16", 16, fb=32).tile[0] == 16
    _refuses_what_wgmma_kernels_cannot_build(ws_desc, too_deep=5)
    with pytest.raises(Unsupported, match="sm90"):
        check_fused_desc(d.__class__(**{**d.as_dict(), "arch": "sm80", "extra": d.extra}))


def test_ws_names_and_cache_keys_are_distinct_from_generation_2():
    from cutlass_wsp.kernels.description import KernelDesc

    g3 = ws_desc("fp16", 32, dense_map=True)
    g2 = pair_desc("fp16", 32, fb=32, dense_map=True)
    assert "_gen3_" in g3.name and "_gen2_" in g2.name and "warps12" in g3.name
    names = {ws_desc(dt, mi, dense_map=dm).name for dt in ("fp16", "bf16") for mi in (16, 32) for dm in (False, True)}
    assert len(names) == 8
    assert KernelDesc.from_dict(g3.as_dict()) == g3                          # round-trips (tuning store, manifests)


def _template_constants(src: str) -> dict[str, int]:
    """The `constexpr int` constants of the rendered generation-3 kernel, evaluated in order (C integer
    division and the ternary max), so the host's budget math is checked against the template's own."""
    import re

    env: dict[str, int] = {"align1k": lambda b: (b + 1023) // 1024 * 1024}
    body = src[src.index("namespace wsp_kernel {\n\nconstexpr int P ="):]
    for name, expr in re.findall(r"^constexpr int (\w+) = ([^;]+);", body, re.M):
        expr = re.sub(r"//.*", "", expr).replace("/", "//")
        expr = re.sub(r"(\w+) > (\w+) \? (\w+) : (\w+)", r"(\3 if \1 > \2 else \4)", expr)
        env[name] = eval(expr, {}, env)                                     # noqa: S307 -- our own template
    return env


@pytest.mark.parametrize("dtype,mi,dense,stages", [("fp16", 32, True, 4), ("bf16", 32, False, 4), ("fp16", 16, False, 4),
                                                   ("fp16", 32, False, 2), ("bf16", 16, False, 3)])
def test_ws_renders_with_strict_undefined_and_its_smem_matches_the_host(dtype, mi, dense, stages):
    from cutlass_wsp.kernels.emitter import render

    d = ws_desc(dtype, mi, fb=mi if dense else 2 * mi, dense_map=dense, stages=stages)
    src = render(d)                                                         # StrictUndefined: a missing name raises
    assert "{{" not in src and "{%" not in src
    ab = "BF16BF16" if dtype == "bf16" else "F16F16"
    assert f"MMA_64x{mi}x16_F32{ab}_SS" in src and "GMMA::Layout_K_SW32_Atom" in src
    assert "SM90_TMA_LOAD_4D" in src and "SM90_BULK_COPY_G2S" in src and "cuTensorMapEncodeTiled" in src
    assert ("gmma<16>(da" in src) == (mi == 32 and not dense)              # the narrow product for pruned tiles
    assert "mma.sync" not in src and "SM80_16x8x16" not in src              # no generation-2 MMA path
    c = _template_constants(src)
    assert (c["MI"], c["BT"], c["STAGES"], c["FB"], c["THREADS"]) == (mi, 64, stages, d.extra_dict()["fb"], 384)
    assert c["SMEM_BYTES"] == ws_smem_bytes(mi, d.extra_dict()["fb"], stages) <= 227 * 1024
    assert c["ITEMS"] * c["TRANSFORM_THREADS"] == c["BT"] * c["GROUPS"]


def test_generations_1_and_2_render_without_generation_3():
    from cutlass_wsp.kernels.emitter import render

    for d in (fused_desc("fp16", 4, 32), pair_desc("bf16", 64, fb=64)):
        src = render(d)
        assert "wgmma" not in src and "SM90_TMA_LOAD_4D" not in src and "SM80_16x8x16" in src


def test_ws_weights_are_packed_per_chunk_with_the_32_byte_swizzle():
    rng = np.random.default_rng(0)
    U = rng.standard_normal((2, 16, 32, 48)).astype(np.float32)
    P = pack_ws_weights(U)
    assert P.shape == (2, 3, 16, 32, 16) and P.flags.c_contiguous
    for j in range(32):                                  # row j's 16-byte halves swap on every 4th row
        for c in range(16):
            phys = ((c >> 3) ^ ((j >> 2) & 1)) * 8 + (c & 7)
            np.testing.assert_array_equal(P[:, :, :, j, phys], U[:, :, j, c::16].transpose(0, 2, 1))
    with pytest.raises(InputError, match="multiple of 16"):
        pack_ws_weights(U[..., :40])


def test_ws_is_built_on_request_only():
    """Generation 3 (measured slower than generation 4): the default kernel and the tuner's menu leave it out; a
    layer asks for it by description (FB 32 layouts: MI <= 32). The default is generation 4 where its 32 rows per
    position hold the layout (FB 32 dense), generation 5 for FB 64 dense (MI 64)."""
    from cutlass_wsp.families.fused import FusedLayer, FusedTuneProblem, candidates_for, default_desc

    W = he_winograd_weights((64, 48), 4, seed=4)
    for fb, gen in ((32, 4), (64, 5)):
        prob = FusedTuneProblem.of(layout_for(prune(W, "dense", 0.0), 4, fb=fb), 3, 13, 11)
        assert default_desc(prob, "fp16").extra_dict()["gen"] == gen
        assert all(d.extra_dict().get("gen", 1) != 3 for d in candidates_for(prob, "fp16"))
    lay = layout_for(prune(W, "wsp-r", 0.7, balance="unbalanced"), 4, fb=32)
    layer = FusedLayer(lay, "fp16", ws_desc("fp16", lay.mi, fb=32, dense_map=lay.identity))
    assert layer.desc.extra_dict()["gen"] == 3
    with pytest.raises(InputError, match="MI="):
        FusedLayer(layout_for(prune(W, "dense", 0.0), 4, fb=64), "fp16", ws_desc("fp16", 32, fb=32))


# --------------------------------------------------------------------------------------------- generation 4
def test_rs_descriptions():
    d = rs_desc("fp16", 32, dense_map=True)
    x = d.extra_dict()
    assert (x["gen"], x["warps"], x["map"], x["fb"], x["p"]) == (4, 8, "dense", 32, 4)
    assert d.tile == (32, 64, 16) and d.stages == 6 and check_fused_desc(d) is d   # no V buffers: a deeper ring
    assert rs_smem_bytes(32, 32, 6) <= 227 * 1024 < rs_smem_bytes(32, 32, 6, rawch=24)
    assert rs_desc("fp16", 32, rawch=24).stages == 4
    assert "_gen4_" in d.name and d.name != ws_desc("fp16", 32, dense_map=True).name
    assert rs_desc("bf16", 20, fb=64).tile[0] == 32 and rs_desc("fp16", 16, fb=32).tile[0] == 16
    _refuses_what_wgmma_kernels_cannot_build(rs_desc, too_deep=7)
    with pytest.raises(Unsupported, match="needs"):
        rs_desc("fp16", 32, stages=6, rawch=24)
    with pytest.raises(Unsupported, match="channels per pixel"):
        rs_desc("fp16", 32, rawch=32)
    assert "rawch16" in d.name and "rawch24" in rs_desc("fp16", 32, dense_map=True, rawch=24).name
    # the chunk map (WSP-CB) is an option of its own: off, the description is the one it was before it existed
    assert "cmap" not in x and "cmap" not in d.name
    m = rs_desc("fp16", 32, dense_map=True, cmap=True)
    assert m.extra_dict()["cmap"] == "blocks" and "_cmapblocks_" in m.name and m.name.replace("cmapblocks_", "") == d.name and check_fused_desc(m) is m
    with pytest.raises(Unsupported, match="chunk map 'rows'"):
        check_fused_desc(d.__class__(**{**d.as_dict(), "extra": d.extra + (("cmap", "rows"),)}))


@pytest.mark.parametrize("dtype,mi,dense,stages,rawch,cmap", [
    ("fp16", 32, True, 4, 16, False), ("bf16", 32, False, 4, 16, False), ("fp16", 16, False, 3, 16, False),
    ("fp16", 32, True, 4, 24, False), ("fp16", 32, True, 4, 16, True), ("bf16", 32, False, 4, 16, True),
    ("fp16", 16, False, 2, 16, True), ("fp16", 32, True, 6, 16, False)])
def test_rs_renders_with_strict_undefined_and_its_smem_matches_the_host(dtype, mi, dense, stages, rawch, cmap):
    from cutlass_wsp.kernels.emitter import render

    d = rs_desc(dtype, mi, fb=mi if dense else 2 * mi, dense_map=dense, stages=stages, rawch=rawch, cmap=cmap)
    src = render(d)
    assert "{{" not in src and "{%" not in src
    ab = "BF16BF16" if dtype == "bf16" else "F16F16"
    assert f"MMA_64x{mi}x16_F32{ab}_RS" in src and "_SS<" not in src          # A from registers
    assert ("gmma<16>(areg[a]" in src) == (mi == 32 and not dense)
    c = _template_constants(src)
    assert (c["MI"], c["BT"], c["STAGES"], c["FB"], c["THREADS"], c["RAW_CH"]) == (mi, 64, stages, d.extra_dict()["fb"],
                                                                                 256, rawch)
    assert c["SMEM_BYTES"] == rs_smem_bytes(mi, d.extra_dict()["fb"], stages, rawch=rawch) <= 227 * 1024
    assert f"ROTATE = {'true' if rawch == 16 else 'false'}" in src
    # no trap inside the mainloop (ptxas would serialize every wgmma, C7518): only after the last wait
    loop = src[src.index("bool late = false;"):src.index("if (late) __trap();")]
    assert "__trap" not in loop and "wait_bar(" not in loop
    assert "(cuuint32_t)RAW_CH, (cuuint32_t)p.RW" in src                     # the TMA box is RAW_CH channels wide
    # the chunk map: read per chunk, made warp-uniform before the products it gates, required by the host check
    assert ("if (!((keep >> a) & 1u)) continue;" in src) == cmap and ("cmap" in src) == cmap
    if cmap:
        assert src.count("__shfl_sync(0xffffffffu, kword, 0)") == 2          # once per warpgroup's mainloop
        assert "if (a.gather_index == nullptr)" in src and "p.cmap = " in src
        assert loop.index("const uint32_t keep") < loop.index("warpgroup_arrive();")


@pytest.mark.parametrize("mcast", [2, 4])
def test_rs_multicast_renders_a_cluster_kernel_and_its_smem_matches_the_host(mcast):
    from cutlass_wsp.kernels.emitter import render

    d = rs_desc("fp16", 32, fb=32, dense_map=True, mcast=mcast)
    assert f"_mcast{mcast}_" in d.name and d.extra_dict()["mcast"] == mcast
    assert "mcast" not in rs_desc("fp16", 32, dense_map=True).name            # 1: no extra, same cache keys
    src = render(d)
    assert "{{" not in src and "{%" not in src
    assert f"__cluster_dims__({mcast}, 1, 1)" in src and ".multicast::cluster" in src
    assert src.count("cute::cluster_sync();") == 2                           # after the barriers' init, before exit
    assert "(units + MCAST - 1) / MCAST * MCAST" in src                       # whole clusters of rectangles
    c = _template_constants(src)
    assert c["MCAST"] == mcast and c["SMEM_BYTES"] == rs_smem_bytes(32, 32, d.stages, mcast=mcast) <= 227 * 1024
    assert c["UH_BYTES"] % (16 * mcast) == 0                                  # bulk-copy slices of whole 16 bytes
    with pytest.raises(Unsupported, match="sharing the weights"):
        rs_desc("fp16", 32, mcast=3)


@pytest.mark.parametrize("rmcast", [2, 4])
@pytest.mark.parametrize("dense,full,sched", [(True, False, None), (False, True, None), (False, False, None),
                                              (True, False, "persistent"), (False, True, "persistent")])
def test_rs_region_multicast_renders_a_cluster_of_filter_blocks_and_its_smem_matches_the_host(rmcast, dense, full,
                                                                                             sched):
    """rmcast k: the k CTAs of a cluster hold one tile rectangle and consecutive filter blocks (persistent: walk group
    items of k blocks together); each chunk's region is loaded once, by the owner of its stage, and multicast into
    every CTA; every warp of the cluster releases a stage to its owner, and thread 0 arms its stage for the next
    chunk. The grid rounds up to whole clusters (a CTA past the last block redoes it). Without the option the
    kernel is unchanged."""
    from cutlass_wsp.kernels.emitter import render

    fb = 96 if full else 32
    kw = dict(fb=fb, dense_map=dense, full_rows=full, **({"sched": sched} if sched else {}))
    if full and sched and rmcast == 4:   # the persistent full map fits 3 stages, no multiple of 4: refused
        with pytest.raises(Unsupported, match="a ring of a multiple of 4 stages"):
            rs_desc("fp16", 32, rmcast=rmcast, **kw)
        return
    d = rs_desc("fp16", 32, rmcast=rmcast, **kw)
    plain = rs_desc("fp16", 32, stages=d.stages, **kw)
    assert f"_rmcast{rmcast}_" in d.name and d.name.replace(f"rmcast{rmcast}_", "") == plain.name
    assert "rmcast" not in plain.extra_dict() and d.stages % rmcast == 0
    src, base = render(d), render(plain)
    assert "{{" not in src and "{%" not in src and "RMCAST" not in base and "rawfree" not in base
    dims = f"({rmcast}, 1, 1)" if sched else f"(1, {rmcast}, 1)"
    assert f"__cluster_dims__{dims}" in src and "SM90_TMA_LOAD_MULTICAST_4D::copy" in src
    assert "SM90_TMA_LOAD_4D::copy" not in src                                # every region load multicasts
    assert src.count("cute::cluster_sync();") == 2                            # after the barriers' init, before exit
    assert "p.raw_bytes = p.BI * p.RH * p.RW * RAW_CH * 2;" in src
    if sched:   # whole clusters, each walking group items; the block of each group by rank, clamped (the weights
        # and the item loop; the region needs only the rectangle)
        assert "const dim3 grid(static_cast<unsigned>(clusters * RMCAST));" in src
        assert "cudaOccupancyMaxActiveClusters(&resident, wsp_fused_layer, &cfg)" in src   # only resident clusters
        assert src.count("block = min(bg * RMCAST + (static_cast<int>(blockIdx.x) % RMCAST), p.blocks - 1);") == 2
    else:
        assert "(a.M + RMCAST - 1) / RMCAST * RMCAST" in src and "p.blocks = static_cast<int>(a.M);" in src
        assert "min(static_cast<int>(blockIdx.y), p.blocks - 1)" in src
    # per chunk: thread 0 loads the owned chunks every warp released (waiting only for chunk k); each warp's lane 0
    # releases the stage to its owner after its products are issued, and thread 0 arms the stage's next chunk
    assert src.count("  load_raw(next_raw);") == 2 and src.count("wait_late(&rawfree[st], ph, late);") == 2
    if not sched:   # one-shot: the first ring's own stages are requested before the tile table and the maps load
        kick = src.index("if (next_raw % RMCAST == static_cast<int>(rank)) load_raw(next_raw);")
        assert src.index("cute::cluster_sync();") < kick < src.index("tiles[t] = make_int4(") < src.index("inv[e] =")
    else:
        assert "if (next_raw % RMCAST" not in src
    assert src.count("Barrier::arrive(&rawfree[s], static_cast<uint32_t>(s % RMCAST), 1u);") == 2
    assert src.count("Barrier::arrive_and_expect_tx(&rawfull[s], p.raw_bytes);") == 2
    assert "Barrier::arrive(&rawempty[s]);" not in src and "Barrier::init(&rawfree[s], RMCAST * WARPS);" in src
    loop = src[src.index("if (c == 0) {"):]
    assert loop.index("warpgroup_commit_batch();") < loop.index("Barrier::arrive(&rawfree[s]")
    c = _template_constants(src)
    assert c["RMCAST"] == rmcast and c["NBAR"] == 3 * c["STAGES"] + 2 * c["USTAGES"]
    smem = rs_smem_bytes(32, fb, d.stages, rmcast=rmcast, persistent=sched and ("regs" if dense else "smem"))
    assert c["SMEM_BYTES"] == smem <= 227 * 1024
    with pytest.raises(Unsupported, match="sharing the input region"):
        rs_desc("fp16", 32, rmcast=3)
    with pytest.raises(Unsupported, match="multiple of"):
        rs_desc("fp16", 32, dense_map=True, rmcast=2, stages=5)
    with pytest.raises(Unsupported, match="weights multicast"):
        rs_desc("fp16", 32, dense_map=True, rmcast=2, mcast=2)


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("bc", [16, 32])
def test_generation_5_renders_a_pair_splitting_the_columns_and_its_smem_matches_the_host(dtype, bc):
    """cp_desc: a cluster pair (consecutive x) shares a tile rectangle and a filter block of N = 64; warpgroup w of
    rank r transforms column 2r + w of V (B^T's row: +1 at j0, sgn at j1) into the A registers of 4 wgmma m64n64k16
    per k step (bc / 16 of them per chunk); the region is multicast to both CTAs with the region multicast's ring
    protocol; the epilogue trades rows within the CTA and columns across the pair (distributed shared memory)."""
    from cutlass_wsp.kernels.emitter import render

    d = cp_desc(dtype, bc=bc)
    assert d.extra_dict()["gen"] == 5 and d.tile == (64, 64, bc) and d.stages % 2 == 0 and "_gen5_" in d.name
    assert f"_64x64x{bc}_" in d.name
    src = render(d)
    assert "{{" not in src and "{%" not in src
    assert "__cluster_dims__(PAIR, 1, 1)" in src and "MMA_64x64x16_F32" in src and "_RS<" in src
    assert "SM90_TMA_LOAD_MULTICAST_4D::copy" in src and "SM90_TMA_LOAD_4D::copy" not in src
    assert "const dim3 grid(static_cast<unsigned>(units * PAIR), a.M);" in src
    # F(2,3)'s B^T rows as (+1 at j0, sgn at j1): d0 - d2, d1 + d2, d2 - d1, d3 - d1
    # (columns 1 and 2 read adjacent patch columns: their tiles may swap the two loads against bank conflicts)
    for c, (j0, j1, sg, sw) in enumerate([(0, 2, "-1.0f", "false"), (1, 2, "1.0f", "true"), (2, 1, "-1.0f", "true"),
                                          (3, 1, "-1.0f", "false")]):
        assert f"if (col == {c}) {{ j0 = {j0}; j1 = {j1}; sgn = {sg}; swappable = {sw}; }}" in src
    # the ring: owned stages loaded when every warp of the pair released them, each warp releasing after its issue
    assert "if (st % PAIR != static_cast<int>(rank)) continue;" in src
    # the first ring's own stages are requested right after the pair meets, before the tile table is built
    kick = src.index("if (next_raw % PAIR == static_cast<int>(rank)) load_raw(next_raw);")
    assert src.index("cute::cluster_sync();") < kick < src.index("tiles[t] = make_int4(") < src.index("swapped(tt)")
    loop = src[src.index("for (int k = 0; k < nch; ++k) {"):]
    assert loop.index("warpgroup_commit_batch();") < loop.index("Barrier::arrive(&rawfree[s]")
    # the loop's trip count and thread roles come from registers ptxas cannot re-derive (no LDC / S2R in the loop)
    assert "const int nch = p.chunks + zero, tid_loop = tid + zero;" in src and "p.chunks" not in loop[:loop.index(
        "warpgroup_wait<0>();\n  fence_acc(acc);\n  if (late) __trap();")]
    assert src.count("cute::cluster_sync();") == 3   # after init; after the mainloops; after the remote partials
    assert "st.shared::cluster.f32" in src and "mapa.shared::cluster.u32" in src
    c = _template_constants(src)
    assert c["SMEM_BYTES"] == cp_smem_bytes(64, d.stages, bc=bc) <= 227 * 1024 and c["PPC"] == 4 and c["NACC"] == 32
    # a chunk: one load of CPI channels per pixel and lane (8 or 16 bytes), KSTEPS x 4 wgmma on operand tiles of 16 k
    assert (c["KSTEPS"], c["CPI"], c["RAW_CH"], c["USTAGES"]) == (bc // 16, bc // 4, bc, cp_ustages(d.stages, bc))
    assert (d.stages, c["USTAGES"]) == ((6, 7) if bc == 16 else (4, 2))   # the deepest rings that fit
    assert f"using Ld = {'uint2' if bc == 16 else 'uint4'};" in src
    assert "gmma<MI>(areg[st][a], desc_at(ua + (st * PPC + a) * ((MI * KS * 2) >> 4), u_hi), acc[a]," in src
    # the bank rule's phase and pixel slots: 128 bytes per phase, 4 lanes of CPI channels per tile
    assert (c["TPH"], c["PXG"]) == ((4, 4) if bc == 16 else (2, 2))
    with pytest.raises(Unsupported, match="generation-5 tile"):
        cp_desc(dtype, 80)
    with pytest.raises(Unsupported, match="generation-5 tile"):
        cp_desc(dtype, bc=48)
    with pytest.raises(Unsupported, match="stages"):
        cp_desc(dtype, stages=5)
    if bc == 32:   # 6 raw stages of 64-byte pixels do not fit
        with pytest.raises(Unsupported, match="needs"):
            cp_desc(dtype, stages=6, bc=32)
    # vertical tile pairs: an option of its own (off, the description and source are what they were); rectangles of even
    # tile rows, a table of pairs, 6 pixel rows loaded per column from tile 0's addresses, the same rings and epilogue
    v = cp_desc(dtype, bc=bc, vpair=True)
    assert v.extra_dict()["tiles"] == "vpair" and "tiles" not in d.extra_dict() and "_tilesvpair_" in v.name
    assert v.name.replace("tilesvpair_", "") == d.name and check_fused_desc(v) is v
    vs = render(v)
    assert "LROWS" not in src and "vpair" not in src and "for (int by = 1; by <= BT; by *= 2)" in src
    assert "constexpr int LROWS = P + MO;" in vs and "for (int by = 2; by <= BT; by *= 2)" in vs
    assert vs.count("*reinterpret_cast<const Ld*>(raw + r * row_bytes + la[0]);") == 1 and "la[tt]);" not in vs
    assert _template_constants(vs)["SMEM_BYTES"] == c["SMEM_BYTES"]
    with pytest.raises(Unsupported, match="tile order 'hpair'"):
        check_fused_desc(d.__class__(**{**d.as_dict(), "extra": d.extra + (("tiles", "hpair"),)}))


@pytest.mark.parametrize("bc", [16, 32])
def test_generation_5s_full_map_renders_the_epilogue_the_emulation_runs(bc):
    """cp_desc(full_rows=True): MI = 64 packed rows per position stand for a filter block of FB (row-pruned layouts);
    the mainloop is the dense map's; the epilogue stores each thread's fragments to ms where the rings were (a swapped
    tile's times sgn), loads the block's inverse map, and each rank transforms half the filter pairs reading the other
    rank's columns remotely, the expressions tests/test_gen5_emulation.py runs. Bad blocks are refused in one line."""
    from cutlass_wsp.families.fused import cp_full_epilogue_bytes
    from cutlass_wsp.kernels.emitter import render

    d = cp_desc("fp16", 64, fb=192, full_rows=True, bc=bc)
    dense = cp_desc("fp16", 64, bc=bc)
    assert d.extra_dict()["map"] == "full" and "_fb192_" in d.name and "_mapfull_" in d.name and d.stages == dense.stages
    src, base = render(d), render(dense)
    assert "{{" not in src and "{%" not in src and "ld_remote" not in base and "sinv" not in base
    for expr in ["const int t = w4 * 16 + g + 8 * h, j = q8 * 8 + 2 * q;",
                 "*reinterpret_cast<float2*>(ms + ((c * PPC + a) * BT + t) * LDJ + j) =",
                 "make_float2(f * acc[a][4 * q8 + 2 * h], f * acc[a][4 * q8 + 2 * h + 1]);",
                 "const float f0 = swapped(0) ? sgn : 1.0f, f1 = swapped(1) ? sgn : 1.0f;",
                 "for (int e = tid; e < PP * FB; e += THREADS) sinv[e] = p.inv[(long long)block * PP * FB + e];",
                 "const int nfp = (NFP - static_cast<int>(rank) + 1) / 2;",
                 "const int fp = 2 * (e % nfp) + static_cast<int>(rank), t = e / nfp;",
                 "const int off = (((i % 2) * PPC + i / P) * BT + t) * LDJ;",
                 "if ((i % P) / 2 == static_cast<int>(rank)) {",
                 "mx[i / P][i % P] = j0 >= 0 ? ld_remote(ms_remote + 4 * (off + j0)) : 0.0f;"]:
        assert expr in src, expr
    # after the mainloops; ms written; the partner done reading: one more than the dense map's exchange needs
    assert src.count("cute::cluster_sync();") == 4 and "st.shared::cluster" not in src
    c = _template_constants(src)
    assert c["SMEM_BYTES"] == cp_smem_bytes(64, d.stages, bc=bc)
    assert cp_full_epilogue_bytes(64, 192) == 2 * 4 * 64 * 68 * 4 + 16 * 192 * 2 <= c["BIG_BYTES"]
    for bad in (dict(fb=96, full_rows=False), dict(fb=48, full_rows=True), dict(fb=193, full_rows=True),
                dict(fb=384, full_rows=True)):
        with pytest.raises(Unsupported, match="generation-5 tile"):
            cp_desc("fp16", 64, bc=bc, **bad)


def test_generation_5s_rendered_column_tables_give_the_winograd_transforms():
    """The per-column constants the kernel is rendered with, read back from its source: each warpgroup's column of
    V from t[k] = d[k][j0] + sgn d[k][j1] and B^T's rows equals (B^T d B)[:, c], and the epilogue's A^T[v][c] with
    the rows' reduction adds up to A^T M A over the four columns (the pair's four warpgroups). A tile that loads its
    columns swapped (adjacent j0, j1: against bank conflicts) transforms into sgn V, and the epilogue's factor for it,
    sgn A^T[v][c], gives the same output."""
    import re

    from cutlass_wsp.kernels.emitter import render
    from cutlass_wsp.winograd import matrices_float

    src = render(cp_desc("fp16"))
    AT, _, BT = matrices_float(2)
    cols = {int(c): (int(j0), int(j1), float(sg), sw == "true") for c, j0, j1, sg, sw in
            re.findall(r"if \(col == (\d)\) \{ j0 = (\d); j1 = (\d); sgn = (-?[\d.]+)f; swappable = (\w+); \}", src)}
    av = [[float(x) for x in re.findall(r"col == \d \? (-?[\d.]+)f", a)]
          for a in re.findall(r"const float a = ([^;]+);", src)]
    assert sorted(cols) == [0, 1, 2, 3] and len(av) == 2 and all(len(a) == 4 for a in av)
    assert [cols[c][3] for c in range(4)] == [abs(cols[c][0] - cols[c][1]) == 1 for c in range(4)] == \
        [False, True, True, False]
    assert "av[0][0] = swapped(0) ? sgn * a : a;" in src and "av[1][1] = swapped(1) ? sgn * a : a;" in src
    assert "la[tt] = src + (sw ? j1 : j0) * (RAW_CH * 2);" in src
    assert "lb[tt] = src + (sw ? j0 : j1) * (RAW_CH * 2);" in src
    rng = np.random.default_rng(5)
    d = rng.standard_normal((4, 4))
    V = BT @ d @ BT.T
    M = rng.standard_normal((4, 4))
    for swapped in (False, True):
        Y = np.zeros((2, 2))
        for c, (j0, j1, sg, swappable) in cols.items():
            a, b = (j1, j0) if swapped and swappable else (j0, j1)
            t = d[:, a] + sg * d[:, b]         # the loop's fma2(db, sg, da) on whatever the two loads read
            f = sg if swapped and swappable else 1.0
            np.testing.assert_allclose(f * (BT @ t), V[:, c], atol=1e-12)
            Z = AT @ (f * M[:, c])             # the accumulators of a swapped tile hold f times its products
            Y += np.outer(Z, [f * av[0][c], f * av[1][c]])
        np.testing.assert_allclose(Y, AT @ M @ AT.T, atol=1e-12)


def test_generation_5_packs_two_k_steps_per_chunk_in_the_channels_each_lane_loads():
    """bc = 32: lane q loads channels 8q .. 8q + 7 of a pixel; k step st's wgmma must meet channels 8q + 4 st + 0, 1
    in k slots 2q, 2q + 1 and + 2, 3 in slots 2q + 8, 2q + 9. Each chunk is [column][step][row][MI][16], the operand
    tiles swizzled as generation 4's (32-byte rows, halves swapped on every 4th row); odd channel counts padded."""
    rng = np.random.default_rng(4)
    U = rng.standard_normal((2, 16, 64, 48)).astype(np.float32)      # 48 channels: padded to 64
    X = pack_cp_weights(U, 32).reshape(2, 2, 4, 2, 4, 64, 16)         # [block][chunk][col][step][row][filter][slot]
    swz = ((np.arange(64) >> 2) & 1).astype(bool)
    Y = X.copy()
    Y[..., swz, :] = np.concatenate([X[..., swz, 8:], X[..., swz, :8]], axis=-1)
    Upad = np.concatenate([U, np.zeros((2, 16, 64, 16), np.float32)], axis=3)
    slots = np.arange(16)
    q, e, hi = (slots % 8) // 2, slots % 2, slots // 8
    for st in range(2):
        ch = 8 * q + 4 * st + 2 * hi + e                                  # the channel each k slot holds
        assert (cp_k_channels(32)[16 * st:16 * st + 16] == ch).all()
        for c in range(4):
            for r in range(4):
                for j in range(2):
                    np.testing.assert_array_equal(Y[:, j, c, st, r], Upad[:, 4 * r + c][..., 32 * j + ch])
    assert (cp_k_channels(16)[rs_k_slots()] == np.arange(16)).all()     # at 16: generation 4's k order
    with pytest.raises(InputError, match="channels per chunk"):
        pack_cp_weights(U, 24)


def test_generation_5_packs_each_column_contiguously():
    W = he_winograd_weights((64, 32), 4, seed=3)
    lay = dense_layout(W, 4, fb=64)
    P = pack_cp_weights(lay.U).reshape(lay.blocks, lay.cpad // 16, 16, 64, 16)
    R = pack_rs_weights(lay.U).reshape(lay.blocks, lay.cpad // 16, 16, 64, 16)
    for c in range(4):
        for r in range(4):   # packed position 4c + r is position 4r + c, k slots as generation 4
            np.testing.assert_array_equal(P[:, :, 4 * c + r], R[:, :, 4 * r + c])
    with pytest.raises(InputError, match="p = 4"):
        pack_cp_weights(np.zeros((1, 36, 64, 16), np.float32))


@pytest.mark.parametrize("dense,full,cmap", [(True, False, False), (False, True, False), (False, False, False),
                                              (True, False, True)])
def test_rs_halves_pipeline_renders_two_groups_per_chunk(dense, full, cmap):
    """pipe 'halves': each warpgroup commits its 8 positions' products as two groups (one per V row) and waits
    with wgmma.wait_group 1 before rewriting a row's A registers, so a row's transform runs under the other
    row's products; the leader's weight refill comes after the second group's issue (a branch between the two
    issues made ptxas serialize every wgmma, C7513). Without the option the kernel is unchanged."""
    from cutlass_wsp.kernels.emitter import render

    d = rs_desc("fp16", 32, fb=32 if not full else 96, dense_map=dense, full_rows=full, cmap=cmap, pipe="halves")
    plain = rs_desc("fp16", 32, fb=32 if not full else 96, dense_map=dense, full_rows=full, cmap=cmap)
    assert "_pipehalves_" in d.name and d.name.replace("pipehalves_", "") == plain.name
    assert "pipe" not in plain.extra_dict()                                    # the default adds no extra
    src, base = render(d), render(plain)
    assert "{{" not in src and "{%" not in src
    loop = src[src.index("bool late = false;"):src.index("if (late) __trap();")]
    # per warpgroup's loop: two waits for one group each, two commits; one full wait, after both loops
    assert loop.count("warpgroup_wait<1>();") == 4 and loop.count("warpgroup_commit_batch();") == 4
    assert loop.count("warpgroup_wait<0>();") == 1 and loop.rstrip().endswith("fence_acc(acc);")
    assert "__trap" not in loop
    for wg in loop.split("} else {")[:2]:
        first, second = wg.index("for (int a = 0; a < 4; ++a)"), wg.index("for (int a = 4; a < 8; ++a)")
        refill = wg.index("load_u(k - 1 + USTAGES)")
        assert first < second < refill                                         # refill after both issues
        assert wg.index("areg[4][tt] =") > first and wg.index("areg[0][tt] =") < first
    assert ("if (!((keep >> a) & 1u)) continue;" in loop) == cmap
    assert _template_constants(src)["SMEM_BYTES"] == _template_constants(base)["SMEM_BYTES"]
    assert "warpgroup_wait<1>" not in base
    with pytest.raises(Unsupported, match="pipeline 'halves' with weights multicast"):
        rs_desc("fp16", 32, dense_map=True, mcast=2, pipe="halves")
    with pytest.raises(Unsupported, match="mainloop pipeline 'thirds'"):
        rs_desc("fp16", 32, dense_map=True, pipe="thirds")


@pytest.mark.parametrize("full,vpair", [(False, True), (True, True), (False, False)])
def test_generation_5s_halves_pipeline_commits_one_group_per_k_step(full, vpair):
    """cp_desc(pipe='halves') at 32 channels a chunk: each k step's transform waits only for the previous chunk's same
    step (wgmma.wait_group 1) and its 4 products are their own commit group, so the transform runs under the other
    step's products; the weight wait comes before the first group, the refill of chunk k - 1's stage after the second
    (after both waits, and no branch between the issues: C7513). The same data path as without it (the transform's
    text once, in both), the same shared memory; refused at 16 channels a chunk, where one group per chunk is all."""
    from cutlass_wsp.kernels.emitter import render

    kw = dict(bc=32, vpair=vpair, **(dict(fb=192, full_rows=True) if full else {}))
    d, plain = cp_desc("fp16", 64, pipe="halves", **kw), cp_desc("fp16", 64, **kw)
    assert d.extra_dict()["pipe"] == "halves" and "pipe" not in plain.extra_dict()
    assert "_pipehalves_" in d.name and d.name.replace("pipehalves_", "") == plain.name and check_fused_desc(d) is d
    src, base = render(d), render(plain)
    assert "{{" not in src and "{%" not in src and "warpgroup_wait<1>" not in base
    loop = src[src.index("bool late = false;"):src.index("if (late) __trap();")]
    step = loop[loop.index("for (int st = 0; st < KSTEPS; ++st) {"):]
    assert loop.count("warpgroup_wait<1>();") == 1 and loop.count("warpgroup_commit_batch();") == 1
    assert loop.count("warpgroup_wait<0>();") == 1 and loop.rstrip().endswith("fence_acc(acc);")
    wait1, transform = step.index("warpgroup_wait<1>();"), step.index("areg[st][0][tt] = to_a(v.h[0]);")
    uwait, issue = step.index("wait_late(&uf[su], uphase, late);"), step.index("gmma<MI>(areg[st][a]")
    commit, refill = step.index("warpgroup_commit_batch();"), step.index("load_u(k - 1 + USTAGES)")
    release = step.index("the region of this stage is read")
    assert wait1 < transform < uwait < issue < commit < refill < release
    assert "if (leader" not in step[issue:commit]
    # the transform is the one-group kernel's, per k step
    t0 = base[base.index("for (int tt = 0; tt < 2; ++tt) {\n        Pk t[P];"):]
    t0 = t0[:t0.index("    wait_late(&uf[su]")]
    assert t0 in step and t0.count("areg[st][") == 8
    assert _template_constants(src)["SMEM_BYTES"] == _template_constants(base)["SMEM_BYTES"]
    with pytest.raises(Unsupported, match="pipeline 'halves' at 16 channels"):
        cp_desc("fp16", 64, bc=16, pipe="halves")
    with pytest.raises(Unsupported, match="pipeline 'thirds'"):
        cp_desc("fp16", 64, bc=32, pipe="thirds")


@pytest.mark.parametrize("dtype,mi,pipe", [("fp16", 32, None), ("bf16", 32, "halves"), ("fp16", 16, None)])
def test_rs_persistent_ctas_walk_items_with_rings_running_on(dtype, mi, pipe):
    """sched 'persistent': one CTA per SM (the host asks the device), walking items blockIdx.x + i * gridDim.x;
    the rings' positions follow from the CTA's sequence chunk (no counters restarted per item), the item walk
    divides by multiply-shift (FastDivmod in the parameters), the register epilogue's exchange has its own region
    (the rings are refilled for the next item while it runs), two tile tables; the one-shot kernel is unchanged."""
    from cutlass_wsp.kernels.emitter import render

    kw = {"pipe": pipe} if pipe else {}
    d = rs_desc(dtype, mi, dense_map=True, sched="persistent", **kw)
    one = rs_desc(dtype, mi, dense_map=True, **kw)
    assert "_schedpersistent_" in d.name and d.name.replace("schedpersistent_", "").replace(
        f"_s{d.stages}_", f"_s{one.stages}_") == one.name and "sched" not in one.extra_dict()
    src = render(d)
    assert "{{" not in src and "{%" not in src
    c = _template_constants(src)
    assert c["SMEM_BYTES"] == rs_smem_bytes(mi, mi, d.stages, persistent="regs") <= 227 * 1024
    assert d.stages == max(s for s in (2, 3, 4, 5, 6) if rs_smem_bytes(mi, mi, s, persistent="regs") <= 227 * 1024)
    assert c["XS_OFFSET"] == c["MAIN_BYTES"] and c["XS_BYTES"] == 2 * (mi // 8) * 2 * 4 * 128 * 4
    assert c["TILE_BYTES"] == 2 * 64 * 16 and "MS_BYTES" not in c and "INV_BYTES" not in c
    walk = src[src.index("for (int i = 0; i < mine; ++i) {"):src.index("if (late) __trap();")]
    assert walk.count("const int s = k % STAGES, su = k % USTAGES;") == 2 and "++s == STAGES" not in src
    assert walk.count("for (int k = k0; k < k0 + p.chunks; ++k) {") == 2
    assert walk.count("while (next_raw < kall && next_raw < k + STAGES)") == 2
    assert "reinterpret_cast<float*>(smem + XS_OFFSET)" in walk and "tile_tables + (i & 1) * BT" in walk
    assert ("warpgroup_wait<1>();" in walk) == (pipe == "halves")
    assert src.count("p.chunks_div(i, kk, j);") == 2 and "cutlass::FastDivmod(p.units)" in src
    assert "cudaDevAttrMultiProcessorCount" in src and "items < sms ? items : sms" in src
    assert "cudaDevAttrMultiProcessorCount" not in render(one) and "FastDivmod" not in render(one)
    with pytest.raises(Unsupported, match="persistent CTAs"):
        rs_desc(dtype, mi, fb=2 * mi, sched="persistent")                   # the branching row map
    with pytest.raises(Unsupported, match="persistent CTAs"):
        rs_desc(dtype, mi, dense_map=True, sched="persistent", epi="smem")
    with pytest.raises(Unsupported, match="persistent CTAs"):
        rs_desc(dtype, mi, dense_map=True, sched="persistent", cmap=True)
    with pytest.raises(Unsupported, match="CTA schedule 'stream-k'"):
        rs_desc(dtype, mi, dense_map=True, sched="stream-k")


@pytest.mark.parametrize("dtype,fb,pipe", [("fp16", 96, None), ("bf16", 320, "halves"), ("fp16", 64, None)])
def test_rs_persistent_full_map_runs_the_shared_memory_epilogue_in_two_passes(dtype, fb, pipe):
    """sched 'persistent' with the full map (WSP-RB, WSP-R in wide blocks): the shared-memory epilogue holds half
    the tiles in its own region after the rings (two passes, a barrier between them), each item's inverse map and
    tile table in their halves i % 2; never the per-thread inverse-map variant (its early return would leave the
    walk), no return anywhere in the walk."""
    from cutlass_wsp.kernels.emitter import render

    kw = {"pipe": pipe} if pipe else {}
    d = rs_desc(dtype, 32, fb=fb, full_rows=True, sched="persistent", **kw)
    assert "_mapfull_" in d.name and "_schedpersistent_" in d.name
    src = render(d)
    assert "{{" not in src and "{%" not in src
    c = _template_constants(src)
    assert c["SMEM_BYTES"] == rs_smem_bytes(32, fb, d.stages, persistent="smem") <= 227 * 1024
    assert d.stages == max(s for s in (2, 3, 4, 5, 6) if rs_smem_bytes(32, fb, s, persistent="smem") <= 227 * 1024)
    assert c["MS_OFFSET"] == c["MAIN_BYTES"] and c["MS_TILES"] == 32 and c["MS_BYTES"] == 16 * 32 * 36 * 4
    walk = src[src.index("for (int i = 0; i < mine; ++i) {"):src.index("if (late) __trap();")]
    assert "reinterpret_cast<float*>(smem + MS_OFFSET)" in walk and "for (int h2 = 0; h2 < 2; ++h2) {" in walk
    assert "if (h2) __syncthreads();" in walk and "inv_tables + (i & 1) * (INV_BYTES / 2)" in walk
    assert "return;" not in walk and "GROUPS" not in walk and "xs" not in walk
    assert ("warpgroup_wait<1>();" in walk) == (pipe == "halves")
    with pytest.raises(Unsupported, match="persistent CTAs"):
        rs_desc(dtype, 32, fb=fb, sched="persistent")                         # the branching row map
    with pytest.raises(Unsupported, match="persistent CTAs"):
        rs_desc(dtype, 32, dense_map=True, epi="smem", sched="persistent")


def test_rs_register_epilogue_renders_for_the_dense_map_only():
    from cutlass_wsp.kernels.emitter import render

    d = rs_desc("fp16", 32, fb=32, dense_map=True, epi="regs")
    # 'regs' is the dense map's default (measured faster on every layer, docs/fused.md); 'smem' adds no extra,
    # so the kernels built before the option keep their names and cache keys
    assert "_epiregs_" in d.name and rs_desc("fp16", 32, dense_map=True) == d
    assert "epi" not in rs_desc("fp16", 32, dense_map=True, epi="smem").name and "epi" not in rs_desc("fp16", 32).name
    src = render(d)
    assert "{{" not in src and "{%" not in src
    assert "keep[q][e][0][0] =" in src and "send[q][e][0][0] =" in src and "float* ms" not in src
    c = _template_constants(src)
    # the exchange: 2 warpgroups x (MI/8 x 2 filters x 2 x 2 outputs) floats x 128 threads, where the rings were
    assert c["SMEM_BYTES"] == rs_smem_bytes(32, 32, d.stages) and 2 * (32 // 8 * 2 * 4) * 128 * 4 <= c["MAIN_BYTES"]
    assert "static_assert(2 * NPART * 128 * 4 <= MAIN_BYTES" in src
    with pytest.raises(Unsupported, match="'regs' with the dense map"):
        rs_desc("fp16", 32, fb=64, epi="regs")
    with pytest.raises(Unsupported, match="epilogue"):
        rs_desc("fp16", 32, dense_map=True, epi="gmem")


def test_rs_weights_meet_the_a_fragment_k_slots():
    """Emulate what one wgmma m64nNk16 RS computes from generation 4's registers and packed U: thread (warp w,
    lane) puts channels 4q..4q+3 of tile rows g and g + 8 (g = lane / 4, q = lane % 4) into A registers 0/2 and
    1/3, i.e. A[row][2q + e] (reg 0/1) and A[row][2q + 8 + e] (reg 2/3) (PTX's register fragment of A); U comes
    from pack_rs_weights with the swizzle undone. A . U^T must equal V . W^T over the chunk's channels."""
    rng = np.random.default_rng(3)
    V = rng.standard_normal((64, 32))                    # 64 tiles x 2 chunks of 16 channels (one position)
    Wt = rng.standard_normal((1, 1, 32, 32))             # [block, position, rows, channels]
    P = pack_rs_weights(Wt)                              # [block, chunk, position, row, 16]
    assert sorted(rs_k_slots()) == list(range(16))
    for chunk in range(2):
        A = np.zeros((64, 16))
        for w in range(4):
            for lane in range(32):
                g, q = lane // 4, lane % 4
                for tt, row in enumerate((16 * w + g, 16 * w + g + 8)):
                    ch = chunk * 16 + 4 * q
                    regs = {tt: V[row, ch:ch + 2], tt + 2: V[row, ch + 2:ch + 4]}
                    for r, pair in regs.items():
                        k0 = 2 * q + (8 if r >= 2 else 0)
                        A[row, k0:k0 + 2] = pair
        B = P[0, chunk, 0].copy()                        # [row, physical k]: undo the 32-byte swizzle
        swap = ((np.arange(32) >> 2) & 1).astype(bool)
        B[swap] = np.concatenate([B[swap][:, 8:], B[swap][:, :8]], axis=1)
        np.testing.assert_allclose(A @ B.T, V[:, chunk * 16:(chunk + 1) * 16] @ Wt[0, 0, :, chunk * 16:(chunk + 1) * 16].T,
                                   rtol=1e-12, atol=1e-12)


def test_rs_chunk_map_is_one_word_per_block_chunk_and_warpgroup():
    """Bit a of word [block, chunk, h]: position 8h + a (warpgroup h's a-th, V rows 2h, 2h + 1) multiplies it."""
    rng = np.random.default_rng(7)
    keep = rng.random((3, 16, 5)) < 0.5
    words = pack_rs_chunk_map(keep)
    assert words.shape == (3, 5, 2) and words.dtype == np.uint32 and words.flags.c_contiguous
    for b in range(3):
        for k in range(5):
            for i in range(16):
                assert bool((words[b, k, i // 8] >> (i % 8)) & 1) == keep[b, i, k]
    assert (pack_rs_chunk_map(np.ones((1, 16, 2), bool)) == 0xFF).all()
    with pytest.raises(InputError, match="p = 4"):
        pack_rs_chunk_map(np.ones((1, 36, 2), bool))


def test_wsp_cb_layout_keeps_every_row_and_zeroes_its_pruned_chunks():
    from cutlass_wsp.families.fused import FusedLayer

    W = he_winograd_weights((64, 64), 4, seed=8)
    pr = prune(W, "wsp-cb", 0.75)                                     # 1 of 4 blocks per position
    lay = layout_for(pr, 4, fb=32)
    assert lay.mi == 32 and lay.identity and lay.mtiles.tolist() == [[2] * 16] * 2 and lay.pad_waste == 0.0
    chunks = lay.U.reshape(2, 16, 32, 4, 16)
    np.testing.assert_array_equal(chunks.any(axis=(2, 4)), lay.ckeep)   # a chunk's weights are zero iff pruned
    assert lay.kept_weights == int(pr.mask.sum()) == 16 * 64 * 16
    desc = rs_desc("fp16", lay.mi, fb=32, dense_map=lay.identity, cmap=lay.pruned_chunks)
    assert FusedLayer(lay, "fp16", desc).desc.extra_dict()["cmap"] == "blocks"
    with pytest.raises(InputError, match="chunk map of shape"):
        dense_layout(W, 4, ckeep=np.ones((16, 3), bool))


def test_generation_4_is_the_default_where_its_rows_hold_the_layout():
    """p = 4 defaults to generation 4 (dense map, register epilogue; row layouts: the full map) with generation 2
    behind it in the tuning menu; an identity layout in filter blocks of 64 runs generation 5 at 32 channels a chunk
    (vertical tile pairs),
    other layouts of more than 32 rows per position fall back to generation 2."""
    from cutlass_wsp.families.fused import FusedLayer, FusedTuneProblem, candidates_for, default_desc

    W = he_winograd_weights((64, 48), 4, seed=4)
    prob = FusedTuneProblem.of(layout_for(prune(W, "dense", 0.0), 4, fb=32), 3, 13, 11)
    d = default_desc(prob, "fp16")
    assert d == rs_desc("fp16", 32, fb=32, dense_map=True) and d.extra_dict()["epi"] == "regs"
    menu = candidates_for(prob, "fp16")
    assert menu[1] == rs_desc("fp16", 32, fb=32, dense_map=True, epi="smem") and menu[2].extra_dict()["gen"] == 2
    rows = FusedTuneProblem.of(layout_for(prune(W, "wsp-r", 0.7, balance="unbalanced"), 4, fb=32), 3, 13, 11)
    assert default_desc(rows, "fp16").extra_dict()["map"] == "full"
    assert candidates_for(rows, "fp16")[1].extra_dict()["map"] == "rows"
    wide = FusedTuneProblem.of(layout_for(prune(W, "dense", 0.0), 4, fb=64), 3, 13, 11)   # MI 64: generation 5
    # c = 48 <= 256: persistent pairs with the tma epilogue, the light producer and (fp16) the exchanges in fp16, then
    # one-shot; then fp32 exchanges, then thread 0 as the producer, then the async epilogue, each in both orders
    g5 = dict(bc=32, vpair=True, epi="tma")
    assert default_desc(wide, "fp16") == cp_desc("fp16", 64, sched="persistent", producer="light", xchg="half", **g5)
    assert candidates_for(wide, "fp16")[:12] == [
        cp_desc("fp16", 64, sched="persistent", producer="light", xchg="half", **g5),
        cp_desc("fp16", 64, producer="light", xchg="half", region="planes", **g5),
        cp_desc("fp16", 64, producer="light", xchg="half", **g5),
        cp_desc("fp16", 64, sched="persistent", producer="light", **g5),
        cp_desc("fp16", 64, producer="light", **g5),
        cp_desc("fp16", 64, sched="persistent", **g5), cp_desc("fp16", 64, **g5),
        cp_desc("fp16", 64, bc=32, vpair=True, epi="async", sched="persistent"),
        cp_desc("fp16", 64, bc=32, vpair=True, epi="async"),
        cp_desc("fp16", 64, bc=32, vpair=True), cp_desc("fp16", 64, bc=32), cp_desc("fp16", 64)]
    assert candidates_for(wide, "fp16")[12].extra_dict()["gen"] == 2
    # bf16: no fp16 exchanges (its 8-bit mantissa), the light producer first
    assert default_desc(wide, "bf16") == cp_desc("bf16", 64, sched="persistent", producer="light", **g5)
    deep = FusedTuneProblem.of(layout_for(prune(he_winograd_weights((64, 512), 4, seed=4), "dense", 0.0), 4, fb=64),
                               3, 13, 11)   # c = 512: one-shot first (fp16: the region in planes, then linear),
    # the persistent pair next
    assert default_desc(deep, "fp16") == cp_desc("fp16", 64, producer="light", xchg="half", region="planes", **g5)
    assert candidates_for(deep, "fp16")[1:5] == [
        cp_desc("fp16", 64, producer="light", xchg="half", **g5),
        cp_desc("fp16", 64, sched="persistent", producer="light", xchg="half", **g5),
        cp_desc("fp16", 64, producer="light", **g5),
        cp_desc("fp16", 64, sched="persistent", producer="light", **g5)]
    # a row layout of 64 packed rows, or WSP-CB's chunk map, does not take generation 5's dense map
    cb = FusedTuneProblem.of(layout_for(prune(W, "wsp-cb", 0.5), 4, fb=64), 3, 13, 11)
    assert cb.chunks and default_desc(cb, "fp16").extra_dict()["gen"] == 2
    lay = layout_for(prune(W, "wsp-r", 0.7, balance="unbalanced"), 4, fb=32)
    assert FusedLayer(lay, "fp16", rs_desc("fp16", lay.mi, fb=32)).desc.extra_dict()["gen"] == 4


@pytest.mark.compile
def test_fused_kernel_renders_and_compiles(kernel_cache):
    """The p = 4 fp16 kernel builds with its ABI (the GPU tests run it)."""
    from cutlass_wsp.kernels.emitter import render

    d = DESCS[0]
    src = render(d)
    assert "wsp_fused_layer" in src and "asm volatile(\"mma" not in src   # the MMA comes from CuTe's atom
    assert "SM80_16x8x16_F32F16F16F32_TN" in src
    for desc in DESCS:
        path = kernel_cache.get(desc)
        assert path.is_file() and path.stat().st_size > 0
    # generation 4's chunk-map branches around the wgmmas are warp-uniform: ptxas serializes none (C7518 / C7520;
    # C7519, a fence at each branch, is expected as with the row map)
    log = kernel_cache.manifest(DESCS[3])["log"] or ""
    assert "C7518" not in log and "C7520" not in log
    # the persistent walks (two commit groups per chunk; the full map's two-pass epilogue) and the region multicast:
    # no wgmma serialized for any reason (C7510-C7520: the weight refill between the two groups' issues once made it
    # C7513), no note at all
    for desc in DESCS[4:]:
        log = kernel_cache.manifest(desc)["log"] or ""
        assert "C75" not in log and "warning" not in log


# --------------------------------------------------------------------------------------------- the registry
def _ctx(pattern: str, ratio=None, balance=None, layer="resnet18:12", p=4, dtype="fp16", impl="fused", arch="sm90"):
    from cutlass_wsp.families.base import PointContext
    from cutlass_wsp.sweep.measure import Workload
    from cutlass_wsp.sweep.plan import SweepSpec, expand

    spec = SweepSpec(layers=(layer,), batches=(32,), tiles=(p,), dtypes=(dtype,), patterns=(pattern,),
                     ratios=(ratio,) if ratio else (), balances=(balance or "balanced",),
                     implementations={pattern: (impl,)})
    (pt,) = expand(spec)
    return PointContext(pt, arch=arch, workload=Workload(0))


def test_the_registry_serves_the_fused_layer_for_its_patterns_as_whole_layer_points():
    from cutlass_wsp.families import registry

    for pattern in ("dense", "fp", "wsp-r", "wsp-rb", "wsp-cb"):
        assert registry.serving(pattern, "fused").name == "fused"
        assert "fused" in registry.default_implementations(pattern)
    assert ("wsp-r", "fused") in registry.layer_points() and ("wsp-r", "cutlass") not in registry.layer_points()
    assert "fused" in registry.tunable()


@pytest.mark.parametrize("pattern,ratio,balance,layer,gen", [
    ("dense", None, None, "resnet18:12", 5), ("dense", None, None, "resnet18:1", 5), ("fp", 0.7, None, "resnet18:1", 4),
    ("fp", 0.7, None, "resnet18:12", 5),
    ("fp", 0.7, None, "vgg16:conv3_1", 4), ("wsp-r", 0.7, "unbalanced", "resnet18:12", 5),
    ("wsp-rb", 0.75, None, "resnet18:12", 5), ("wsp-r", 0.9, "balanced", "resnet18:12", 5),
    ("wsp-r", 0.7, "unbalanced", "resnet18:1", 4), ("wsp-rb", 0.7, None, "resnet18:1", 4),
    ("wsp-rb", 0.9, None, "vgg16:conv3_1", 4), ("wsp-rb", 0.7, None, "vgg16:conv3_1", 5),
    ("wsp-cb", 0.75, None, "resnet18:12", 4)])
def test_plan_names_the_kernel_and_its_tune_problem(pattern, ratio, balance, layer, gen):
    from cutlass_wsp.families import registry

    ctx = _ctx(pattern, ratio, balance, layer=layer)
    plan = registry.serving(pattern, "fused").plan(ctx)
    (desc,) = plan.descs
    assert plan.kernel == "fused" and plan.tuned is False
    assert desc.extra_dict()["gen"] == gen and check_fused_desc(desc) is desc
    prob = plan.problem
    assert prob.mi == desc.tile[0] and prob.identity == (pattern in ("dense", "fp", "wsp-cb"))
    assert sum(prob.counts) == (ctx.pruned.mask.any(axis=2).sum() if pattern != "fp" else
                                len(ctx.pruned.rows[0]) * 16)
    kf = registry.kernel_family("fused")
    # the tuner's random layout keeps exactly the problem's kept rows (and chunks) per (block, position)
    lay = prob.layout(np.random.default_rng(0))
    assert tuple(int(k) for k in (lay.inv >= 0).sum(axis=2).reshape(-1)) == prob.counts
    assert lay.identity == prob.identity and lay.mi == prob.mi
    assert bool(prob.chunks) == (pattern == "wsp-cb") == ("chunks" in prob.key_fields())
    assert ("_cmapblocks_" in desc.name) == (pattern == "wsp-cb")
    if prob.chunks:   # WSP-CB: the chunk map's kept counts, at other places
        assert tuple(int(k) for k in lay.ckeep.sum(axis=2).reshape(-1)) == prob.chunks and lay.pruned_chunks
        assert all("_cmapblocks_" in d.name for d in kf.candidates(prob, "fp16", "sm90") if d.extra_dict()["gen"] == 4)
    # the budgeted default tune skips it (nothing to choose in a short menu of one); --tune has a menu
    kf = registry.kernel_family("fused")
    assert len(kf.candidates(prob, "fp16", "sm90", short=True)) == 1
    full = kf.candidates(prob, "fp16", "sm90")
    assert full[0] == desc and len(full) >= 2 and all(check_fused_desc(d) is d for d in full)
    if gen == 5 and not prob.identity:   # row layouts where row_filter_block picks generation 5's full map: 64 rows
        # per position in wide_filter_block(mi=64), the push gather with ms in fp16, the light producer, relaxed joins
        # and fast stores (eighth session) with the region in planes (eleventh), the same without the planes, then the
        # plain push gather, the batched one, the first
        n = ctx.point.n
        assert prob.mi == 64 and prob.fb == wide_filter_block(ctx.pruned.rows, n, mi=64)
        g5 = dict(bc=32, vpair=True, fb=prob.fb, full_rows=True)
        fast = dict(gather="push", producer="light", xchg="half", join="relaxed", stores="fast")
        assert desc == cp_desc("fp16", 64, region="planes", **fast, **g5)
        assert full[:4] == [desc, cp_desc("fp16", 64, **fast, **g5), cp_desc("fp16", 64, gather="push", **g5),
                            cp_desc("fp16", 64, gather="batched", **g5)]
        return
    if gen == 5:   # dense and FP where identity_filter_block picks blocks of 64: 32 channels a chunk with the vertical
        # tile pairs and the tma epilogue with the light producer and fp16 exchanges (persistent pairs up to c = 256;
        # one-shot with the region in planes, then linear), the other schedule, fp32 exchanges in both (the family's
        # limit: 5)
        sched = "persistent" if prob.c <= 256 else None
        g5 = dict(bc=32, vpair=True, epi="tma", producer="light")
        half = [cp_desc("fp16", 64, sched=sched, xchg="half", region=None if sched else "planes", **g5)]
        half += ([cp_desc("fp16", 64, xchg="half", region="planes", **g5), cp_desc("fp16", 64, xchg="half", **g5)]
                 if sched else [cp_desc("fp16", 64, xchg="half", **g5),
                                cp_desc("fp16", 64, sched="persistent", xchg="half", **g5)])
        other = None if sched else "persistent"
        assert prob.fb == prob.mi == 64 and desc == half[0]
        assert full == (half + [cp_desc("fp16", 64, sched=sched, **g5), cp_desc("fp16", 64, sched=other, **g5)])[:5]
        return
    # generation 4: the dense map (register epilogue) for dense / FP, the unbranched full map for row layouts in
    # the widest filter block whose (block, position)s keep at most 32 rows; generation 2 in the menu behind it
    x = desc.extra_dict()
    assert x["map"] == ("dense" if prob.identity else "full") and x.get("epi") == ("regs" if prob.identity else None)
    assert {d.extra_dict()["gen"] for d in full} == {2, 4}
    if pattern in ("wsp-r", "wsp-rb"):
        n = ctx.point.n
        assert prob.fb == wide_filter_block(ctx.pruned.rows, n) and prob.mi <= 32
        if pattern == "wsp-rb":   # WSP-RB's default block is the kernel's: every row tile filled
            assert ctx.pruned.block == min(balanced_block(ratio, n), n) and prob.fb >= ctx.pruned.block
            assert lay.full_rows
    else:
        assert prob.fb == 32


def test_identity_layouts_choose_generation_5_where_it_measured_faster():
    """Dense and FP at p = 4 (fp16): filter blocks of 64 (generation 5 at 32 channels a chunk) from c = 64 on where
    they pad no filter, from c = 128 unless they pad more than 1.2x the filters blocks of 32 do (1.34x from c = 256);
    bf16 stays at 32 (generation 4). The cells of the H200 run this rule was read from
    (results/fused/gen5-pin-time-h200.jsonl) and, for c = 64, of the H100 run with the persistent pair
    (results/fused/gen5-tma-persist-time-h100.jsonl) are the cases."""
    from cutlass_wsp.families.fused import identity_filter_block

    assert identity_filter_block(512, 512, "fp16") == 64 and identity_filter_block(128, 128, "fp16") == 64
    assert identity_filter_block(64, 64, "fp16") == 64 and identity_filter_block(64, 128, "fp16") == 64
    assert identity_filter_block(64, 19, "fp16") == 32        # FP 0.7 of 64: 64 against 32 (2x) at c = 64
    assert identity_filter_block(32, 64, "fp16") == 32        # below c = 64: generation 4
    assert identity_filter_block(512, 154, "fp16") == 64      # FP 0.7 of 512: 192 against 160 filters (1.2x)
    assert identity_filter_block(256, 77, "fp16") == 64       # FP 0.7 of 256: 128 against 96 (1.33x), c >= 256
    assert identity_filter_block(128, 77, "fp16") == 32       # the same at c = 128
    assert identity_filter_block(256, 26, "fp16") == 32       # FP 0.9 of 256: 64 against 32 (2x)
    assert identity_filter_block(128, 38, "fp16") == 64       # FP 0.7 of 128: 64 either way
    assert identity_filter_block(512, 512, "bf16") == 32


def test_plan_refuses_what_the_kernel_cannot_run_in_one_line():
    from cutlass_wsp.families import registry

    fam = registry.family("fused")
    with pytest.raises(Unsupported, match="multiple of 8"):
        fam.plan(_ctx("dense", layer="vgg16:conv1_1"))            # c = 3
    with pytest.raises(Unsupported, match="sm90"):
        fam.plan(_ctx("dense", arch="sm80"))
    with pytest.raises(Unsupported, match="p=8"):
        fam.plan(_ctx("dense", p=8))
    with pytest.raises(Unsupported, match="tf32"):
        fam.plan(_ctx("dense", dtype="tf32"))


def test_fused_rows_speed_up_against_the_fused_dense_layer_not_a_gemm_batch():
    from cutlass_wsp.sweep.results import fill_speedups

    shape = dict(c=64, n=64, H=56, W=56, batch=32, p=4, dtype="fp16", gpu="H200", status="ok")
    rows = fill_speedups([dict(shape, pattern="dense", impl="cutlass", median_ms=0.02, floor_ms=0.01),
                          dict(shape, pattern="dense", impl="fused", median_ms=0.06, floor_ms=0.006),
                          dict(shape, pattern="wsp-r", impl="fused", median_ms=0.04, floor_ms=0.004),
                          dict(shape, pattern="wsp-r", impl="cutlass", median_ms=0.01, floor_ms=0.005)])
    by = {(r["pattern"], r["impl"]): r for r in rows}
    assert by[("wsp-r", "fused")]["dense_ms"] == 0.06 and by[("wsp-r", "fused")]["speedup"] == pytest.approx(1.5)
    assert by[("wsp-r", "fused")]["floor_speedup"] == pytest.approx(1.5)
    assert by[("wsp-r", "cutlass")]["dense_ms"] == 0.02 and by[("wsp-r", "cutlass")]["speedup"] == pytest.approx(2.0)
    assert by[("dense", "cutlass")]["speedup"] == 1.0


# ------------------------------------------------- generation 4: filter blocks wider than MI, the "full" row map
def test_balanced_block_is_the_widest_menu_block_whose_kept_count_fits_32_rows():
    from cutlass_wsp.pruning import kept_count

    assert [balanced_block(r, 512) for r in (0.5, 0.7, 0.75, 0.9)] == [64, 96, 128, 320]
    assert balanced_block(0.9, 256) == 256 and balanced_block(0.9, 100) == 128 and balanced_block(0.7, 64) == 64
    for r in (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95):
        fb = balanced_block(r, 512)
        assert kept_count(r, fb) <= 32 and fb in WIDE_FB
        wider = [b for b in WIDE_FB if b > fb]
        assert not wider or kept_count(r, wider[0]) > 32             # the next menu block would overflow
    assert balanced_block(0.1, 512) == 32                             # nothing wider fits: MI itself


def test_wide_filter_block_fits_every_block_and_position():
    n = 256
    W = he_winograd_weights((n, 64), 4, seed=2)
    for r, bal in ((0.7, "balanced"), (0.9, "balanced"), (0.7, "unbalanced")):
        pr = prune(W, "wsp-r", r, balance=bal)
        fb = wide_filter_block(pr.rows, n)
        counts = [[int(((np.asarray(rows) >= b) & (np.asarray(rows) < b + fb)).sum()) for rows in pr.rows]
                  for b in range(0, n, fb)]
        assert max(map(max, counts)) <= 32
        wider = [b for b in WIDE_FB if b > fb and b < n + 32]
        if wider:   # the next wider block overflows somewhere
            c2 = [[int(((np.asarray(rows) >= b) & (np.asarray(rows) < b + wider[0])).sum()) for rows in pr.rows]
                  for b in range(0, n, wider[0])]
            assert max(map(max, c2)) > 32
    assert wide_filter_block(prune(W, "wsp-r", 0.9).rows, n) > wide_filter_block(prune(W, "wsp-r", 0.5).rows, n)
    everything = [np.arange(n)] * 16
    assert wide_filter_block(everything, n) == 32                      # dense: 32 rows per block at most
    with pytest.raises(Unsupported, match="more than 16 rows"):
        wide_filter_block(everything, n, mi=16)
    with pytest.raises(InputError, match="output channels"):
        wide_filter_block(everything, 0)


def test_wide_wsp_rb_layout_fills_its_row_tiles_and_rebuilds_the_masked_weights():
    n = 256
    W = he_winograd_weights((n, 48), 4, seed=3)
    fb = balanced_block(0.7, n)
    pr = prune(W, "wsp-rb", 0.7, block=fb)
    lay = layout_for(pr, 4, fb=fb)
    assert (lay.fb, lay.mi, lay.blocks) == (96, 32, 3) and lay.full_rows and not lay.identity
    np.testing.assert_array_equal(rebuild(lay), np.asarray(pr.weights) * pr.mask)
    assert lay.pad_waste == pytest.approx(1 - lay.kept / (3 * 16 * 32))     # 29 of 32 rows in the full blocks
    # unbalanced WSP-R in blocks of 32 leaves some row tiles empty: the "rows" map skips them, "full" multiplies
    ur = layout_for(prune(W, "wsp-r", 0.7, balance="unbalanced"), 4, fb=32)
    assert not ur.full_rows and (ur.mtiles < ur.mi // 16).any()


def test_full_map_descriptions_and_render():
    from cutlass_wsp.kernels.emitter import render

    d = rs_desc("fp16", 32, fb=96, full_rows=True)
    x = d.extra_dict()
    assert (x["map"], x["fb"], d.tile[0]) == ("full", 96, 32) and "_mapfull_" in d.name and check_fused_desc(d) is d
    assert "epi" not in x                                              # the inverse map's epilogue: smem
    rows = rs_desc("fp16", 32, fb=96)
    assert rows.extra_dict()["map"] == "rows" and rows.name != d.name
    with pytest.raises(InputError, match="dense and the full"):
        rs_desc("fp16", 32, dense_map=True, full_rows=True)
    with pytest.raises(Unsupported, match="'regs' with the dense map"):
        rs_desc("fp16", 32, fb=96, full_rows=True, epi="regs")
    g3 = ws_desc("fp16", 32, fb=64)
    with pytest.raises(Unsupported, match="row map 'full' for generation 3"):
        check_fused_desc(g3.__class__(**{**g3.as_dict(), "extra": tuple((k, "full" if k == "map" else v)
                                                                        for k, v in g3.extra)}))
    src, rsrc = render(d), render(rows)
    assert "{{" not in src and "{%" not in src
    loop = src[src.index("bool late = false;"):src.index("if (late) __trap();")]
    # no per-position branch: every product is the MI-row wgmma
    assert "constexpr bool FULL_ROWS = true;" in src and "if (FULL_ROWS || nt[a] == MI / 16)" in loop
    assert "gmma<16>(areg[a]" not in src and "gmma<16>(areg[a]" in rsrc and "FULL_ROWS" not in rsrc
    assert "if (DENSE_MAP || nt[a] == MI / 16)" in rsrc
    # FB 96 keeps the rows map's epilogue loop; FB 64, 128, 256 (filter pairs dividing the 256 threads) read each
    # pair's inverse-map entries once per thread (measured faster there, slower at 320: docs/fused.md)
    loop_e = "for (int e = tid; e < BT * (FB / 2); e += THREADS)"
    assert loop_e in src and loop_e in rsrc and "NFP" not in src
    for fb in WIDE_FB:
        hoisted = "constexpr int NFP = FB / 2, GROUPS = THREADS / NFP;" in render(rs_desc("fp16", 32, fb=fb, full_rows=True))
        assert hoisted == (fb in (64, 128, 256)), fb
    assert "NFP" not in render(rs_desc("fp16", 32, fb=64))             # the rows map: the loop
    c = _template_constants(src)
    assert (c["FB"], c["MI"]) == (96, 32) and c["SMEM_BYTES"] == rs_smem_bytes(32, 96, d.stages) <= 227 * 1024
    wide = rs_desc("bf16", 32, fb=320, full_rows=True)
    assert wide.stages == 5 and rs_smem_bytes(32, 320, 6) > 227 * 1024   # the inverse map takes a stage's room


def test_the_fused_layer_packs_weights_for_its_kernel_and_launches_with_their_channel_count():
    """K, the channels the packed weights hold, is the layout's Cpad, except for generation 5 at 32 channels a chunk,
    which pads to whole chunks (c = 48: Cpad 48, packed 64; the kernel's host refuses a K its chunks do not divide)."""
    from cutlass_wsp.families.fused import fused_generation, packed_weights

    lay = dense_layout(he_winograd_weights((64, 48), 4, seed=6), 4, fb=64)
    assert lay.cpad == 48
    for desc, k in [(cp_desc("fp16", 64), 48), (cp_desc("fp16", 64, bc=32), 64),
                    (rs_desc("fp16", 32, fb=32, dense_map=True), 48)]:
        use = lay if fused_generation(desc) == 5 else dense_layout(he_winograd_weights((64, 48), 4, seed=6), 4, fb=32)
        U, K = packed_weights(desc, use)
        assert K == k and U.size == use.blocks * 16 * use.mi * K


def test_generation_5s_stamps_build_records_each_phase_and_nothing_else_changes():
    """cp_desc(stamps=True): a profiling build whose thread 0 stamps the clock at entry, after the barriers and the
    pair's first sync, the tile table and the rest of the setup, when the first region has landed, after its products,
    after the pair's join, after the epilogue's two exchanges and at the end (both maps), with the global timer and
    the SM, and exports the host's read / clear / layout; without it the source has none of this."""
    from cutlass_wsp.kernels.emitter import render

    for kw in (dict(), dict(fb=192, full_rows=True)):
        d, plain = cp_desc("fp16", 64, bc=32, vpair=True, stamps=True, **kw), cp_desc("fp16", 64, bc=32, vpair=True, **kw)
        assert "_stamps1_" in d.name and d.name.replace("stamps1_", "") == plain.name
        src, base = render(d), render(plain)
        assert "stamp(" not in base and "wsp_stamps" not in base
        order = [src.index(x) for x in ("stamp(0);", "stamp(1);", "stamp(2);", "stamp(3);", "stamp(4);",
                                        "for (int k = 0; k < nch; ++k)", "stamp(5);", "stamp(6);", "stamp(7);",
                                        "stamp(8);", "stamp(STAMP_PHASES - 1);")]
        assert order == sorted(order) and src.count("stamp(STAMP_PHASES - 1);") == 1
        for sym in ("wsp_stamps_read", "wsp_stamps_clear", "wsp_stamps_layout"):
            assert f'extern "C" int {sym}(' in src
        # the kernel between the stamps is the plain one's
        assert base[base.index("for (int k = 0; k < nch; ++k)"):base.index("warpgroup_wait<0>();\n  fence_acc(acc);\n  if (late)")] in src
    with pytest.raises(Unsupported, match="stamps 2"):
        check_fused_desc(d.__class__(**{**d.as_dict(), "extra": tuple(x for x in d.extra if x[0] != "stamps")
                                         + (("stamps", 2),)}))


@pytest.mark.parametrize("sched,opts", [(None, {}), ("persistent", {}),
                                        (None, dict(producer="light", xchg="half", region="planes"))],
                         ids=["oneshot", "persistent", "planes"])
def test_generation_5s_chunk_stamps_build_marks_each_chunk_and_leaves_the_kernel_as_it_was(sched, opts):
    """cp_desc(chunk_stamps=True): lane 0 of every warp stamps five points of each chunk (head, region landed, the
    previous products done, ready to issue, issued) and three of each item's end, in that order, in both schedules; the
    kernel without them renders exactly as before (the stamps are the only lines added); refused with the phase
    stamps, the halves pipe or another epilogue."""
    import difflib

    from cutlass_wsp.kernels.emitter import render

    d = cp_desc("fp16", 64, bc=32, vpair=True, epi="tma", sched=sched, chunk_stamps=True, **opts)
    plain = cp_desc("fp16", 64, bc=32, vpair=True, epi="tma", sched=sched, **opts)
    assert "_cstamps1_" in d.name and d.name.replace("cstamps1_", "") == plain.name
    src, base = render(d), render(plain)
    assert "cstamp(" not in base and "wsp_cstamps" not in base
    body = src[src.index("cstamp(k, 0);"):]
    order = [body.index(f"cstamp(k, {i});") for i in range(5)]
    assert order == sorted(order)
    end = "klast" if sched else "nch - 1"
    order = [src.index(f"cstamp({end}, {i});") for i in (5, 6, 7)]
    assert order == sorted(order) and order[0] > src.index("cstamp(k, 4);")
    for sym in ("wsp_cstamps_read", "wsp_cstamps_clear", "wsp_cstamps_layout"):
        assert f'extern "C" int {sym}(' in src
    # the plain kernel's lines are all there, in order: the stamps build only inserts (and names itself)
    a, b = base.splitlines(), src.splitlines()
    ops = [op for op in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes() if op[0] != "equal"]
    assert all(tag == "insert" or (tag == "replace" and a[i1:i2] == [x.replace("cstamps1_", "") for x in b[j1:j2]])
               for tag, i1, i2, j1, j2 in ops), ops
    inserted = "\n".join("\n".join(b[j1:j2]) for tag, _, _, j1, j2 in ops if tag == "insert")
    assert inserted.count("cstamp(") >= 8 and "wgmma" not in inserted.replace("wgmma waits", "")
    for bad in (dict(stamps=True), dict(pipe="halves"), dict(epi="lean")):
        kw = dict(bc=32, vpair=True, epi="tma", chunk_stamps=True)
        kw.update(bad)
        with pytest.raises(Unsupported, match="chunk stamps"):
            cp_desc("fp16", 64, **kw)


@pytest.mark.parametrize("stamps", [dict(item_stamps=True, sched="persistent"), dict(chunk_stamps=True)],
                         ids=["item", "chunk"])
def test_generation_5s_ablations_remove_one_part_of_the_chunk_and_exist_only_in_stamps_builds(stamps):
    """cp_desc(ablate=...) (CP_ABLATE_PARTS joined by '+', profile --ablate): each part takes its piece out of the
    chunk and nothing else: "mma" the wgmma issue (the A registers kept live by a never-taken branch), "loads" the
    pixels' shared-memory loads, "weights" the weights' bulk copies (the barrier still arrived on), "transform" (with
    mma) whatever kept the A registers; refused outside a stamps build, without the vertical tile pairs or
    by another name."""
    import difflib

    from cutlass_wsp.kernels.emitter import render

    kw = dict(bc=32, vpair=True, epi="tma", producer="light", xchg="half", **stamps)
    base = render(cp_desc("fp16", 64, **kw)).splitlines()

    def diff(ablate):
        d = cp_desc("fp16", 64, ablate=ablate, **kw)
        assert f"_ablate{ablate.replace('+', '.')}_" in d.name
        src = render(d).splitlines()
        ops = difflib.SequenceMatcher(None, base, src, autojunk=False).get_opcodes()
        gone = "\n".join("\n".join(base[i1:i2]) for tag, i1, i2, _, _ in ops if tag in ("delete", "replace"))
        added = "\n".join("\n".join(src[j1:j2]) for tag, _, _, j1, j2 in ops if tag in ("insert", "replace"))
        return gone.replace(d.name, ""), added.replace(d.name, "")

    gmma = "gmma<MI>(areg[st][a]"
    lds = "*reinterpret_cast<const Ld*>(raw + r * row_bytes"
    copy = "SM90_BULK_COPY_G2S::copy"
    for ablate, removed, kept in [("mma", [gmma], [lds, copy]), ("loads", [lds], [gmma, copy]),
                                  ("mma+loads", [gmma, lds], [copy]), ("weights", [copy], [gmma, lds]),
                                  ("mma+weights", [gmma, copy], [lds]), ("mma+loads+transform", [gmma, lds], [copy]),
                                  ("mma+loads+transform+weights", [gmma, lds, copy], [])]:
        gone, added = diff(ablate)
        assert all(x in gone for x in removed) and not any(x in gone for x in kept), ablate
        # the A registers' only use once the wgmma is gone, unless the transform goes too
        assert ("sink ^=" in added) == ("mma" in ablate and "transform" not in ablate), ablate
        if "weights" in ablate:
            assert "Barrier::arrive(&uf[s]);" in added
    # the measured names, and any order of the parts, are one build each
    assert cp_desc("fp16", 64, ablate="skeleton", **kw) == cp_desc("fp16", 64, ablate="transform+loads+mma", **kw)
    assert cp_desc("fp16", 64, ablate="bare", **kw).extra_dict()["ablate"] == "mma.loads.transform.weights"
    for bad in (dict(item_stamps=False, chunk_stamps=False), dict(vpair=False), dict(ablate="transform"),
                dict(ablate="mma+colpass")):
        k = dict(kw, ablate="mma")
        k.update(bad)
        with pytest.raises(Unsupported, match="ablation"):
            cp_desc("fp16", 64, **k)


@pytest.mark.parametrize("kw", [dict(epi="tma"), dict(epi="wg"), dict(epi="wg", full_rows=True, fb=192, gather="push")],
                         ids=["tma", "wg", "wg-full"])
def test_generation_5s_item_stamps_build_marks_each_item_and_leaves_the_kernel_as_it_was(kw):
    """cp_desc(item_stamps=True) (persistent pairs): thread 0 stamps an item's start, its products done (warpgroup 1's
    thread 0 too) and its end; with the epilogue warpgroup also the mainloop's free wait and handoff, and the epilogue
    thread 0's start, data, middle wait, partner's part (full map: SINV staged before its data wait, the gather done)
    and end, in that order; the kernel without them renders exactly as before (the stamps are the only lines added);
    refused without the persistent schedule or with the other stamps."""
    import difflib

    from cutlass_wsp.kernels.emitter import render

    kw = dict(bc=32, vpair=True, sched="persistent", producer="light", xchg="half", **kw)
    d, plain = cp_desc("fp16", 64, item_stamps=True, **kw), cp_desc("fp16", 64, **kw)
    assert "_istamps1_" in d.name and d.name.replace("istamps1_", "") == plain.name
    src, base = render(d), render(plain)
    assert "istamp(" not in base and "wsp_istamps" not in base
    a, b = base.splitlines(), src.splitlines()
    ops = [op for op in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes() if op[0] != "equal"]
    assert all(tag == "insert" or (tag == "replace" and a[i1:i2] == [x.replace("istamps1_", "") for x in b[j1:j2]])
               for tag, i1, i2, j1, j2 in ops), ops
    for sym in ("wsp_istamps_read", "wsp_istamps_clear", "wsp_istamps_layout"):
        assert f'extern "C" int {sym}(' in src
    main = src[src.index("The mainloop warpgroups.") if kw["epi"] == "wg" else 0:]
    seq = ["istamp(i, 0);", "for (int k = k0; k < k0 + nch; ++k)", "istamp(i, c == 0 ? 1 : 4);"]
    seq += ["istamp(i, 2);", "istamp(i, 3);"] if kw["epi"] == "wg" else ["istamp(i, 3);"]
    order = [main.index(x) for x in seq]
    assert order == sorted(order)
    if kw["epi"] == "wg":   # the epilogue warpgroup's, before the mainloop's in the source
        epi = src[src.index("if (wg == CONSUMERS) {"):src.index("The mainloop warpgroups.")]
        slots = (5, 7, 6, 8, 9) if kw.get("full_rows") else (5, 6, 7, 8, 9)
        order = [epi.index(f"if (et == 0) istamp(i, {k});") for k in slots]
        assert order == sorted(order)
        assert epi.index("istamp(i, 6);") > epi.index("wait_bar(msfull" if kw.get("full_rows") else "wait_bar(zfull")
    for bad in (dict(sched=None, epi="tma"), dict(chunk_stamps=True, epi="tma")):
        with pytest.raises(Unsupported, match="item stamps"):
            cp_desc("fp16", 64, **{**kw, "full_rows": False, "gather": None, "fb": 64, **bad, "item_stamps": True})


@pytest.mark.parametrize("sched", [None, "persistent"])
def test_generation_5s_late_refill_moves_the_leaders_copy_after_the_issue(sched):
    """refill='late': the leader's weight copy of chunk k - 1 + USTAGES comes after chunk k's commit (not between
    its wait for the previous products and its transform), with the same condition; table='early' (persistent
    only): item i + 1's tile table by warps 2 and 3 inside item i's chunk loop, after the first chunk, into the other
    half, and item 0's at the start. Refused with the halves pipe, the full map or (table) the one-shot schedule."""
    from cutlass_wsp.kernels.emitter import render

    kw = dict(bc=32, vpair=True, epi="tma", sched=sched)
    src, base = render(cp_desc("fp16", 64, refill="late", **kw)), render(cp_desc("fp16", 64, **kw))
    first, kall = ("k0", "kall") if sched else ("0", "nch")
    refill = f"if (leader && k > {first} && k - 1 + USTAGES < {kall}) load_u(k - 1 + USTAGES);"
    assert src.count(refill) == base.count(refill) == 1
    loop = src[src.index("warpgroup_wait<0>();\n    fence_acc(acc);"):]
    assert loop.index("warpgroup_commit_batch();") < loop.index(refill) < loop.index("Barrier::arrive(&rawfree[s]")
    old = base[base.index("warpgroup_wait<0>();\n    fence_acc(acc);"):]
    assert old.index(refill) < old.index("wait_late(&uf[su], uphase, late);")
    if sched:
        t = render(cp_desc("fp16", 64, refill="late", table="early", **kw))
        item = t[t.index("for (int i = 0; i < mine; ++i)"):]
        assert "if (i == 0) {" in item and "if (k == k0 && (tid_loop >> 6) == 1 && i + 1 < mine)" in item
        assert "tile_tables + ((i + 1) & 1) * BT" in item and "item_of(i + 1, block, unit);" in item
    else:
        with pytest.raises(Unsupported, match="tile table"):
            cp_desc("fp16", 64, refill="late", table="early", **kw)
    with pytest.raises(Unsupported, match="weight refill"):
        cp_desc("fp16", 64, bc=32, vpair=True, pipe="halves", refill="late")
    with pytest.raises(Unsupported, match="weight refill"):
        cp_desc("fp16", 64, bc=32, fb=128, full_rows=True, refill="late")


@pytest.mark.parametrize("sched", [None, "persistent", "full map"])
def test_generation_5s_light_producer_moves_every_duty_of_the_raw_ring(sched):
    """producer='light': the raw ring's producer is lane 0 of warp 3 of warpgroup 1 - rank (the column without the
    bank conflict) for everything the producer thread does (the first stages' kick, the producer at each chunk's head,
    the re-arm at the release, and persistent, the cached item of its loads); thread 0 keeps what is not the ring's
    and arms the first stages, whose barriers it initialized (the producer arming one before its init was a race that
    a stress run of the sixth session hit). The full map's one-shot kernel (push gather) takes it too. Refused with
    the halves pipe."""
    from cutlass_wsp.kernels.emitter import render

    if sched == "full map":
        kw, sched = dict(bc=32, vpair=True, fb=192, full_rows=True, gather="push"), None
    else:
        kw = dict(bc=32, vpair=True, epi="tma", sched=sched)
    src, base = render(cp_desc("fp16", 64, producer="light", **kw)), render(cp_desc("fp16", 64, **kw))
    assert "const int prod_tid = (1 - static_cast<int>(rank)) * 128 + 96;" in src and "prod_tid" not in base
    for old in ("if (tid == 0 && k + STAGES < ", "  if (tid == 0)   // the first ring's own stages"):
        assert src.count(old) == 0 and src.count(old.replace("tid == 0", "tid == prod_tid")) == base.count(old) >= 1
    assert src.count("    if (tid == prod_tid) {\n      for (; next_raw <") == 1
    if sched:   # the first stages are armed by thread 0, which initialized their barriers (not the producer: a race)
        assert "  if (tid == 0)       // the first STAGES chunks' bytes are expected here" in src
    if sched:
        assert "if (tid == prod_tid) walk[0] = raw_item(0);" in src
    assert src.replace("tid == prod_tid", "tid == 0").count("tid == 0") == base.count("tid == 0")
    with pytest.raises(Unsupported, match="producer"):
        cp_desc("fp16", 64, bc=32, vpair=True, pipe="halves", producer="light")


@pytest.mark.parametrize("sched", [None, "persistent"])
def test_generation_5s_split_producer_gives_each_warpgroup_half_the_ring(sched):
    """producer='split': lane 0 of warp 3 of each warpgroup runs the producer for the CTA's stages with
    (stage / PAIR) % 2 == its warpgroup (kick and chunk head alike), re-arms those stages, and, persistent, caches its
    item in a walk slot of its own (one more int4: the layout's SMEM_BYTES is cp_smem_bytes'); the kernel fits."""
    import re

    from cutlass_wsp.kernels.emitter import render

    d = cp_desc("fp16", 64, bc=32, vpair=True, epi="tma", sched=sched, producer="split")
    src = render(d)
    assert "if ((st / PAIR & 1) != (tid >> 7)) continue;" in src
    assert "&& (tid >> 7) == (next_raw % STAGES / PAIR & 1)) load_raw(next_raw);" in src
    assert "if ((tid & 127) == 96 && (s / PAIR & 1) == (tid >> 7) && k + STAGES < " in src
    assert "tid == prod_tid" not in src and not re.search(r"if \(tid == 0 && k \+ STAGES", src)
    if sched:
        assert src.count("walk[tid < 128 ? 0 : 1 + CONSUMERS]") == 3 and "(2 + CONSUMERS) * 16" in src
    assert _template_constants(src)["SMEM_BYTES"] == cp_smem_bytes(64, d.stages, bc=32, epi="tma", sched=sched,
                                                                    producer="split") <= 227 * 1024
    # which warpgroup loads (and re-arms) each stage, per rank: each warpgroup one of the CTA's two stages
    for rank in (0, 1):
        own = [st for st in range(4) if st % 2 == rank]
        assert sorted((st // 2) & 1 for st in own) == [0, 1]


@pytest.mark.parametrize("sched", [None, "persistent"])
def test_generation_5s_half_exchange_packs_both_exchanges_and_frees_the_partner_after_the_products(sched):
    """xchg='half': the Z for the other warpgroup and the partner's part go as 16-byte packs of the layer's 16-bit type
    (4 STS.128 / LDS.128 / st.async.v4.b32 where the fp32 epilogue has 8), half the bytes armed on xs2bar; persistent:
    the two exchanges apart in warpgroup c's half of the stage, every warp arriving on the partner's xsfree right after
    the arm (its products done), the wait just before the st.async, no arrive after the Z are read. Refused with the
    lean epilogue."""
    from cutlass_wsp.kernels.emitter import render

    kw = dict(bc=32, vpair=True, epi="tma", sched=sched, producer="light")
    d, base = cp_desc("fp16", 64, xchg="half", **kw), cp_desc("fp16", 64, **kw)
    src = render(d)
    epi = src[src.index("constexpr int NQ = NACC / 4;"):]
    assert "constexpr int XSA1_BYTES = CONSUMERS * NP * 128 * 16;" in epi and "constexpr int NP = NQ / 2;" in epi
    assert epi.count("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.b32") == 1 and ".v4.f32" not in epi
    assert "*xs1_at(c, jj) = make_uint4(" in epi and "*xs1_at(1 - c, jj)" in epi and "*xs2_at(c, jj)" in epi
    assert "cvt.f32.f16" in epi and "pack_out(as * zk[kk] + bs * o0" in epi
    if sched:
        order = [epi.index(x) for x in ("Barrier::arrive_and_expect_tx(xs2bar, XSA2_BYTES);",
                                        "Barrier::arrive(xsfree, rank ^ 1u, 1u);", "*xs1_at(c, jj) =", "__syncthreads();",
                                        "*xs1_at(1 - c, jj)", "wait_bar(xsfree, static_cast<uint32_t>(i & 1));",
                                        "st.async", "wait_bar(xs2bar", "*xs2_at(c, jj)")]
        assert order == sorted(order) and epi.count("Barrier::arrive(xsfree") == 1
        assert "xst + w * UH_BYTES + UH_BYTES / 2" in epi
    else:
        assert "cute::cluster_wait();" in epi
    bf = render(cp_desc("bf16", 64, xchg="half", **kw))
    assert "__uint_as_float(u << 16)" in bf and "cvt.f32.f16" not in bf[bf.index("constexpr int NQ = NACC / 4;"):]
    assert "xs1_at" not in render(base)
    with pytest.raises(Unsupported, match="exchange"):
        cp_desc("fp16", 64, bc=32, vpair=True, epi="lean", xchg="half")


@pytest.mark.parametrize("mi", [32, 64])
def test_generation_5s_lean_epilogue_moves_float4s_and_branches_once(mi):
    """cp_desc(epi='lean'): the dense map's epilogue with the plain one's sums and shared memory, its exchanges in
    float4s (four scalar STS / LDS / remote stores become one), the warpgroup's and the rank's selects as one branch
    each, a whole filter block stored unchecked; its slots (group j at j ^ ((lt / (8 / NQ)) % NQ)) put the 8 threads of a 128-byte
    phase in 8 different 16-byte bank groups. The full map and MI = 48 are refused; the plain kernel is unchanged."""
    from cutlass_wsp.kernels.emitter import render

    d, plain = cp_desc("fp16", mi, bc=32, vpair=True, epi="lean"), cp_desc("fp16", mi, bc=32, vpair=True)
    assert d.extra_dict()["epi"] == "lean" and "_epilean_" in d.name and "epi" not in plain.extra_dict()
    src, base = render(d), render(plain)
    assert "{{" not in src and "{% " not in src and "st_remote4" not in base and "xs2_remote" not in base
    epi = src[src.index("// Epilogue (lean)."):]
    assert "st_remote(" not in epi and epi.count("st_remote4(") == 2 and epi.count("if (c == 0) {") == 1
    assert epi.count("if (rank == 0) {") == 1 and "c == 0 ?" not in epi and "rank == 0 ?" not in epi
    assert "const bool whole = even && block * FB + MI <= p.n_out;" in epi
    # the plain epilogue's mainloop and constants: only the epilogue differs
    def body(text):
        return text[text.index("wsp_fused_layer("):text.index("cute::cluster_sync();   // both CTAs are past")]
    assert body(src) == body(base)
    consts = _template_constants(src)
    assert consts["SMEM_BYTES"] == _template_constants(base)["SMEM_BYTES"] and consts["NACC"] == mi // 2
    nq = mi // 8
    for j in range(nq):   # bank groups of one STS.128 phase: threads lt .. lt + 7 of a warp
        for lt0 in range(0, 128, 8):
            groups = {(lt * nq + (j ^ ((lt // (8 // nq)) % nq))) % 8 for lt in range(lt0, lt0 + 8)}
            assert len(groups) == 8
    with pytest.raises(Unsupported, match="epilogue 'lean' for MI=48"):
        cp_desc("fp16", 48, bc=32, epi="lean")
    with pytest.raises(Unsupported, match="full map"):
        cp_desc("fp16", 64, bc=32, fb=192, full_rows=True, epi="lean")


def test_generation_5s_early_epilogue_joins_the_pair_after_the_warpgroups_exchange():
    """cp_desc(epi='early'): the plain dense-map epilogue with its two barriers swapped: a CTA barrier right after the
    mainloop (its warps' last ring loads are done, and every multicast into its rings landed: each was waited for),
    the pair's cluster barrier after the warpgroups' exchange is written (xs2, over the partner's rings, is written
    only after it). The sums, the shared memory and the mainloop are the plain kernel's; the full map is refused."""
    from cutlass_wsp.kernels.emitter import render

    d, plain = cp_desc("fp16", 64, bc=32, vpair=True, epi="early"), cp_desc("fp16", 64, bc=32, vpair=True)
    assert "_epiearly_" in d.name and d.name.replace("epiearly_", "") == plain.name
    src, base = render(d), render(plain)
    tail, btail = src[src.index("if (late) __trap();"):], base[base.index("if (late) __trap();"):]
    barriers = [x for x in tail.split("\n") if "cluster_sync();" in x or "__syncthreads();" in x]
    assert [b.split(";")[0].strip() for b in barriers] == ["__syncthreads()", "cute::cluster_sync()",
                                                             "cute::cluster_sync()"]
    assert [b.split(";")[0].strip() for b in btail.split("\n") if "cluster_sync();" in b or "__syncthreads();" in b] \
        == ["cute::cluster_sync()", "__syncthreads()", "cute::cluster_sync()"]
    # the exchange's writes sit between the CTA barrier and the pair's; the remote stores after the pair's
    first, pair = tail.index("__syncthreads();"), tail.index("cute::cluster_sync();")
    assert first < tail.index("xs1[((c * 2 + v) * NACC + kk) * 128 + lt] =") < pair < tail.index("st_remote(")
    def body(text):
        return text[text.index("wsp_fused_layer("):text.index("if (late) __trap();")]
    assert body(src) == body(base)
    assert _template_constants(src)["SMEM_BYTES"] == _template_constants(base)["SMEM_BYTES"]
    with pytest.raises(Unsupported, match="epilogue 'early'"):
        cp_desc("fp16", 64, bc=32, fb=192, full_rows=True, epi="early")


@pytest.mark.parametrize("mi", [32, 64])
def test_generation_5s_async_epilogue_joins_once_and_sends_by_st_async(mi):
    """cp_desc(epi='async'): after the mainloop the CTA arrives at the pair's barrier (release: its remote arrives on
    the owner's rawfree are ordered before) and waits only for its own warps; the warpgroups trade one Z per
    accumulator (float4 slots [sender][group][thread]: conflict-free); the pair's wait comes only before the st.async
    float4s into the partner's xs2, which complete bytes on the partner's xs2bar (armed by thread 0 for its own
    incoming bytes, initialized before the prologue's cluster barrier); then each CTA waits on its own xs2bar and
    stores: no second cluster barrier, no fence, no remote store through the generic path. The mainloop is the plain
    kernel's; the full map and MI = 48 are refused."""
    from cutlass_wsp.kernels.emitter import render

    d, plain = cp_desc("fp16", mi, bc=32, vpair=True, epi="async"), cp_desc("fp16", mi, bc=32, vpair=True)
    assert "_epiasync_" in d.name and d.name.replace("epiasync_", "") == plain.name
    src, base = render(d), render(plain)
    assert "{{" not in src and "{% " not in src and "xs2bar" not in base
    tail = src[src.index("if (late) __trap();"):]
    sync = [x.split(";")[0].strip() for x in tail.split("\n")
            if any(k in x for k in ("cluster_sync();", "__syncthreads();", "cluster_arrive();", "cluster_wait();",
                                     "wait_bar(xs2bar"))]
    assert sync == ["cute::cluster_arrive()", "__syncthreads()", "__syncthreads()", "cute::cluster_wait()",
                    "wait_bar(xs2bar, 0)"]
    # the order: Z to xs1, the CTA's barrier, the pair's wait, the st.async stores, this CTA's bytes, the stores
    order = [tail.index(x) for x in ("xs1[(c * NQ + j) * 128 + lt] =", "stamp(7)" if "stamp(7)" in tail else
                                     "// this CTA's part of output", "cute::cluster_wait();", "st.async.shared::cluster",
                                     "wait_bar(xs2bar, 0);", "pack_out(")]
    assert order == sorted(order)
    assert "st_remote(" not in tail and "st.shared::cluster" not in tail and tail.count("st.async") == 1
    assert "mbarrier::complete_tx::bytes.v4.f32" in tail
    # xs2bar: one more mbarrier, initialized with the others before the prologue's cluster barrier, armed once
    assert src.index("Barrier::init(xs2bar, 1);") < src.index("cute::cluster_sync();")
    assert tail.count("Barrier::arrive_and_expect_tx(xs2bar, XSA2_BYTES)") == 1
    consts, bconsts = _template_constants(src), _template_constants(base)
    assert consts["NBAR"] == bconsts["NBAR"] + 1
    assert consts["SMEM_BYTES"] == cp_smem_bytes(mi, d.stages, bc=32, epi="async") <= 227 * 1024
    def body(text):
        return text[text.index("  int s = 0, su = 0;"):text.index("if (late) __trap();")]
    assert body(src) == body(base)
    # one float4 per thread and group, thread-fastest (a warp's STS.128 covers 512 contiguous bytes); the partner's
    # slot is the same offset in its xs2 (mapa of this thread's own slot)
    assert "xs2 + c * NQ * 128 + lt" in tail and "dst + j * 128 * 16" in tail
    with pytest.raises(Unsupported, match="epilogue 'async' for MI=48"):
        cp_desc("fp16", 48, bc=32, epi="async")
    with pytest.raises(Unsupported, match="full map"):
        cp_desc("fp16", 64, bc=32, fb=192, full_rows=True, epi="async")


@pytest.mark.parametrize("mi", [32, 64])
def test_generation_5s_persistent_pair_walks_items_with_one_ring_and_trades_in_a_weight_stage(mi):
    """cp_desc(sched='persistent'): pair q walks items q + i * pairs; the raw and weight rings run on across items
    (load_raw and load_u of sequence chunk j find its item and chunk; the last ring's releases, which no owner waits
    for, are not sent); the weight ring is [USTAGES][CONSUMERS] so one stage of both warpgroups is the exchange's
    (32 KB at MI 64: the async epilogue's xs1 and xs2 both); per item: xs2bar armed, Z into this warpgroup's own half,
    the CTA's barrier, every warp's remote arrive on the partner's xsfree after reading the other warpgroup's Z, the
    wait on this CTA's xsfree (parity i % 2) before the st.async, the wait on xs2bar (parity i % 2), then the stage's
    reads fenced and joined before the leader requests the next weights into it (the chunk the mainloop skips at an
    item's start). One fenced cluster barrier in all (the start); two tile tables. Refused: other epilogues, 16
    channels a chunk, a stamps build."""
    from cutlass_wsp.kernels.emitter import render

    d = cp_desc("fp16", mi, bc=32, vpair=True, epi="async", sched="persistent")
    one = cp_desc("fp16", mi, bc=32, vpair=True, epi="async")
    assert "_schedpersistent_" in d.name and d.name.replace("schedpersistent_", "") == one.name
    src, base = render(d), render(one)
    assert "{{" not in src and "{% " not in src and "xsfree" not in base and "units_div" not in base
    kern = src[src.index("wsp_fused_layer("):src.index("// ---------")]
    # one fenced cluster barrier (the start), none per item; the async epilogue's pair join replaced by xsfree
    assert kern.count("cute::cluster_sync();") == 1 and "cluster_arrive" not in kern and "cluster_wait" not in kern
    assert "p.units_div(block, unit, static_cast<int>(blockIdx.x) / PAIR + i * (static_cast<int>(gridDim.x) / PAIR));" in kern
    assert kern.count("p.chunks_div(i, kk, j);") == 2   # load_raw and load_u: the sequence chunk's item, only
    for load in ("auto load_raw = [&](int j) {", "auto load_u = [&](int j) {"):   # where it passes the cached one
        body = kern[kern.index(load):]
        body = body[:body.index("\n  };")]
        assert body.index("if (j >= (w.x + 1) * nch) {") < body.index("p.chunks_div(i, kk, j);") \
            and "units_div" not in body and "gx_div" not in body and "(j - w.x * nch)" in body
    assert "if (tid == 0) walk[0] = raw_item(0);" in kern and "if (leader) walk[1 + c] = u_item(0);" in kern
    assert "if (k + STAGES < kall) Barrier::arrive(&rawfree[s]" in kern
    assert "if (leader && k > k0 && k - 1 + USTAGES < kall) load_u(k - 1 + USTAGES);" in kern
    assert "ubuf + s * CONSUMERS * UH_BYTES" in kern and "su * (CONSUMERS * UH_BYTES >> 4)" in kern
    assert "tiles = tile_tables + (i & 1) * BT;" in kern
    epi = kern[kern.index("const int klast = k0 + nch - 1;"):]
    assert "float4* xs1 = reinterpret_cast<float4*>(smem + U_OFFSET + (klast % USTAGES) * CONSUMERS * UH_BYTES);" in epi
    order = [epi.index(x) for x in ("Barrier::arrive_and_expect_tx(xs2bar, XSA2_BYTES);",
                                    "xs1[(c * NQ + j) * 128 + lt] =", "__syncthreads();",
                                    "xs1[((1 - c) * NQ + j) * 128 + lt]", "Barrier::arrive(xsfree, rank ^ 1u, 1u);",
                                    "wait_bar(xsfree, static_cast<uint32_t>(i & 1));", "st.async.shared::cluster",
                                    "wait_bar(xs2bar, static_cast<uint32_t>(i & 1));", "xs2[(c * NQ + j) * 128 + lt]",
                                    "fence_view_async_shared();", "if (leader && klast + USTAGES < kall) load_u(klast + USTAGES);",
                                    "pack_out(")]
    assert order == sorted(order)
    assert "Barrier::init(xsfree, WARPS);" in kern
    consts, bconsts = _template_constants(src), _template_constants(base)
    assert consts["NBAR"] == bconsts["NBAR"] + 1 and consts["TILE_BYTES"] == 2 * bconsts["TILE_BYTES"]
    assert consts["SMEM_BYTES"] == cp_smem_bytes(mi, d.stages, bc=32, epi="async", sched="persistent") <= 227 * 1024
    assert d.stages == one.stages == 4   # the exchange over a weight stage: the one-shot kernel's 4-stage ring
    assert consts["CONSUMERS"] * consts["UH_BYTES"] == 2 * (mi // 8) * 128 * 16   # the async epilogue's xs1 (= xs2)
    # the one-shot kernel's chunk body, with the sequence's bounds
    def chunk(text, head):
        b = text[text.index(head):]
        return b[b.index("const int tid = tid_loop;"):b.index("if (++su == USTAGES)")]
    assert chunk(src, "for (int k = k0; k < k0 + nch; ++k) {").replace("kall", "nch").replace("k > k0", "k > 0") \
        .replace("CONSUMERS * UH_BYTES", "UH_BYTES").replace("if (k + STAGES < nch) Barrier::arrive(&rawfree",
                                                             "Barrier::arrive(&rawfree") \
        == chunk(base, "for (int k = 0; k < nch; ++k) {")
    host = src[src.index("int run(const wsp_args& a"):]
    assert "const long long items = units * a.M;" in host and "cudaOccupancyMaxActiveClusters" in host
    assert "p.units_div = cutlass::FastDivmod(p.units);" in host
    for bad in (dict(epi="lean"), dict(epi=None), dict(bc=16, epi="async"), dict(epi="async", stamps=True)):
        with pytest.raises(Unsupported, match="generation-5 schedule|epilogue"):
            cp_desc("fp16", 64, **{"bc": 32, "vpair": True, **bad}, sched="persistent")
    with pytest.raises(Unsupported, match="schedule 'stream'"):
        cp_desc("fp16", 64, bc=32, epi="async", sched="stream")


def test_generation_5s_persistent_pair_with_the_tma_epilogue_stores_while_the_next_item_runs():
    """cp_desc(epi='tma', sched='persistent'): the persistent pair's kernel with the tma epilogue's box apart from the
    rings and the exchange (1024-aligned after the tile tables: the whole 227 KB), thread 0 waiting for the previous
    item's store to have read the box only before the CTA barrier that precedes the next box's writes (and once at
    the end), not after its own store; both output maps passed and prefetched."""
    from cutlass_wsp.kernels.emitter import render

    d = cp_desc("fp16", 64, bc=32, vpair=True, epi="tma", sched="persistent")
    asy = cp_desc("fp16", 64, bc=32, vpair=True, epi="async", sched="persistent")
    src, base = render(d), render(asy)
    kern = src[src.index("wsp_fused_layer("):src.index("// ---------")]
    consts = _template_constants(src)
    assert consts["BOX_OFFSET"] % 1024 == 0 and consts["BOX_OFFSET"] >= consts["TILE_OFFSET"] + consts["TILE_BYTES"]
    assert consts["SMEM_BYTES"] == consts["BOX_OFFSET"] + 64 * 2 * 128 == cp_smem_bytes(
        64, d.stages, bc=32, epi="tma", sched="persistent") <= 227 * 1024
    assert "unsigned char* box = smem + BOX_OFFSET;" in kern and "BOX_OFFSET" not in base
    epi = kern[kern.index("const int klast = k0 + nch - 1;"):]
    at = epi.index("wait_bar(xs2bar, static_cast<uint32_t>(i & 1));")
    for x in ("fence_view_async_shared();", "if (tid == 0) cute::tma_store_wait<0>();", "__syncthreads();",
              "load_u(klast + USTAGES);", "pack_out(out[kk], out[kk + 1])", "fence_view_async_shared();",
              "__syncthreads();", "SM90_TMA_STORE_4D::copy", "tma_store_arrive();"):
        at = epi.index(x, at)   # each after the one before
    store = epi[epi.index("SM90_TMA_STORE_4D::copy"):]
    assert store.index("tma_store_arrive();") < store.index("} else {")
    assert "tma_store_wait" not in store[:store.index("} else {")]          # not waited for here
    assert kern.rstrip().endswith("if (tid == 0) cute::tma_store_wait<0>();   // the last item's box is read before "
                                  "the CTA's shared memory goes\n}") or kern.count("tma_store_wait<0>()") == 2
    assert "cute::prefetch_tma_descriptor(rank == 0 ? &omap0 : &omap1);" in kern
    assert "(p, map, omap[0], omap[1])" in src
    # the rest is the async persistent kernel's
    def strip(text):
        return text[text.index("for (int i = 0; i < mine; ++i) {"):text.index("const int klast")]
    assert strip(src) == strip(base)


def _tma_box_row(t: int, BI: int, BY: int, BX: int, u: int, vpair: bool) -> int:
    """The box row the tma epilogue writes tile t's output row u to, from the template's own formula."""
    if vpair:
        pr, tt, half = (t >> 4) * 8 + (t & 7), (t >> 3) & 1, BY >> 1
        bi = pr // (half * BX)
        rem = pr - bi * half * BX
        by, bx = 2 * (rem // BX) + tt, rem % BX
    else:
        bi = t // (BY * BX)
        rem = t - bi * BY * BX
        by, bx = rem // BX, rem - (rem // BX) * BX
    return (bi * 2 * BY + 2 * by + u) * BX + bx


@pytest.mark.parametrize("vpair", [True, False])
def test_generation_5s_tma_epilogue_stores_one_swizzled_box_per_cta(vpair):
    """cp_desc(epi='tma'): the async epilogue, then the CTA's outputs (rows u = c, column v = rank of its 64 tiles)
    written as output map `rank`'s box (MI filters x BX tile columns x 2 BY rows x BI images) in 128-byte rows with
    the map's 128-byte swizzle, and one TMA store by thread 0 (waited for before the CTA ends); per-thread stores where
    the host could not encode the maps. The pair's first join is split around the tile table (relaxed arrive, the
    first stages requested after the wait), the mainloop sends no release of its last ring (nobody waits for one), the
    join after it is relaxed. Checked here: every (tile, u, filter) of a CTA lands in a distinct box element, the
    tile's own (image, row, column) in the box's order, and the shared-memory address is the swizzle of that element's
    address (Swizzle<3,4,3>: 16-byte group ^= row % 8), for the rectangles pick_rectangle gives the VGG/ResNet layers;
    and the kernel's other parts render as the async epilogue's."""
    from cutlass_wsp.fused_banks import pick_rectangle, tile_order
    from cutlass_wsp.kernels.emitter import render

    d = cp_desc("fp16", 64, bc=32, vpair=vpair, epi="tma")
    asy = cp_desc("fp16", 64, bc=32, vpair=vpair, epi="async")
    assert "_epitma_" in d.name and d.name.replace("epitma_", "") == asy.name.replace("epiasync_", "")
    src, base = render(d), render(asy)
    assert "{{" not in src and "{% " not in src and "omap0" not in base and "SM90_TMA_STORE" not in base
    # the prologue: arrive (relaxed) before the tile table, wait and the first stages' requests after it
    head = src[src.index("wsp_fused_layer("):src.index("const bool leader = (tid & 127) == 0;")]
    order = [head.index(x) for x in ("Barrier::arrive_and_expect_tx(&rawfull[j], p.raw_bytes);",
                                     "cute::cluster_arrive_relaxed();", "tiles[t] = make_int4(", "__syncthreads();",
                                     "cute::cluster_wait();", "load_raw(next_raw);")]
    assert order == sorted(order) and "cute::cluster_sync();" not in head
    # the mainloop: the last ring's releases are not sent; after it, a relaxed arrive (no MEMBAR.GPU)
    loop = src[src.index("for (int k = 0; k < nch; ++k) {"):src.index("if (late) __trap();")]
    assert "if (k + STAGES < nch) Barrier::arrive(&rawfree[s]" in loop
    assert "if (k + STAGES < nch) Barrier::arrive(&rawfree[s]" not in base
    tail = src[src.index("if (late) __trap();"):]
    assert tail.index("cute::cluster_arrive_relaxed();") < tail.index("cute::cluster_wait();")
    assert "cute::cluster_arrive();" not in tail and "cute::cluster_sync();" not in tail
    # the box: after the pair's exchange, fenced for the async proxy, one store by thread 0, waited for
    store = tail[tail.index("if (p.tma_out) {"):]
    order = [store.index(x) for x in ("pack_out(out[kk], out[kk + 1])", "fence_view_async_shared();",
                                      "__syncthreads();", "SM90_TMA_STORE_4D::copy(rank == 0 ? &omap0 : &omap1, box,",
                                      "tma_store_arrive();", "tma_store_wait<0>();", "} else {")]
    assert order == sorted(order)
    assert "box + R * 128 + ((q ^ (R & 7)) << 4) + 4 * (lane & 3)" in store
    assert "encode_output(a, p, 0, &omap[0]) && encode_output(a, p, 1, &omap[1])" in src
    assert "(p, map, omap[0], omap[1])" in src and "CU_TENSOR_MAP_SWIZZLE_128B" in src
    assert "(cuuint32_t)MI, (cuuint32_t)p.BX, (cuuint32_t)(p.BY * MO), (cuuint32_t)p.BI" in src
    consts = _template_constants(src)
    assert consts["SMEM_BYTES"] == cp_smem_bytes(64, d.stages, bc=32, epi="tma") <= 227 * 1024
    # the box (64 KB in, after both exchanges) inside the rings
    assert 2 * 2 * 8 * 128 * 16 + 64 * 2 * 128 <= consts["BIG_BYTES"]
    for hw in (224, 112, 56, 28, 14, 7):
        th = -(-hw // 2)
        BI, BY, BX = pick_rectangle(32, th, th, vpair=vpair)
        rows = BI * 2 * BY * BX
        assert rows == 128
        seen = {}
        for t in range(64):
            bi, by, bx = tile_order(BI, BY, BX, vpair=vpair)[t]
            for u in range(2):
                R = _tma_box_row(t, BI, BY, BX, u, vpair)
                assert R == (bi * 2 * BY + 2 * by + u) * BX + bx   # the box's (image, row, column) order
                for lane in range(4):
                    for q in range(8):
                        logical = R * 128 + q * 16 + 4 * lane
                        physical = R * 128 + ((q ^ (R & 7)) << 4) + 4 * lane
                        assert physical == logical ^ (((logical >> 7) & 7) << 4)   # Swizzle<3,4,3>
                        assert physical not in seen
                        seen[physical] = (t, u, lane, q)
        assert len(seen) == 128 * 32 and max(seen) < rows * 128
    with pytest.raises(Unsupported, match="epilogue 'tma' for MI=32"):
        cp_desc("fp16", 32, bc=32, epi="tma")


def test_generation_5s_batched_gather_predicates_the_full_maps_loads():
    """gather='batched' (the full map only): the epilogue's 32 loads per (tile, filter pair) are predicated on the row
    being kept (no branch, no volatile or memory clobber: the compiler may issue them together; the phase stamps of
    the seventh session put the branched gather at 1.8x the mainloop on conv4_2), the inverse map is read into
    registers before the pair's join and written to shared memory after it; the other full-map kernels render as
    before; on the dense map it is refused in one line."""
    from cutlass_wsp.kernels.emitter import render

    kw = dict(bc=32, vpair=True, fb=192, full_rows=True)
    src, base = render(cp_desc("fp16", 64, gather="batched", **kw)), render(cp_desc("fp16", 64, **kw))
    assert "@q ld.shared::cluster.f32 %0, [%1];" in src and "ld_remote(" not in src
    assert "ld_remote(" in base and "ld_cta_if" not in base and "invr" not in base
    assert 'asm volatile("{ .reg .pred q' not in src   # not volatile: free to be scheduled together
    join = src.index("cute::cluster_sync();   // both CTAs are past their mainloops")
    assert src.index("invr[q] = tid + q * THREADS < PP * FB / 2 ? __ldg(src + tid + q * THREADS) : 0u;") < join
    assert join < src.index("reinterpret_cast<uint32_t*>(sinv)[tid + q * THREADS] = invr[q];")
    assert "sinv[e] = p.inv[" not in src and "sinv[e] = p.inv[" in base
    with pytest.raises(Unsupported, match="gather 'batched' \\(dense map\\)"):
        cp_desc("fp16", 64, bc=32, vpair=True, gather="batched")
    with pytest.raises(Unsupported, match="use gather 'batched'"):
        cp_desc("fp16", 64, gather="all", **kw)


def test_generation_5s_push_gather_keeps_the_full_maps_epilogue_local():
    """gather='push' (the full map only): the pair splits the epilogue by tiles; the warps holding the partner's tiles
    send them by st.async completing bytes on an mbarrier more (armed for the partner's 8 positions of this rank's 32
    tiles), so the gather reads no remote memory (no ld.shared::cluster, no mapa of the partner's ms for loads) and no
    cluster barrier follows the epilogue; its shared memory is cp_smem_bytes' with that barrier."""
    from cutlass_wsp.kernels.emitter import render

    kw = dict(bc=32, vpair=True, fb=192, full_rows=True)
    d = cp_desc("fp16", 64, gather="push", **kw)
    src = render(d)
    consts = _template_constants(src)
    assert "constexpr int HT = BT / 2;" in src and consts["BT"] == 64 and consts["PPC"] == 4 and consts["MI"] == 64
    assert "constexpr int PUSH_BYTES = CONSUMERS * PPC * HT * MI * 4;" in src   # 2 x 4 positions x 32 tiles x 64 rows
    assert consts["SMEM_BYTES"] == cp_smem_bytes(64, d.stages, bc=32, gather="push") == cp_smem_bytes(
        64, d.stages, bc=32) + 16 <= 227 * 1024
    assert "ld.shared::cluster" not in src and "ld_remote(" not in src
    assert "st.async.shared::cluster.mbarrier::complete_tx::bytes.v2.f32" in src
    assert "Barrier::init(xs2bar, 1);" in src and "if (tid == 0) Barrier::arrive_and_expect_tx(xs2bar, PUSH_BYTES);" in src
    epi = src[src.index("Epilogue of the full map, gather \"push\""):]
    assert "cluster_sync" not in epi[:epi.index("\n}\n")]   # to the kernel's end
    with pytest.raises(Unsupported, match="gather 'push' \\(dense map\\)"):
        cp_desc("fp16", 64, bc=32, vpair=True, gather="push")


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_generation_5s_push_gather_in_the_16_bit_type_halves_what_the_pair_trades(dtype):
    """xchg='half' with the push gather: ms in the layer's 16-bit type, rows of MI + 8 (16-byte runs; 72 KB, not 139),
    the partner's part half the bytes in 16-byte st.async (MI / 32 a (position, tile), not MI / 8 8-byte ones), the
    gather converting each value back to fp32 as the type requires; the same shared memory as the fp32 push kernel.
    Only the full map's push gather (MI 32 or 64) and the dense map's async epilogues take it."""
    from cutlass_wsp.kernels.emitter import render

    kw = dict(bc=32, vpair=True, fb=192, full_rows=True, gather="push")
    d = cp_desc(dtype, 64, xchg="half", **kw)
    src, base = render(d), render(cp_desc(dtype, 64, **kw))
    assert d.stages == cp_desc(dtype, 64, **kw).stages and "_xchghalf" in d.name
    epi = src[src.index("Epilogue of the full map, gather \"push\""):]
    assert "constexpr int LDJ = MI + 8;" in epi and "constexpr int MS_BYTES = PP * HT * LDJ * 2;" in epi
    assert "constexpr int PUSH_BYTES = CONSUMERS * PPC * HT * MI * 2;" in epi
    assert "uint16_t* ms = reinterpret_cast<uint16_t*>(smem);" in epi and "float* ms =" not in epi
    assert "st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.b32" in src
    assert "bytes.v2.f32" not in src and "bytes.v2.f32" in base
    conv = "__uint_as_float(static_cast<uint32_t>(u) << 16)" if dtype == "bf16" else "__half2float(__ushort_as_half(u))"
    assert f"    return {conv};" in epi
    for other in ("batched", None):   # the full map's other epilogues keep fp32
        with pytest.raises(Unsupported, match="exchange 'half'"):
            cp_desc(dtype, 64, xchg="half", **{**kw, "gather": other})
    with pytest.raises(Unsupported, match="exchange 'half'"):
        cp_desc(dtype, 64, bc=32, vpair=True, xchg="half")   # the dense map: with epi async or tma only


def test_generation_5s_relaxed_join_splits_the_push_kernels_pair_joins():
    """join='relaxed' (the push gather): both of the pair's joins as the tma epilogue's: the first one's relaxed arrive
    before the tile table and its wait after it, the first stages requested only then; the one after the mainloop a
    relaxed arrive (no cluster_sync, so no MEMBAR.ALL.GPU before it), the last ring's releases not sent, each thread's
    wait in its warp's branch of the exchange: before the st.async into the partner's ms, after the local stores.
    The kernel without it renders as before; the other epilogues refuse it."""
    from cutlass_wsp.kernels.emitter import render

    kw = dict(bc=32, vpair=True, fb=192, full_rows=True, gather="push")
    src, base = render(cp_desc("fp16", 64, join="relaxed", **kw)), render(cp_desc("fp16", 64, **kw))
    assert "cluster_sync" not in src and base.count("cute::cluster_sync();") == 2
    assert src.count("cute::cluster_arrive_relaxed();") == 2 and src.count("cute::cluster_wait();") == 3
    start = src.index("cute::cluster_arrive_relaxed();")
    assert start < src.index("// Tiles of the rectangle") < src.index("cute::cluster_wait();") < src.index(
        "  if (tid == 0)   // the first ring's own stages")
    assert "if (k + STAGES < nch) Barrier::arrive(&rawfree[s]" in src and "Barrier::arrive(&rawfree[s]" in base
    assert "if (k + STAGES < nch) Barrier::arrive(&rawfree[s]" not in base
    epi = src[src.index("join \"relaxed\" (the push gather)"):]
    local, remote = epi.index("this rank's tiles: here"), epi.index("the partner's tiles: into its ms")
    waits = [i for i in range(len(epi)) if epi.startswith("cute::cluster_wait();", i)]
    assert len(waits) == 2 and local < waits[0] < remote < waits[1] < epi.index("asm volatile(\"st.async")
    assert epi.index("cute::cluster_arrive_relaxed();") < epi.index("__syncthreads();") < local
    for other in ("batched", None):
        with pytest.raises(Unsupported, match="join 'relaxed'"):
            cp_desc("fp16", 64, join="relaxed", **{**kw, "gather": other})


def test_generation_5s_fast_stores_branch_once_a_tile():
    """stores='fast' (the push gather): a tile inside the image (ty + 2 <= H, tx + 2 <= W: warp-uniform) with a whole,
    even filter pair (per lane, computed once for its tiles) stores its four pixels as 32-bit pairs at dst0 +
    (u W + v) n_out, no per-pixel branch; every other (tile, pair) goes through the general stores as before. The
    other kernels' output transform renders as before."""
    from cutlass_wsp.kernels.emitter import render

    kw = dict(bc=32, vpair=True, fb=192, full_rows=True, gather="push")
    src, base = render(cp_desc("fp16", 64, stores="fast", **kw)), render(cp_desc("fp16", 64, **kw))
    assert "const bool whole = f + 1 < p.n_out && even;" in src
    assert "if (ti.x >= 0 && ti.y + MO <= p.H && ti.z + MO <= p.W && whole) {" in src
    assert "Element* const dst0 = p.out + ((long long)(ti.x * p.H + ti.y) * p.W + ti.z) * p.n_out + f;" in src
    for v in (0, 1):
        assert f"*reinterpret_cast<uint32_t*>(dst0 + (u * p.W + {v}) * p.n_out) =" in src
    assert "} else if (ti.x >= 0 && f < p.n_out) {" in src and src.count("const bool pair = f + 1 < p.n_out;") == 1
    assert "dst0" not in base and "const bool whole" not in base
    with pytest.raises(Unsupported, match="stores 'fast'"):
        cp_desc("fp16", 64, stores="fast", **{**kw, "gather": "batched"})


def test_row_layouts_choose_generation_5s_full_map_where_it_measured_faster():
    """WSP-R and WSP-RB at p = 4 (fp16): generation 5's full map (64 rows per position) from c = 128 where its rows per
    filter are at most 1.5x generation 4's (WSP-RB 0.5, 0.7: blocks of 128, 192 against 64, 96; of 128 filters at 0.7:
    128 against 96), from c = 256 up to twice as many (0.9: both blocks of 320 for 512 filters); c = 64 and bf16 stay
    with generation 4. The cells of the H100 run the rule was read from: push faster on every c >= 256 layer but VGG
    conv3_2 at 0.9, and on the n = 128 layers of c = 128 at 0.7."""
    from cutlass_wsp.families.fused import row_filter_block

    W = he_winograd_weights((512, 16), 4, seed=5)
    for ratio, fb5, fb4 in ((0.5, 128, 64), (0.7, 192, 96), (0.9, 320, 320)):
        rows = prune(W, "wsp-rb", ratio).rows
        assert wide_filter_block(rows, 512) == fb4 and wide_filter_block(rows, 512, mi=64) == fb5
        assert row_filter_block(rows, 512, 512, "fp16") == (fb5, 64)
        assert row_filter_block(rows, 256, 512, "fp16") == (fb5, 64)
        assert row_filter_block(rows, 128, 512, "fp16") == ((fb5, 64) if ratio < 0.9 else (fb4, None))
        assert row_filter_block(rows, 64, 512, "fp16") == (fb4, None)
        assert row_filter_block(rows, 512, 512, "bf16") == (fb4, None)
    narrow = prune(he_winograd_weights((128, 16), 4, seed=5), "wsp-rb", 0.7).rows   # n = 128: blocks of 128 and 96
    assert wide_filter_block(narrow, 128) == 96 and wide_filter_block(narrow, 128, mi=64) == 128
    assert row_filter_block(narrow, 128, 128, "fp16") == (128, 64)                  # 1.5x the rows per filter
    wider = prune(he_winograd_weights((128, 16), 4, seed=5), "wsp-rb", 0.9).rows    # 128 and 128: 2x
    assert row_filter_block(wider, 128, 128, "fp16") == (128, None) and row_filter_block(wider, 256, 128, "fp16") == (
        128, 64)


def test_a_full_map_kernels_padding_counts_every_row_it_multiplies():
    """kernel_pad_waste: the layout's pad_waste (whole 16-row tiles a position) for the kernels that skip empty tiles,
    all MI rows of every (block, position) for the full map (generation 4's and 5's), which multiplies them all:
    WSP-RB 0.7 of 256 filters in generation 5's blocks of 192 keeps 58 + 29 rows a position, padded to 64 + 64, where
    the tiles count 64 + 32."""
    from cutlass_wsp.families.fused import kernel_pad_waste

    W = he_winograd_weights((256, 32), 4, seed=6)
    lay = layout_for(prune(W, "wsp-rb", 0.7), 4, fb=192, mi=64)
    kept = (lay.inv >= 0).sum(axis=2)
    assert kept[:, 0].tolist() == [58, 29] and lay.mtiles[:, 0].tolist() == [4, 2]
    full = cp_desc("fp16", 64, bc=32, vpair=True, fb=192, full_rows=True, gather="push")
    assert kernel_pad_waste(lay, full) == pytest.approx(1 - 87 / 128) and lay.pad_waste == pytest.approx(1 - 87 / 96)
    dense = layout_for(prune(W, "dense", 0.0), 4, fb=64)
    assert kernel_pad_waste(dense, cp_desc("fp16", 64)) == dense.pad_waste == 0.0
    g4 = layout_for(prune(W, "wsp-r", 0.7, balance="unbalanced"), 4, fb=32)   # kept counts vary per position
    assert kernel_pad_waste(g4, rs_desc("fp16", g4.mi, fb=32, full_rows=True)) > g4.pad_waste > 0
    assert kernel_pad_waste(g4, rs_desc("fp16", g4.mi, fb=32)) == g4.pad_waste        # the "rows" map skips tiles


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_generation_5s_warpgroup_epilogue_lays_out_its_buffers_and_launches_384_threads(dtype):
    """epi='wg' (persistent, MI 64, 32 channels a chunk, the exchanges in the 16-bit type): a third warpgroup does each
    item's epilogue under the next item's chunks. Its ZBUF (both warpgroups' Z of both rows u: 32 KB), PBUF (the
    partner's part: 16 KB) and the TMA box (16 KB, 1024-aligned) sit apart from the rings, so the raw ring has 2 stages
    (4 do not fit); cp_smem_bytes is the template's SMEM_BYTES; the launch and the occupancy query take 384 threads;
    setmaxnreg gives the mainloop 232 registers and the epilogue 40; four mbarriers more (zfull, zfree, pbar, pfree),
    the remote pfree not sent after the last item; the tile table's halves handed over per item (no CTA barrier in
    the mainloop's item loop: a named barrier of its 256 threads)."""
    from cutlass_wsp.kernels.emitter import render

    kw = dict(bc=32, vpair=True, epi="wg", sched="persistent", producer="light", xchg="half")
    d = cp_desc(dtype, 64, **kw)
    src = render(d)
    consts = _template_constants(src)
    assert d.stages == 2 and consts["STAGES"] == 2
    assert consts["ZBUF_BYTES"] == 32 * 1024 and consts["PBUF_BYTES"] == 16 * 1024 and consts["BOX_BYTES"] == 16 * 1024
    assert consts["BOX_OFFSET"] % 1024 == 0 and consts["BOX_OFFSET"] >= consts["PBUF_OFFSET"] + consts["PBUF_BYTES"]
    assert consts["ZBUF_OFFSET"] >= consts["TILE_OFFSET"] + consts["TILE_BYTES"] >= consts["BIG_BYTES"]
    assert consts["SMEM_BYTES"] == cp_smem_bytes(64, 2, bc=32, epi="wg", sched="persistent") <= 227 * 1024
    assert cp_smem_bytes(64, 4, bc=32, epi="wg", sched="persistent") > 227 * 1024
    assert consts["LAUNCH_THREADS"] == 384 and consts["NBAR"] == 2 * 2 + 2 * 2 + 4
    assert "__launch_bounds__(LAUNCH_THREADS, 1)" in src and "cfg.blockDim = dim3(LAUNCH_THREADS);" in src
    assert "wsp_fused_layer<<<grid, LAUNCH_THREADS, SMEM_BYTES, stream>>>" in src
    # what the CTA holds at launch (168 a thread at 384 threads) moved within it: 240 / 240 / 32, the whole register
    # file, failed to launch on the H100 (eighth session)
    assert consts["MAIN_REGS"] == 232 and consts["EPI_REGS"] == 40 and 2 * 232 + 40 == 3 * 168
    assert "setmaxnreg.dec.sync.aligned.u32" in src and "setmaxnreg.inc.sync.aligned.u32" in src
    assert "if (i + 1 < mine) Barrier::arrive(pfree, rank ^ 1u, 1u);" in src
    loop = src[src.index("// The mainloop warpgroups."):]
    assert "__syncthreads" not in loop and "named_sync(1, THREADS);" in loop
    assert "if (i > 0) wait_bar(zfree, static_cast<uint32_t>((i - 1) & 1));" in loop
    # no exchange takes a weight stage: the ring refills at every chunk, across items too
    assert "if (leader && k > 0 && k - 1 + USTAGES < kall) load_u(k - 1 + USTAGES);" in loop
    for bad in (dict(sched=None), dict(xchg=None), dict(producer="split"), dict(stamps=True), dict(bc=16)):
        with pytest.raises(Unsupported, match="epilogue 'wg'|schedule|exchange|bc"):
            cp_desc(dtype, 64, **{**kw, **bad})
    with pytest.raises(Unsupported, match="epilogue 'wg' for MI=32"):
        cp_desc(dtype, 32, **kw)


@pytest.mark.parametrize("fb", [128, 192, 320])
def test_generation_5s_full_map_warpgroup_epilogue_keeps_ms_and_the_inverse_map_apart(fb):
    """epi='wg' with the full map's push gather (persistent, xchg 'half'): MS (72 KB: 16 slots x 32 tiles x 72 halves)
    and the block's inverse map (16 FB halves) sit after the tile tables, apart from the 2-stage rings, within 227 KB
    up to FB 320 (cp_smem_bytes is the template's SMEM_BYTES); msfull counts all 8 mainloop warps (the senders too: the
    epilogue cannot then finish an item ahead of a sender's msfree wait), msfree and rmsfree the 4 epilogue warps; the
    mainloop's registers 224 (the one-shot push kernel takes 222), the epilogue's 56 with one filter a lane; the
    senders wait for rmsfree before their st.async and every mainloop warp for msfree; no rmsfree after the last item.
    The full map takes no other epilogue, and the relaxed join stays the one-shot kernel's."""
    from cutlass_wsp.kernels.emitter import render

    kw = dict(bc=32, vpair=True, fb=fb, full_rows=True, gather="push", producer="light", xchg="half")
    d = cp_desc("fp16", 64, epi="wg", sched="persistent", **kw)
    src = render(d)
    consts = _template_constants(src)
    assert d.stages == 2 and consts["LAUNCH_THREADS"] == 384
    assert consts["MS_BYTES"] == 16 * 32 * 72 * 2 and consts["SINV_BYTES"] == 16 * fb * 2
    assert consts["MS_OFFSET"] >= consts["TILE_OFFSET"] + consts["TILE_BYTES"] >= consts["BIG_BYTES"]
    assert consts["SMEM_BYTES"] == consts["SINV_OFFSET"] + consts["SINV_BYTES"] == cp_smem_bytes(
        64, 2, bc=32, epi="wg", sched="persistent", gather="push", fb=fb) <= 227 * 1024
    assert consts["MAIN_REGS"] == 224 and consts["EPI_REGS"] == 56 and 2 * 224 + 56 == 3 * 168
    assert "Barrier::init(msfull, WARPS);" in src and "Barrier::init(rmsfree, EPI_WARPS);" in src
    assert "if (i > 0) wait_bar(msfree, static_cast<uint32_t>((i - 1) & 1));" in src
    assert "if (i > 0) wait_bar(rmsfree, static_cast<uint32_t>((i - 1) & 1));   // the partner's MS is read" in src
    assert src.count("Barrier::arrive(msfull);") == 2 and "arrive_and_expect_tx(msfull, PUSH_BYTES)" in src
    assert "if (i + 1 < mine) Barrier::arrive(rmsfree, rank ^ 1u, 1u);" in src
    assert "{{" not in src and "push_gather_single" not in src
    with pytest.raises(Unsupported, match="epilogue 'tma'"):
        cp_desc("fp16", 64, epi="tma", sched="persistent", **kw)
    with pytest.raises(Unsupported, match="epilogue 'wg'"):
        cp_desc("fp16", 64, epi="wg", sched="persistent", **{**kw, "gather": "batched"})
    with pytest.raises(Unsupported, match="join 'relaxed'"):
        cp_desc("fp16", 64, epi="wg", sched="persistent", join="relaxed", **kw)
