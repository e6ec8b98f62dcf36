"""Sweep planning: axes → points, which axes apply to which pattern, keys, validation, CLI options."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from cutlass_wsp.commands.sweep_options import from_args
from cutlass_wsp.errors import InputError, Unsupported
from cutlass_wsp.layers import NETWORKS
from cutlass_wsp.sweep.plan import PATTERNS, SweepSpec, default_spec, expand, validate


def small_spec(**kw) -> SweepSpec:
    base = dict(layers=("resnet18",), batches=(32,), tiles=(4,), dtypes=("fp16",),
                patterns=("dense", "wsp-r"), ratios=(0.5, 0.7), balances=("balanced", "unbalanced"))
    base.update(kw)
    return SweepSpec(**base)


def _impl_serves(rule: str, balance: str) -> bool:
    return {"any": True, "balanced-only": balance == "balanced", "unbalanced-only": balance != "balanced"}[rule]


def test_default_spec_point_count_from_the_axes():
    spec = default_spec()
    layers = [layer for net in ("vgg16", "resnet18") for layer in NETWORKS[net]]
    shapes = {(x.net, x.shape) for x in layers}
    prunable = {(x.net, x.shape) for x in layers if x.prunable}
    dense_per_shape = len(PATTERNS["dense"].default_implementations)
    pruned_per_shape = 0
    for pat in spec.patterns:
        info = PATTERNS[pat]
        if pat in ("dense", "conv"):
            continue
        impls = info.default_implementations
        if info.uses_balance:
            per_ratio = sum(_impl_serves(info.implementations[i], b) for b in spec.balances for i in impls)
        else:
            per_ratio = len(impls)
        pruned_per_shape += len(spec.ratios) * per_ratio
    # cuDNN's conv: once per shape, batch and dtype, whatever the tile sizes; every layer, prunable or not
    conv_per_shape = len(spec.batches) * len(spec.dtypes) * ("conv" in spec.patterns)
    expected = len(shapes) * (dense_per_shape + conv_per_shape) + len(prunable) * pruned_per_shape
    # By hand: 9 VGG-16 + 4 ResNet-18 shapes, conv1_1 not prunable; dense: cutlass, cublas, fused; per
    # prunable shape fp 3×3 + wsp-r 3×(4 balanced + 3 unbalanced: the fused layer serves both)
    # + wsp-c 3×(2 balanced + 1 unbalanced) + wsp-c-fused 3×(2 balanced + 2 unbalanced: cutlass-xform serves
    # both) + wwp 3×2 = 57; one cuDNN conv per shape. (README, docs/performance.md)
    assert (len(shapes), len(prunable), dense_per_shape, pruned_per_shape, conv_per_shape) == (13, 12, 3, 57, 1)
    assert len(expand(spec)) == expected == 13 * 3 + 13 + 12 * 57 == 736


def test_default_sweep_measures_wsp_c_with_the_gather_in_the_transform():
    """cutlass-xform runs WSP-C balanced and unbalanced (padded to max c_i like the fused kernel)."""
    points = expand(default_spec())
    xform = [p for p in points if p.impl == "cutlass-xform"]
    assert {p.pattern for p in xform} == {"wsp-c-fused"}
    assert {p.balance for p in xform} == {"balanced", "unbalanced"}
    assert {p.ratio for p in xform} == {0.5, 0.7, 0.9}
    assert len(xform) == 12 * 3 * 2
    assert "cutlass-xform" not in PATTERNS["wsp-c"].implementations   # one WSP-C variant per impl name


def test_dense_is_not_multiplied_by_ratio_or_balance():
    points = expand(small_spec(ratios=(0.5, 0.7, 0.9), balances=("balanced", "unbalanced", "spread:0.2")))
    dense = [p for p in points if p.pattern == "dense"]
    per_shape = Counter((p.c, p.n, p.H, p.W) for p in dense)
    assert set(per_shape.values()) == {len(PATTERNS["dense"].default_implementations)}
    assert all(p.ratio is None and p.balance is None for p in dense)


def test_patterns_without_balance_get_none_and_are_not_multiplied():
    points = expand(small_spec(patterns=("fp", "wwp", "wsp-r"), balances=("balanced", "unbalanced")))
    for p in points:
        if p.pattern in ("fp", "wwp"):
            assert p.balance is None and p.ratio is not None
    fp = [p for p in points if p.pattern == "fp"]
    assert len(fp) == 4 * 2 * len(PATTERNS["fp"].default_implementations)   # 4 ResNet-18 shapes × 2 ratios


def test_implementations_only_where_they_serve_the_balance():
    points = expand(small_spec())
    wsp = [p for p in points if p.pattern == "wsp-r"]
    assert {p.impl for p in wsp if p.balance == "unbalanced"} == {"cutlass-grouped", "cutlass-padded", "fused"}
    assert {p.impl for p in wsp if p.balance == "balanced"} == {"cutlass", "cutlass-grouped", "fused", "cublas"}


def test_dense_point_comes_first_for_each_layer_shape():
    points = expand(small_spec(patterns=("wsp-r", "fp", "dense")))   # dense last in the spec on purpose
    seen: set = set()
    for p in points:
        shape = (p.net, p.c, p.n, p.H, p.W, p.batch, p.p, p.dtype)
        if shape not in seen:
            assert p.pattern == "dense", p.key
            seen.add(shape)


def test_not_prunable_layer_gets_only_dense_points():
    points = expand(small_spec(layers=("vgg16",)))
    conv1_1 = [p for p in points if "vgg16.conv1_1" in p.layers]
    assert conv1_1 and {p.pattern for p in conv1_1} == {"dense"}
    assert any(p.pattern == "wsp-r" for p in points)


def test_not_prunable_layer_from_a_user_table(tmp_path):
    table = tmp_path / "mine.csv"
    table.write_text("name,c,n,H,W,prunable\nstem,3,32,64,64,false\nbody,32,32,64,64,true\n")
    points = expand(small_spec(layers=(str(table),)))
    assert {p.pattern for p in points if p.layers == ("stem",)} == {"dense"}
    assert {p.pattern for p in points if p.layers == ("body",)} == {"dense", "wsp-r"}


def test_same_shape_layers_share_one_point_and_keep_their_names():
    points = expand(small_spec(layers=("vgg16",), patterns=("dense",)))
    p = next(p for p in points if (p.c, p.n, p.H) == (256, 256, 56) and p.impl == "cublas")
    assert p.layers == ("vgg16.conv3_2", "vgg16.conv3_3")
    assert p.key == "vgg16/c256n256@56x56/b32/p4/fp16/dense/cublas"
    r18 = expand(small_spec(patterns=("dense",), ))
    assert len({(p.c, p.n, p.H, p.W) for p in r18}) == 4          # 12 layers, 4 shapes
    assert sum(len(p.layers) for p in r18 if p.impl == "cutlass") == len(NETWORKS["resnet18"])


def test_no_dedupe_gives_one_point_per_layer_with_the_name_in_the_key():
    points = expand(small_spec(patterns=("dense",), dedupe_shapes=False))
    cutlass = [p for p in points if p.impl == "cutlass"]
    assert len(cutlass) == len(NETWORKS["resnet18"])
    assert all(p.key.startswith(p.layers[0] + "/") for p in cutlass)


def test_keys_unique_and_hold_every_coordinate():
    points = expand(small_spec(dtypes=("fp16", "fp32"), tiles=(4, 6), batches=(1, 32)))
    keys = [p.key for p in points]
    assert len(keys) == len(set(keys))
    p = next(p for p in points if p.pattern == "wsp-r" and p.balance == "unbalanced")
    for part in (p.net, f"b{p.batch}", f"p{p.p}", p.dtype, p.pattern, p.impl, f"r{p.ratio:g}", p.balance):
        assert part in p.key.split("/")


def test_keys_stable_across_processes():
    code = ("import json; from cutlass_wsp.sweep.plan import default_spec, expand; "
            "print(json.dumps([p.key for p in expand(default_spec())]))")
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout for seed in ("1", "2")]
    assert json.loads(outs[0]) == json.loads(outs[1]) == [p.key for p in expand(default_spec())]


@pytest.mark.parametrize("field,value,axis,accepted", [
    ("patterns", ("dense", "wsp-x"), "patterns", "wsp-r"),
    ("tiles", (5,), "tiles", "4, 6, 8"),
    ("dtypes", ("fp8",), "dtypes", "bf16"),
    ("balances", ("spread:2",), "balances", "spread:S"),
    ("balances", ("lopsided",), "balances", "unbalanced"),
    ("ratios", (1.5,), "ratios", "0 < ratio < 1"),
    ("batches", (0,), "batches", "positive"),
])
def test_unknown_axis_value_names_axis_value_and_accepted(field, value, axis, accepted):
    with pytest.raises(InputError) as e:
        expand(small_spec(**{field: value}))
    msg = str(e.value)
    assert repr(value[-1]) in msg and axis in msg and accepted in msg


def test_implementation_not_of_the_pattern():
    with pytest.raises(InputError, match="cusparse-block-diag.*wsp-r.*accepted values for wsp-r: cutlass"):
        expand(small_spec(implementations={"wsp-r": ("cusparse-block-diag",)}))


def test_implementations_that_serve_no_chosen_balance():
    with pytest.raises(InputError, match="no chosen implementation"):
        expand(small_spec(balances=("unbalanced",), implementations={"wsp-r": ("cutlass",)}))


def test_empty_sweeps_are_errors():
    with pytest.raises(InputError, match="needs a pruning ratio"):
        expand(small_spec(patterns=("wsp-r", "wwp"), ratios=()))
    with pytest.raises(InputError, match="has no points"):
        expand(small_spec(layers=("vgg16:conv1_1",), patterns=("wsp-r",)))
    with pytest.raises(InputError, match="'patterns' is empty"):
        expand(small_spec(patterns=()))
    # dense alone needs no ratio
    assert expand(small_spec(patterns=("dense",), ratios=(), balances=()))


def test_spread_balance_is_normalized():
    spec = validate(small_spec(balances=("spread:0.20", "balanced", "balanced")))
    assert spec.balances == ("spread:0.2", "balanced")
    keys = {p.key for p in expand(spec)}
    assert any(k.endswith("/spread:0.2") for k in keys)


def test_from_args_builds_the_spec():
    spec = from_args(["--net", "vgg16,resnet18", "--batch", "32", "--tile", "4", "--dtype", "fp16",
                      "--pattern", "dense,wsp-r", "--ratio", "0.5,70%", "--balance", "balanced"])
    assert spec.layers == ("vgg16", "resnet18")
    assert (spec.batches, spec.tiles, spec.dtypes) == ((32,), (4,), ("fp16",))
    assert spec.patterns == ("dense", "wsp-r")
    assert spec.ratios == (0.5, 0.7)
    assert spec.balances == ("balanced",)


def test_from_args_defaults_are_the_default_spec():
    assert [p.key for p in expand(from_args([]))] == [p.key for p in expand(default_spec())]


def test_from_args_layer_selection_keeps_its_commas():
    spec = from_args(["--net", "vgg16:conv4_2,conv5_1,resnet18:layer4.0.conv2", "--pattern", "dense"])
    assert spec.layers == ("vgg16:conv4_2,conv5_1", "resnet18:layer4.0.conv2")
    names = {n for p in expand(spec) for n in p.layers}
    assert names == {"vgg16.conv4_2", "vgg16.conv5_1", "resnet18.layer4.0.conv2"}


def test_from_args_impl_filter_and_per_pattern():
    spec = from_args(["--net", "resnet18", "--pattern", "dense,wsp-r,wwp", "--impl", "cutlass,cusparse-block-diag",
                      "--impl", "wsp-r=cutlass-grouped"])
    assert spec.implementations == {"dense": ("cutlass",), "wsp-r": ("cutlass-grouped",),
                                    "wwp": ("cusparse-block-diag",)}
    with pytest.raises(InputError, match="leaves pattern 'wwp' with no implementation"):
        from_args(["--pattern", "dense,wwp", "--impl", "cublas"])


def test_from_args_xform_alone_serves_every_balance():
    spec = from_args(["--net", "resnet18:layer4.0.conv2", "--pattern", "wsp-c-fused", "--impl", "cutlass-xform",
                      "--ratio", "0.7", "--balance", "balanced,unbalanced,spread:0.2"])
    keys = [p.key for p in expand(spec)]
    assert keys == [f"resnet18/c512n512@7x7/b32/p4/fp16/wsp-c-fused/cutlass-xform/r0.7/{b}"
                    for b in ("balanced", "unbalanced", "spread:0.2")]
    with pytest.raises(InputError, match="cutlass-xform.*not an implementation of pattern 'wsp-c'"):
        from_args(["--pattern", "wsp-c", "--impl", "wsp-c=cutlass-xform"])


def test_the_sweep_data_model_has_no_command_line_code():
    """argparse lives in commands/sweep_options.py; sweep/plan.py is the data model only."""
    import ast

    from cutlass_wsp.sweep import plan

    tree = ast.parse(Path(plan.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "argparse" not in imported
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert not defined & {"add_sweep_arguments", "spec_from_args", "from_args", "_ratios", "_ints"}


def test_from_args_bad_numbers():
    with pytest.raises(InputError, match="'batches'.*'x'"):
        from_args(["--batch", "32,x"])
    with pytest.raises(InputError, match="--ratio 'lots' is not a number"):
        from_args(["--ratio", "lots"])


# --- cuDNN conv points ---------------------------------------------------------------------------

def test_conv_point_has_no_tile_size_and_says_so_in_its_key():
    points = expand(small_spec(patterns=("conv", "dense"), tiles=(4, 6), dtypes=("fp16", "fp32"), batches=(1, 32)))
    conv = [p for p in points if p.pattern == "conv"]
    # once per shape, batch and dtype: the two tile sizes do not multiply it
    assert len(conv) == 4 * 2 * 2
    assert len({(p.c, p.n, p.H, p.W, p.batch, p.dtype) for p in conv}) == len(conv)
    p = next(p for p in conv if (p.c, p.H, p.batch, p.dtype) == (512, 7, 32, "fp16"))
    assert p.key == "resnet18/c512n512@7x7/b32/p-/fp16/conv/cudnn"
    assert p.coordinates()["p"] is None and p.impl == "cudnn"
    assert p.ratio is None and p.balance is None
    assert p.shape_key == (512, 512, 7, 7, 32, None, "fp16")
    # same position of every key segment as a Winograd point: b, p, dtype, pattern, impl
    dense = next(d for d in points if d.pattern == "dense" and (d.c, d.H, d.batch, d.dtype) == (512, 7, 32, "fp16"))
    assert [s[0] for s in p.key.split("/")[2:4]] == [s[0] for s in dense.key.split("/")[2:4]] == ["b", "p"]
    with pytest.raises(Unsupported, match="no Winograd GEMM batch"):
        p.problem()


def test_conv_points_cover_unprunable_layers_and_come_first():
    points = expand(small_spec(layers=("vgg16",), patterns=("wsp-r", "dense", "conv")))
    conv1_1 = [p for p in points if "vgg16.conv1_1" in p.layers]
    assert {p.pattern for p in conv1_1} == {"conv", "dense"}
    first_of_shape: dict = {}
    for p in points:
        first_of_shape.setdefault((p.c, p.n, p.H, p.W), p.pattern)
    assert set(first_of_shape.values()) == {"conv"}
    shared = next(p for p in points if p.pattern == "conv" and (p.c, p.H) == (256, 56))
    assert shared.layers == ("vgg16.conv3_2", "vgg16.conv3_3")


def test_conv_only_sweep_and_per_layer_keys():
    points = expand(small_spec(patterns=("conv",), ratios=(), balances=(), dedupe_shapes=False))
    assert len(points) == len(NETWORKS["resnet18"])
    assert all(p.key.startswith(p.layers[0] + "/") and "/p-/" in p.key for p in points)


def test_conv_keys_stable_and_unique_over_tiles():
    spec = small_spec(patterns=("conv", "dense", "wsp-r"), tiles=(4, 6, 8))
    a, b = [p.key for p in expand(spec)], [p.key for p in expand(spec)]
    assert a == b and len(a) == len(set(a))
    assert sum("/conv/" in k for k in a) == 4


def test_layer_time_axis():
    assert default_spec().layer_time is True
    assert from_args([]).layer_time is True
    assert from_args(["--no-layer-time"]).layer_time is False
    assert from_args(["--layer-time"]).layer_time is True
    assert validate(small_spec(layer_time=False)).layer_time is False
    # a measuring option, not a coordinate: the same points and keys either way
    assert [p.key for p in expand(small_spec(layer_time=False))] == [p.key for p in expand(small_spec())]
