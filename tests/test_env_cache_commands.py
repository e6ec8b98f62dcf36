"""`cutlass-wsp env` and `cutlass-wsp cache info|clear` through the CLI."""

from __future__ import annotations

import pytest

from cutlass_wsp import cli
from cutlass_wsp.commands import env
from cutlass_wsp.kernels.cache import KernelCache
from cutlass_wsp.kernels.description import default_desc

from test_compile_cache import make_fake_toolchain


def test_env_reports_each_item_and_exits_1_when_one_is_missing(monkeypatch, capsys):
    monkeypatch.setattr(env, "CHECKS", (
        ("GPU", lambda: (False, "no CUDA GPU or driver", "run on a GPU machine")),
        ("nvcc", lambda: (True, "13.0.88 at /usr/bin/nvcc", "")),
    ))
    assert cli.main(["env"]) == 1
    out = capsys.readouterr().out
    assert "GPU      MISSING  no CUDA GPU or driver" in out and "-> run on a GPU machine" in out
    assert "nvcc     ok       13.0.88 at /usr/bin/nvcc" in out


def test_env_exits_0_when_everything_is_found(monkeypatch, capsys):
    monkeypatch.setattr(env, "CHECKS", (("CuPy", lambda: (True, "14.2.0", "")),))
    assert cli.main(["env"]) == 0
    assert "MISSING" not in capsys.readouterr().out


def test_env_real_checks_name_the_fix(monkeypatch, tmp_path, capsys):
    """With no nvcc anywhere and no CUTLASS checkout, both are MISSING with what to install."""
    from cutlass_wsp.kernels import toolchain

    for var in ("CUTLASS_WSP_NVCC", "CUDA_HOME", "CUDA_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(toolchain, "_pathfinder_nvcc", lambda: None)
    monkeypatch.setenv("CUTLASS_WSP_CUTLASS_DIR", str(tmp_path))
    monkeypatch.setenv("CUTLASS_WSP_CACHE", str(tmp_path / "cache"))
    assert cli.main(["env"]) == 1
    out = capsys.readouterr().out
    assert "nvcc     MISSING" in out and "CUTLASS_WSP_NVCC" in out
    assert "CUTLASS  MISSING" in out and "unset it to use the wheel" in out
    assert f"cache    ok       {tmp_path / 'cache'}" in out


@pytest.fixture
def filled_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("FAKE_NVCC_FAIL", raising=False)
    monkeypatch.delenv("FAKE_NVCC_MODE", raising=False)
    cache = KernelCache(tmp_path / "cache", toolchain=make_fake_toolchain(tmp_path))
    cache.get(default_desc("dense", "fp16", "sm80"))
    cache.get(default_desc("dense", "bf16", "sm80"))
    return cache


def test_cache_info_and_clear(filled_cache, capsys):
    root = str(filled_cache.root)
    assert cli.main(["cache", "--dir", root]) == 0
    out = capsys.readouterr().out
    assert f"path     {root}" in out and "kernels  2" in out
    assert cli.main(["cache", "clear", "--dir", root]) == 0
    assert f"removed 2 kernels from {root}" in capsys.readouterr().out
    assert filled_cache.info()["entries"] == 0
    assert cli.main(["cache", "info", "--dir", root]) == 0
    assert "kernels  0" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["file", "under-a-file", "proc"])
def test_env_reports_a_cache_path_that_cannot_be_a_folder(monkeypatch, tmp_path, capsys, case):
    (tmp_path / "afile").write_text("x")
    path = {"file": tmp_path / "afile", "under-a-file": tmp_path / "afile" / "cache",
            "proc": "/proc/cutlass-wsp-cache"}[case]
    monkeypatch.setenv("CUTLASS_WSP_CACHE", str(path))
    monkeypatch.setattr(env, "CHECKS", tuple(c for c in env.CHECKS if c[0] == "cache"))
    assert cli.main(["env"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"cache    MISSING  {path}")
    assert {"file": "is a file, not a folder", "under-a-file": "is a file, not a folder",
            "proc": "cannot be created"}[case] in out[0]
    assert out[1].strip() == "-> set CUTLASS_WSP_CACHE to a folder you can write to"


def test_env_cache_ok_for_a_folder_to_be_created(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CUTLASS_WSP_CACHE", str(tmp_path / "new" / "cache"))
    monkeypatch.setattr(env, "CHECKS", tuple(c for c in env.CHECKS if c[0] == "cache"))
    assert cli.main(["env"]) == 0
    assert not (tmp_path / "new").exists()            # env only looks
