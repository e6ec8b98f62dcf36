"""Templates render for every dtype x arch, strictly (a missing variable fails), and a new family is
only a new template."""

from __future__ import annotations

import re
from dataclasses import replace

import jinja2
import pytest

from cutlass_wsp.dtypes import get_dtype
from cutlass_wsp.errors import Unsupported
from cutlass_wsp.kernels import emitter
from cutlass_wsp.kernels.description import default_desc

ABI_FUNCTIONS = ("wsp_abi_version", "wsp_args_size", "wsp_kernel_name", "wsp_can_implement",
                 "wsp_workspace_size", "wsp_run")


@pytest.fixture
def template_root(tmp_path, monkeypatch):
    """Point the emitter at a scratch template directory (holding copies of the shared files)."""
    for name in ("wsp_abi.h", "_abi_impl.cu.j2"):
        (tmp_path / name).write_text((emitter.templates_dir() / name).read_text())
    monkeypatch.setattr(emitter, "templates_dir", lambda: tmp_path)
    emitter.environment.cache_clear()
    yield tmp_path
    emitter.environment.cache_clear()


@pytest.mark.parametrize("arch", ["sm90", "sm80"])
@pytest.mark.parametrize("dtype", ["fp16", "bf16", "tf32"])
def test_every_dtype_and_arch_renders(dtype, arch):
    d = default_desc("dense", dtype, arch)
    src = emitter.render(d)
    assert f'return "{d.name}";' in src
    assert f"using Element = {get_dtype(dtype).cutlass};" in src
    assert "{{" not in src and "{%" not in src
    for fn in ABI_FUNCTIONS:
        assert re.search(rf"\b{fn}\(", src), fn
    assert "typedef struct wsp_args" in src            # the ABI header is inlined, so the key covers it
    assert f"kAlignment = {d.alignment};" in src
    if arch == "sm90":
        assert "CollectiveBuilder" in src and "GemmUniversalAdapter" in src
    else:
        assert "GemmUniversalMode::kBatched" in src and f"{d.sm80_stages()},  " in src


def test_sm90_schedules_reach_the_source():
    src = emitter.render(default_desc("dense", "bf16", "sm90", tile=(64, 128, 64), cluster=(2, 1, 1),
                                      kernel_schedule="tma_ws_pingpong", stages=5))
    assert "KernelSchedule = cutlass::gemm::KernelTmaWarpSpecializedPingpong;" in src
    assert "EpilogueSchedule = cutlass::epilogue::TmaWarpSpecialized;" in src
    assert "ClusterShape = Shape<_2, _1, _1>;" in src and "StageCount<5>" in src
    coop = emitter.render(default_desc("dense", "fp16", "sm90"))
    assert "EpilogueSchedule = cutlass::epilogue::TmaWarpSpecializedCooperative;" in coop
    assert "StageCountAutoCarveout" in coop
    cp = emitter.render(default_desc("dense", "fp16", "sm90", alignment=4, kernel_schedule="auto"))
    assert "KernelCpAsyncWarpSpecialized;" in cp and "NoSmemWarpSpecialized" in cp


def test_tf32_sm90_uses_the_swapped_tile_and_transposed_epilogue():
    src = emitter.render(default_desc("dense", "tf32", "sm90", tile=(64, 128, 32)))
    assert "TileShape = Shape<_128, _64, _32>;" in src
    assert "EpilogueSchedule = cutlass::gemm::EpilogueTransposed;" in src


def test_sm80_knobs_reach_the_source():
    d = default_desc("dense", "tf32", "sm80", tile=(64, 128, 32), warp=(32, 64, 32), swizzle=4, stages=5)
    src = emitter.render(d)
    assert "GemmShape<64, 128, 32>" in src and "GemmShape<32, 64, 32>" in src
    assert "GemmShape<16, 8, 8>" in src and "GemmIdentityThreadblockSwizzle<4>" in src
    assert "    5,  " in src


def test_invalid_desc_is_refused_before_rendering():
    with pytest.raises(Unsupported):
        emitter.render(replace(default_desc("dense", "fp16", "sm80"), cluster=(2, 1, 1)))


def test_missing_variable_fails(template_root):
    (template_root / "dense_sm80.cu.j2").write_text("int x = {{ tile[0] }} + {{ no_such_variable }};\n")
    with pytest.raises(jinja2.UndefinedError, match="no_such_variable"):
        emitter.render(default_desc("dense", "fp16", "sm80"))


def test_unknown_family_names_the_missing_template(template_root):
    with pytest.raises(Unsupported, match="wsp_c_gather_sm80.cu.j2"):
        emitter.render(default_desc("wsp_c_gather", "fp16", "sm80"))


def test_a_new_family_is_only_a_new_template(template_root):
    (template_root / "toy_sm80.cu.j2").write_text(
        '{% include "wsp_abi.h" %}\n// {{ family }} {{ name }} k={{ extra["k"] }} tile={{ tile|join("x") }}\n')
    d = default_desc("toy", "fp16", "sm80", extra=(("k", 3),))
    src = emitter.render(d)
    assert f"// toy {d.name} k=3 tile=128x128x32" in src and "WSP_ABI_VERSION" in src


def test_installed_layout_is_preferred(tmp_path, monkeypatch):
    """In a wheel the templates sit in cutlass_wsp/templates (force-included); in a checkout at the top."""
    kernels = tmp_path / "cutlass_wsp" / "kernels"
    kernels.mkdir(parents=True)
    monkeypatch.setattr(emitter, "__file__", str(kernels / "emitter.py"))
    assert emitter.templates_dir() == tmp_path / "templates"
    (tmp_path / "cutlass_wsp" / "templates").mkdir()
    assert emitter.templates_dir() == tmp_path / "cutlass_wsp" / "templates"
