"""KernelDesc: deterministic distinct names, normalisation, defaults, and validate() refusing bad combos."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from cutlass_wsp.errors import Unsupported
from cutlass_wsp.kernels.description import KernelDesc, default_desc

DTYPES = ("fp16", "bf16", "tf32")
ARCHS = ("sm90", "sm80")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_defaults_validate_with_16_byte_alignment(dtype, arch):
    d = default_desc("dense", dtype, arch)
    assert d.validate() is d
    assert d.alignment_bytes == 16 and d.dtype == dtype and d.arch == arch


def test_name_is_deterministic_and_readable():
    d = default_desc("dense", "fp16", "sm90")
    assert d.name == default_desc("dense", "fp16", "sm90").name
    assert d.name == "wsp_dense_fp16_sm90_128x128x64_s0_c1x1x1_tmawscoop_a8"
    assert default_desc("dense", "fp16", "sm80").name == "wsp_dense_fp16_sm80_128x128x32_s0_w64x64x32_sw1_a8"


def _variants() -> list[KernelDesc]:
    """One description per field change, on both archs."""
    s90 = default_desc("dense", "fp16", "sm90")
    s80 = default_desc("dense", "fp16", "sm80")
    return [
        s90, s80,
        replace(s90, dtype="bf16"), replace(s80, dtype="bf16"),
        replace(s90, family="wsp_r_grouped"),
        replace(s90, tile=(64, 128, 64), kernel_schedule="tma_ws_pingpong"),
        replace(s90, tile=(128, 256, 64)),
        replace(s90, stages=4),
        replace(s90, cluster=(2, 1, 1)),
        replace(s90, cluster=(1, 2, 1)),
        replace(s90, kernel_schedule="tma_ws"),
        replace(s90, kernel_schedule="auto"),
        replace(s90, epilogue_schedule="nosmem"),
        replace(s90, alignment=4, kernel_schedule="cpasync_ws"),
        replace(s80, alignment=4),
        replace(s80, swizzle=4),
        replace(s80, warp=(32, 64, 32)),
        replace(s80, stages=3),
        replace(s80, tile=(128, 256, 32), warp=(64, 64, 32)),
        replace(s90, extra=(("gather", "k"),)),
        replace(s90, extra=(("gather", "n"),)),
    ]


def test_every_field_shows_in_the_name():
    names = [d.name for d in _variants()]
    assert len(set(names)) == len(names), sorted(names)


def test_extras_are_normalised():
    a = KernelDesc(extra=(("b", 2), ("a", 1)))
    b = KernelDesc(extra=(("a", 1), ("b", 2)))
    assert a == b and hash(a) == hash(b) and a.name == b.name and a.name.endswith("_a1_b2")


def test_lists_become_tuples_and_round_trip_through_json():
    d = replace(default_desc("dense", "bf16", "sm90"), cluster=[2, 1, 1], extra=(("x", 3),))
    assert d.cluster == (2, 1, 1)
    back = KernelDesc.from_dict(json.loads(json.dumps(d.as_dict())))
    assert back == d and back.name == d.name


def test_resolved_follows_the_tile_and_alignment():
    base = default_desc("dense", "fp16", "sm90", kernel_schedule="auto")
    assert base.resolved().kernel_schedule == "tma_ws_cooperative"
    assert base.resolved().epilogue_schedule == "tma"
    small = replace(base, tile=(64, 128, 64)).resolved()
    assert small.kernel_schedule == "tma_ws_pingpong" and small.epilogue_schedule == "tma"
    unaligned = replace(base, alignment=2).resolved()
    assert unaligned.kernel_schedule == "cpasync_ws" and unaligned.epilogue_schedule == "nosmem"
    tf32 = default_desc("dense", "tf32", "sm90").resolved()
    assert tf32.epilogue_schedule == "transposed"
    s80 = default_desc("dense", "fp16", "sm80")
    assert s80.resolved() is s80


def test_tf32_sm90_tile_is_swapped_for_cutlass():
    d = default_desc("dense", "tf32", "sm90", tile=(64, 128, 32), kernel_schedule="tma_ws_cooperative")
    assert d.cutlass_tile == (128, 64, 32)
    assert default_desc("dense", "fp16", "sm90").cutlass_tile == (128, 128, 64)


def test_sm80_auto_stages_fit_the_budget():
    fp16 = default_desc("dense", "fp16", "sm80")
    tf32 = default_desc("dense", "tf32", "sm80")
    assert fp16.sm80_stages() == 4 and tf32.sm80_stages() == 3   # 16 KB and 32 KB per stage
    assert replace(fp16, stages=6).sm80_stages() == 6
    big = default_desc("dense", "fp16", "sm80", tile=(256, 128, 64), warp=(64, 64, 64))
    assert big.sm80_stages() == 2


BAD = [
    ({"arch": "sm80", "cluster": (2, 1, 1)}, "sm90 feature"),
    ({"arch": "sm80", "kernel_schedule": "tma_ws"}, "sm90 knobs"),
    ({"arch": "sm80", "tile": (48, 128, 32)}, "outside 32, 64, 128, 256"),
    ({"arch": "sm80", "tile": (128, 128, 24)}, "tile K 24"),
    ({"arch": "sm80", "warp": (48, 64, 32)}, "does not divide"),
    ({"arch": "sm80", "warp": (64, 64, 16)}, "warp K = tile K"),
    ({"arch": "sm80", "tile": (256, 256, 64), "warp": (128, 64, 64), "stages": 4}, "shared memory"),
    ({"arch": "sm80", "swizzle": 3}, "swizzle"),
    ({"arch": "sm90", "tile": (32, 128, 64)}, "tile M 32"),
    ({"arch": "sm90", "tile": (128, 100, 64)}, "tile N 100"),
    ({"arch": "sm90", "tile": (128, 128, 48)}, "tile K 48"),
    ({"arch": "sm90", "tile": (64, 128, 64), "kernel_schedule": "tma_ws_cooperative"}, "cooperative"),
    ({"arch": "sm90", "cluster": (3, 1, 1)}, "portable"),
    ({"arch": "sm90", "cluster": (2, 1, 2)}, "portable"),
    ({"arch": "sm90", "cluster": (2, 1, 1), "alignment": 4, "kernel_schedule": "cpasync_ws"}, "multicast"),
    ({"arch": "sm90", "alignment": 4, "kernel_schedule": "tma_ws"}, "16-byte alignment"),
    ({"arch": "sm90", "alignment": 4, "kernel_schedule": "cpasync_ws", "epilogue_schedule": "tma"},
     "TMA epilogue"),
    ({"arch": "sm90", "epilogue_schedule": "transposed"}, "transposed epilogue"),
    ({"arch": "sm90", "kernel_schedule": "bogus"}, "unknown sm90 kernel schedule"),
    ({"arch": "sm90", "swizzle": 2}, "sm80 knobs"),
    ({"arch": "sm90", "stages": 1}, "1-stage"),
    ({"arch": "sm90", "tile": (256, 256, 128), "stages": 2}, "shared memory"),
    ({"alignment": 3}, "does not divide 16 bytes"),
    ({"alignment": 16}, "does not divide 16 bytes"),
    ({"alignment": 1}, "at least 4 bytes"),
    ({"dtype": "fp32"}, "no tensor-core kernels"),
    ({"arch": "sm70"}, "unknown kernel arch"),
    ({"family": "Dense-1"}, "not a valid name"),
    ({"extra": (("Bad Key", 1),)}, "cannot appear in a kernel name"),
]


@pytest.mark.parametrize("change,why", BAD, ids=[w for _, w in BAD])
def test_validate_rejects_impossible_combinations(change, why):
    arch = change.get("arch", "sm90")
    base = default_desc("dense", "fp16", arch if arch in ("sm90", "sm80") else "sm90")
    with pytest.raises(Unsupported, match=why) as info:
        replace(base, **change).validate()
    assert info.value.fix          # every refusal says what to do instead


TF32_SM90_BAD = [
    ({"kernel_schedule": "tma"}, "needs a tma_ws"),
    ({"epilogue_schedule": "tma"}, "transposed epilogue"),
    ({"epilogue_schedule": "nosmem"}, "transposed epilogue"),
    ({"alignment": 2, "kernel_schedule": "cpasync_ws"}, "needs a tma_ws"),
    ({"tile": (128, 128, 48)}, "tile K 48"),
]


@pytest.mark.parametrize("change,why", TF32_SM90_BAD, ids=[w for _, w in TF32_SM90_BAD])
def test_tf32_on_sm90_needs_the_swapped_tma_path(change, why):
    base = default_desc("dense", "tf32", "sm90")
    with pytest.raises(Unsupported, match=why):
        replace(base, **change).validate()


def test_default_desc_rejects_unknown_arch_and_bad_overrides():
    with pytest.raises(Unsupported):
        default_desc("dense", "fp16", "sm75")
    with pytest.raises(Unsupported):
        default_desc("dense", "fp16", "sm80", cluster=(2, 1, 1))


@pytest.mark.parametrize("tile, schedule, ok", [
    ((256, 128, 64), "tma_ws_cooperative", True),    # 128 accumulators per thread
    ((128, 256, 64), "tma_ws_cooperative", True),
    ((64, 256, 64), "tma_ws_pingpong", True),
    ((256, 224, 64), "tma_ws_cooperative", False),   # 224: spilled on the H100
    ((128, 256, 64), "tma_ws_pingpong", False),      # a whole 128x256 tile per warp group
])
def test_sm90_tiles_that_would_spill_their_accumulators_are_refused(tile, schedule, ok):
    d = KernelDesc(tile=tile, kernel_schedule=schedule)
    if ok:
        assert d.validate() is d
    else:
        with pytest.raises(Unsupported, match="accumulators per thread"):
            d.validate()
