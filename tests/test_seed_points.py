"""Issue 14's points on the CPU: the vocabulary (2:4, spatial-winograd, hybrid in patterns.py only, built
by seed_pruning), their sweep expansion (2:4 at its fixed 0.5; the default sweep unchanged), the hybrid
point's pruning (blocks + remainder = the masked GEMM, exactly), the families' host side (plans, costs,
one-line refusals) and the table script."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from cutlass_wsp import patterns
from cutlass_wsp.errors import InputError, Unsupported
from cutlass_wsp.seed_pruning import prune_point
from cutlass_wsp.weights import he_winograd_weights

W_SMALL = he_winograd_weights((64, 32), 4, seed=3)       # [16, 64, 32]: the transform of 3×3 filters


def test_new_patterns_are_built_outside_prune():
    for name in ("2:4", "spatial-winograd", "hybrid"):
        assert patterns.get(name).built_by is not None
        assert name in patterns.BUILT_PATTERNS and name not in patterns.PRUNING_PATTERNS
    assert patterns.get("2:4").fixed_ratio == 0.5


@pytest.mark.parametrize("name", patterns.BUILT_PATTERNS)
def test_every_built_pattern_has_a_builder(name):
    P = prune_point(W_SMALL, name, 0.5)
    assert P.pattern == name and P.mask.shape == W_SMALL.shape
    assert P.unit == "weight"
    assert 0.45 <= P.achieved_ratio <= 0.6
    # every one of them has the CSR or compressed form its family runs, and its masked weights
    assert np.array_equal(P.dense_weights(), np.where(P.mask, P.weights, 0))


def test_prune_point_still_runs_prune_for_the_pruning_patterns():
    from cutlass_wsp.pruning import prune

    a, b = prune_point(W_SMALL, "wsp-r", 0.5), prune(W_SMALL, "wsp-r", 0.5)
    assert np.array_equal(a.mask, b.mask)


@pytest.mark.parametrize("call, match", [
    (lambda: prune_point(W_SMALL, "2:4", 0.7), "exactly 0.5"),
    (lambda: prune_point(W_SMALL, "spatial-winograd", 0.5, balance="unbalanced"), "no balance"),
    (lambda: prune_point(np.random.default_rng(0).standard_normal((16, 8, 8)), "spatial-winograd", 0.5),
     "not the transform of 3×3 filters"),
    (lambda: prune_point(W_SMALL, "nope", 0.5), "unknown pattern"),
])
def test_refusals_are_one_line(call, match):
    with pytest.raises(InputError, match=match) as e:
        call()
    assert "\n" not in str(e.value)


def test_two_to_four_keeps_two_of_every_four_along_c():
    P = prune_point(W_SMALL, "2:4", 0.5)
    groups = P.mask.reshape(16, 64, 8, 4).sum(axis=3)
    assert (groups == 2).all()


# ------------------------------------------------------------------------------ the hybrid point
def _dyadic_filters(n: int, c: int, seed: int) -> np.ndarray:
    """3×3 filters of small multiples of 2^-2 whose F(2,3) transform is exact in float32 (G has halves)."""
    rng = np.random.default_rng(seed)
    return rng.integers(-8, 9, size=(n, c, 3, 3)).astype(np.float64) / 4


def test_hybrid_blocks_plus_remainder_equal_the_masked_gemm_exactly():
    from cutlass_wsp.winograd import filter_transform

    W = filter_transform(_dyadic_filters(64, 32, 1), 2).astype(np.float32)     # exact: multiples of 1/16
    P = prune_point(W, "hybrid", 0.63)
    B = P.blocks
    assert np.array_equal(P.mask, B.mask) and B.block_nnz > 0 and B.remainder_nnz > 0   # both parts run
    assert P.achieved_ratio >= P.source_ratio >= 0.62                          # re-pruning only drops
    X = np.random.default_rng(2).integers(-8, 9, size=(16, 32, 40)).astype(np.float64)
    blocks, remainder = B.block_pruned(), B.remainder_pruned()
    Y = blocks.reference(X) + remainder.reference(X)                           # the two launches' parts
    assert np.array_equal(Y, P.dense_reference(X))                             # = what the sweep checks
    assert not np.array_equal(remainder.reference(X), P.dense_reference(X))   # the blocks carry a share


def test_hybrid_starts_from_the_spatial_winograd_mask_of_the_same_ratio():
    S, H = prune_point(W_SMALL, "spatial-winograd", 0.74), prune_point(W_SMALL, "hybrid", 0.74)
    assert np.array_equal(S.weights, H.weights)
    assert not (H.mask & ~S.mask).any()                                        # nothing added back
    assert H.source_ratio == pytest.approx(S.achieved_ratio)


# ------------------------------------------------------------------------------ families, host side
def _ctx(pattern: str, impl: str, ratio, layer="resnet18:12", batch=32):
    from cutlass_wsp.families.base import PointContext
    from cutlass_wsp.sweep.measure import Workload
    from cutlass_wsp.sweep.plan import SweepSpec, expand

    spec = SweepSpec(layers=(layer,), batches=(batch,), tiles=(4,), dtypes=("fp16",), patterns=(pattern,),
                     ratios=(ratio,), implementations={pattern: (impl,)})
    (pt,) = expand(spec)
    return PointContext(pt, arch="sm90", workload=Workload(0))


def test_the_registry_serves_the_new_points():
    from cutlass_wsp.families import registry

    assert set(registry.implementations("2:4")) == {"cusparselt", "torch-cslt"}
    assert set(registry.implementations("spatial-winograd")) == {"cusparse-per-position", "cusparse-block-diag"}
    assert set(registry.implementations("hybrid")) == {"bcbp+cusparse-per-position", "bcbp+cusparse-block-diag"}
    assert registry.serving("hybrid", "bcbp+cusparse-block-diag").name == "hybrid"


def test_hybrid_plan_compiles_the_bcbp_gather_kernel_ahead():
    from cutlass_wsp.families import registry

    ctx = _ctx("hybrid", "bcbp+cusparse-block-diag", 0.74)
    plan = registry.serving("hybrid", "bcbp+cusparse-block-diag").plan(ctx)
    assert plan is not None and [d.family for d in plan.descs] == ["gather_b"]
    blocks = ctx.pruned.blocks.block_pruned()
    assert blocks.pattern == "bcbp" and blocks.tile_cols.shape[:2] == (16, 512 // 32)


def test_semi24_cost_is_half_the_macs():
    from cutlass_wsp.dtypes import get_dtype
    from cutlass_wsp.families.semi24 import semi24_cost
    from cutlass_wsp.problem import BatchProblem

    pr = BatchProblem(16, 512, 6272, 512)
    c = semi24_cost(pr, get_dtype("fp16"))
    assert c.flops == 16 * 512 * 6272 * 512                  # 2·L·M·(K/2)·N
    assert c.bytes == 16 * 512 * 256 * 2 + 16 * 512 * 512 // 8 + 2 * 16 * (512 * 6272 * 2)


def test_torch_binding_missing_is_unsupported_in_one_line():
    from cutlass_wsp.gpu import torch_cslt

    ok, why = torch_cslt.available()
    if ok:
        pytest.skip(f"torch's cuSPARSELt binding is usable here ({why})")
    fake = SimpleNamespace(ndim=3, shape=(16, 64, 64))
    with pytest.raises(Unsupported) as e:
        torch_cslt.TorchCslt(fake, fake, fake)
    assert "\n" not in str(e.value) and "torch" in str(e.value)


# ------------------------------------------------------------------------------ the sweep
def test_two_to_four_takes_its_fixed_ratio_whatever_the_sweep_asks():
    from cutlass_wsp.sweep.plan import SweepSpec, expand

    spec = SweepSpec(layers=("resnet18:12",), batches=(32,), tiles=(4,), dtypes=("fp16",),
                     patterns=("2:4", "wsp-r"), ratios=(0.5, 0.7), implementations={"wsp-r": ("cutlass",)})
    keys = [p.key for p in expand(spec)]
    assert [k for k in keys if "/2:4/" in k] == ["resnet18/c512n512@7x7/b32/p4/fp16/2:4/cusparselt/r0.5",
                                                 "resnet18/c512n512@7x7/b32/p4/fp16/2:4/torch-cslt/r0.5"]
    only = SweepSpec(layers=("resnet18:12",), batches=(32,), tiles=(4,), dtypes=("fp16",), patterns=("2:4",))
    assert len(expand(only)) == 2                           # no --ratio needed


def test_the_default_sweep_does_not_grow():
    from cutlass_wsp.sweep.plan import default_spec, expand

    pts = expand(default_spec())
    assert len(pts) == 736 and not {"2:4", "hybrid", "spatial-winograd"} & {p.pattern for p in pts}


def test_sweep_options_take_the_new_patterns():
    from cutlass_wsp.commands.sweep_options import from_args
    from cutlass_wsp.sweep.plan import expand

    spec = from_args(["--net", "resnet18:12", "--pattern", "2:4,hybrid", "--ratio", "0.74"])
    assert {p.pattern for p in expand(spec)} == {"2:4", "hybrid"}


# ------------------------------------------------------------------------------ the table script
def test_seeds_table_points_and_table():
    from bench_scripts import load_bench_script

    st = load_bench_script("seeds_table")
    pts = st.points(("vgg16", "resnet18"), 0.5, 0.74)
    assert len(pts) == 12 * 9 and min(p.c for p in pts) >= 64
    assert {(p.pattern, p.ratio) for p in pts} >= {("2:4", 0.5), ("wsp-r", 0.5), ("hybrid", 0.74),
                                                    ("spatial-winograd", 0.74), ("bcbp", 0.5)}
    base = dict(net="resnet18", layers=["layer4.0.conv2"], c=512, n=512, H=7, W=7, batch=32, dtype="fp16")
    rows = [dict(base, key="a", pattern="conv", impl="cudnn", status="ok", median_ms=0.02, layer_ms=0.02),
            dict(base, key="b", pattern="dense", impl="cutlass", status="ok", median_ms=0.01, layer_ms=0.04),
            dict(base, key="c", pattern="2:4", impl="cusparselt", status="ok", median_ms=0.005, layer_ms=0.02,
                 kept_fraction=0.5),
            dict(base, key="d", pattern="2:4", impl="torch-cslt", status="unsupported", reason="no | torch")]
    text = st.table(rows, 0.5, 0.74)
    line = next(x for x in text.splitlines() if "2:4 cuSPARSELt" in x)
    assert "| 0.005 | 0.020 | 2.00× | 2.00× | 1.00× | ok |" in line
    bad = next(x for x in text.splitlines() if "2:4 torch" in x)
    assert "unsupported: no / torch" in bad and bad.count("|") == line.count("|")


def test_hybrid_split_goes_in_kernel_config_and_the_row_fields_exist():
    """A result row refuses fields the schema lacks: the families use only schema fields, and the hybrid
    split rides in kernel_config as plain JSON."""
    import json

    from cutlass_wsp.families.hybrid import split
    from cutlass_wsp.sweep.results import ROW_FIELDS

    ctx = _ctx("hybrid", "bcbp+cusparse-block-diag", 0.74, layer="resnet18:1")
    s = split(ctx.pruned)
    assert json.loads(json.dumps(s)) == s and s["block_nnz"] > 0 and s["remainder_nnz"] > 0
    assert {"nnz", "kept_fraction", "kernel_config"} <= set(ROW_FIELDS)


def test_a_bcbp_launcher_keeps_its_weights_and_index_alive(monkeypatch):
    """The hybrid point keeps only the launcher Bcbp.prepare returns; the launch reads the Bcbp's weight
    and index arrays through raw pointers, so the launcher must keep the Bcbp (and its arrays) alive.
    (On the H200, 2026-12-04, it did not: freed and reused, they made the hybrid point wrong.)"""
    import gc
    import weakref

    from cutlass_wsp.families import bcbp

    W = he_winograd_weights((64, 64), 4, seed=1)
    blocks = prune_point(W, "hybrid", 0.74).blocks.block_pruned()
    fam = bcbp.Bcbp(blocks, "fp16", 256, arch="sm90")
    fam._gemm = SimpleNamespace(prepare=lambda X, Y, stream=None: (lambda: None))   # no GPU: a stand-in launch
    monkeypatch.setattr(bcbp, "check_device_array", lambda *a, **k: None)
    launcher = fam.prepare(object(), object())
    owner = weakref.ref(fam)
    del fam
    gc.collect()
    assert owner() is not None, "the launcher let its Bcbp (weights, index) be freed"
    del launcher
    gc.collect()
    assert owner() is None
