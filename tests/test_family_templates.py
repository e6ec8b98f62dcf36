"""The pruned families' templates (gather_b, wsp_r_grouped) render for every dtype x arch they support,
strictly (StrictUndefined: a missing variable fails), with the choices of the description in the source."""

from __future__ import annotations

import re

import pytest

from cutlass_wsp.dtypes import get_dtype
from cutlass_wsp.errors import Unsupported
from cutlass_wsp.families.gather import gather_desc
from cutlass_wsp.families.wsp_r import check_grouped_desc
from cutlass_wsp.kernels import emitter
from cutlass_wsp.kernels.description import default_desc

ABI_FUNCTIONS = ("wsp_abi_version", "wsp_args_size", "wsp_kernel_name", "wsp_can_implement",
                 "wsp_workspace_size", "wsp_run")


def _common(desc, src: str) -> None:
    assert f'return "{desc.name}";' in src
    assert f"using Element = {get_dtype(desc.dtype).cutlass};" in src
    assert "{{" not in src and "{%" not in src
    assert '#error "grouped' not in src          # only the toolkit guard (#if !defined(...)) may #error
    for fn in ABI_FUNCTIONS:
        assert re.search(rf"\b{fn}\(", src), fn
    assert "typedef struct wsp_args" in src
    assert f"kAlignment = {desc.alignment};" in src


@pytest.mark.parametrize("tile_m", [32, 64, 128])
@pytest.mark.parametrize("dtype", ["fp16", "bf16", "tf32"])
def test_gather_b_renders(dtype, tile_m):
    d = gather_desc(dtype, N=3136, K=256, tile_m=tile_m)
    src = emitter.render(d)
    _common(d, src)
    m, n, k = d.tile
    wm, wn, wk = d.warp_shape()
    assert f"GemmShape<{m}, {n}, {k}>" in src and f"GemmShape<{wm}, {wn}, {wk}>" in src
    inst = "GemmShape<16, 8, 8>" if dtype == "tf32" else "GemmShape<16, 8, 16>"
    assert inst in src
    assert re.search(r"false,\s*// GatherA\s*true,\s*// GatherB", src)
    assert "ptr_gather_B_indices += int64_t(tile.k()) * params.gather_index_stride" in src
    assert "GemmUniversalBase<PerBatchGatherKernel>" in src and "GemmUniversalMode::kBatched" in src
    assert f"{d.sm80_stages()},  " in src


def test_gather_b_has_no_sm90_template():
    with pytest.raises(Unsupported, match="no kernel template gather_b_sm90"):
        emitter.render(default_desc("gather_b", "fp16", "sm90"))


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("schedule,tile,kernel_type,epi_type", [
    ("tma_ws_cooperative", (128, 128, 64), "KernelPtrArrayTmaWarpSpecializedCooperative",
     "PtrArrayTmaWarpSpecializedCooperative"),
    ("tma_ws_pingpong", (64, 128, 64), "KernelPtrArrayTmaWarpSpecializedPingpong",
     "PtrArrayTmaWarpSpecializedPingpong"),
])
def test_grouped_sm90_renders(dtype, schedule, tile, kernel_type, epi_type):
    d = check_grouped_desc(default_desc("wsp_r_grouped", dtype, "sm90", tile=tile, kernel_schedule=schedule))
    src = emitter.render(d)
    _common(d, src)
    assert f"KernelSchedule = cutlass::gemm::{kernel_type};" in src
    assert f"EpilogueSchedule = cutlass::epilogue::{epi_type};" in src
    assert "TileShape = Shape<_{}, _{}, _{}>;".format(*tile) in src
    assert "GroupProblemShape<Shape<int, int, int>>" in src and "GemmUniversalMode::kGrouped" in src
    assert "LayoutA*" in src and "LayoutB*" in src and "LayoutD*" in src     # per-group strides (ptr-array)


def test_grouped_sm90_nosmem_epilogue_and_stages():
    d = check_grouped_desc(default_desc("wsp_r_grouped", "fp16", "sm90", epilogue_schedule="nosmem", stages=4))
    src = emitter.render(d)
    assert "EpilogueSchedule = cutlass::epilogue::PtrArrayNoSmemWarpSpecialized;" in src
    assert "StageCount<4>" in src and "StageCountAutoCarveout" not in src


def test_grouped_sm90_template_refuses_other_schedules():
    """A description check_grouped_desc rejects would not compile: the template says why at once."""
    src = emitter.render(default_desc("wsp_r_grouped", "fp16", "sm90", alignment=4, kernel_schedule="auto"))
    assert '#error "grouped sm90 kernels exist only for' in src
    tf32 = emitter.render(default_desc("wsp_r_grouped", "tf32", "sm90"))
    assert '#error "grouped sm90 kernels have no transposed epilogue' in tf32


@pytest.mark.parametrize("dtype", ["fp16", "bf16", "tf32"])
def test_grouped_sm80_renders(dtype):
    d = check_grouped_desc(default_desc("wsp_r_grouped", dtype, "sm80"))
    src = emitter.render(d)
    _common(d, src)
    assert "DefaultGemmGrouped<" in src and "GemmGrouped<GemmKernel>" in src
    assert "GroupScheduleMode::kDeviceOnly" in src
    inst = "GemmShape<16, 8, 8>" if dtype == "tf32" else "GemmShape<16, 8, 16>"
    assert inst in src and "GemmShape<{}, {}, {}>".format(*d.tile) in src
