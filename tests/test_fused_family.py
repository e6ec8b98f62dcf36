"""The fused layer family on the CPU: its compact layout rebuilds exactly the masked weights, its
kernel descriptions refuse what the template cannot build, and one kernel renders and compiles."""

from __future__ import annotations

import numpy as np
import pytest

from cutlass_wsp.errors import InputError, Unsupported
from cutlass_wsp.families.fused import (accumulators, check_fused_desc, dense_layout, fused_desc, layout_for,
                                        pair_desc, pair_smem_bytes, row_layout, smem_bytes)
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
                                        ("wsp-r", {}), ("wsp-rb", dict(block=32)), ("fp", {})])
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


DESCS = [fused_desc("fp16", 4, 32), pair_desc("fp16", 64, fb=64, dense_map=True)]   # compiled here (test_readme.py counts)


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
