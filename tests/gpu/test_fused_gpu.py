"""The fused Winograd layer on the GPU: dense against float64 direct convolution, the pruned forms against
the fp32 unfused pipeline with the same packed weights, every generation and warp count, odd H x W and
small batches; and a config search over its menu that verifies, records and is read back."""

from __future__ import annotations

import numpy as np
import pytest

cp = pytest.importorskip("cupy")


def _sm90():
    from cutlass_wsp.gpu.device import compute_capability

    if compute_capability() != 90:
        pytest.skip("the fused layer kernel is sm90 code")


KERNELS = {   # name -> (p, kernel for a layout)
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


def _gen1(lay, dt):
    from cutlass_wsp.families.fused import fused_desc

    return fused_desc(dt, lay.p, lay.mi, fb=lay.fb)


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("batch,c,n,H,W", [(1, 64, 64, 15, 17), (3, 48, 80, 9, 11)])
def test_dense_fused_layer_equals_direct_convolution(kernel, dtype, batch, c, n, H, W, compile_cache_dir):
    from cutlass_wsp.families.fused import FusedLayer, dense_layout
    from cutlass_wsp.gpu import arrays
    from cutlass_wsp.gpu.verify import check, layer_rtol
    from cutlass_wsp.kernels.cache import KernelCache
    from cutlass_wsp.winograd import direct_conv2d, filter_transform

    _sm90()
    p, make = KERNELS[kernel]
    rng = np.random.default_rng(batch * 100 + c)
    g = (rng.standard_normal((n, c, 3, 3)) * np.sqrt(2.0 / (9 * c))).astype(np.float32)
    fb = 64 if kernel.startswith("gen2") else 32
    lay = dense_layout(filter_transform(g.astype(np.float64), p - 2).astype(np.float32), p, fb=fb)
    layer = FusedLayer(lay, dtype, make(lay, dtype)).setup(KernelCache(compile_cache_dir))
    d = arrays.random((batch, H, W, c), dtype)
    out = arrays.poison(arrays.empty(layer.output_shape(batch, H, W), dtype), dtype)
    layer.run(d, out)
    cp.cuda.get_current_stream().synchronize()
    ref = direct_conv2d(arrays.to_host_float32(d, dtype).transpose(0, 3, 1, 2), g).transpose(0, 2, 3, 1)
    err = check(arrays.to_host_float32(out, dtype), ref, dtype, f"fused {kernel}", K=9 * c,
                rtol=layer_rtol(dtype, p, c))
    assert 0 < err


@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("pattern,ratio,kw", [("wsp-r", 0.7, dict(balance="unbalanced")), ("wsp-r", 0.5, {}),
                                              ("fp", 0.5, {}), ("wsp-rb", 0.75, dict(block=64))])
def test_pruned_fused_layers_equal_the_unfused_pipeline_with_the_same_mask(kernel, pattern, ratio, kw,
                                                                           compile_cache_dir):
    from cutlass_wsp.families.fused import layer_op, layout_for
    from cutlass_wsp.gpu.harness import bench
    from cutlass_wsp.kernels.cache import KernelCache
    from cutlass_wsp.pruning import prune
    from cutlass_wsp.weights import he_winograd_weights

    _sm90()
    p, make = KERNELS[kernel]
    pr = prune(he_winograd_weights((96, 64), p, seed=5), pattern, ratio, **kw)
    lay = layout_for(pr, p, fb=64)
    op = layer_op(lay, "fp16", make(lay, "fp16"), 3, 13, 10, KernelCache(compile_cache_dir), f"{kernel} {pattern}")
    m = bench(op.launch, outputs=op.out, result=op.result, reference=op.reference, check=op.check,
              budget_s=0.01, min_reps=2, max_reps=3, warmup=1)
    assert m.rel_error > 0 and m.timing.median_ms > 0


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
