"""Compile cache with a fake nvcc (tests/_fake_nvcc.py): hits, misses, corruption, concurrency, errors."""

from __future__ import annotations

import json
import multiprocessing
import stat
import sys
from pathlib import Path

import pytest

from cutlass_wsp.errors import CompileError
from cutlass_wsp.kernels.cache import KernelCache, default_cache_dir, describe_compile_error
from cutlass_wsp.kernels.description import default_desc
from cutlass_wsp.kernels.toolchain import Toolchain

FAKE = Path(__file__).resolve().parent / "_fake_nvcc.py"


def make_fake_toolchain(root: Path, **kw) -> Toolchain:
    script = root / "nvcc"
    if not script.exists():
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    args = dict(nvcc=str(script), nvcc_version="12.4.131", cutlass_include=("/nonexistent/include",),
                cutlass_version="4.2.0")
    args.update(kw)
    return Toolchain(**args)


@pytest.fixture
def compiles(tmp_path, monkeypatch) -> Path:
    """File the fake compiler appends one line to per compile."""
    log = tmp_path / "compiles.log"
    monkeypatch.setenv("FAKE_NVCC_LOG", str(log))
    monkeypatch.delenv("FAKE_NVCC_FAIL", raising=False)
    monkeypatch.delenv("FAKE_NVCC_SLEEP", raising=False)
    monkeypatch.delenv("FAKE_NVCC_MODE", raising=False)
    return log


def count(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.fixture
def cache(tmp_path) -> KernelCache:
    return KernelCache(tmp_path / "cache", toolchain=make_fake_toolchain(tmp_path))


DESC = default_desc("dense", "fp16", "sm90")


def test_second_get_is_a_hit_without_compiling(cache, compiles, tmp_path):
    assert cache.lookup(DESC) is None
    first = cache.get(DESC)
    assert first.is_file() and count(compiles) == 1
    assert cache.get(DESC) == first and count(compiles) == 1
    # a fresh cache object (another process) on the same directory finds it too
    again = KernelCache(cache.root, toolchain=make_fake_toolchain(tmp_path))
    assert again.get(DESC) == first and count(compiles) == 1
    manifest = json.loads(next(cache.kernels_dir.glob("*.json")).read_text())
    assert manifest["name"] == DESC.name and manifest["so"] == first.name
    assert "-DNDEBUG" in manifest["flags"] and not any(f.startswith("-I") for f in manifest["flags"])
    assert (cache.kernels_dir / f"{first.name.rsplit('-', 1)[0]}.cu").read_text().startswith("// Generated")


@pytest.mark.parametrize("change", [
    {"extra_flags": ("-lineinfo",)},
    {"nvcc_version": "12.8.93"},
    {"cutlass_version": "4.3.0"},
])
def test_changed_flags_or_versions_miss(cache, compiles, tmp_path, change):
    first = cache.get(DESC)
    other = KernelCache(cache.root, toolchain=make_fake_toolchain(tmp_path, **change))
    assert other.key(DESC) != cache.key(DESC)
    second = other.get(DESC)
    assert count(compiles) == 2 and second != first and first.is_file()


def test_include_paths_do_not_change_the_key(cache, tmp_path):
    moved = KernelCache(cache.root, toolchain=make_fake_toolchain(tmp_path, cutlass_include=("/elsewhere",)))
    assert moved.key(DESC) == cache.key(DESC)


def test_different_descriptions_have_different_keys(cache):
    keys = {cache.key(default_desc("dense", dt, a)) for dt in ("fp16", "bf16", "tf32") for a in ("sm90", "sm80")}
    assert len(keys) == 6


def test_truncated_library_is_rebuilt(cache, compiles):
    so = cache.get(DESC)
    data = so.read_bytes()
    so.write_bytes(data[: len(data) // 2])
    cache._verified.clear()        # a new process would not have verified it yet
    assert cache.lookup(DESC) is None
    rebuilt = cache.get(DESC)
    assert count(compiles) == 2 and rebuilt.is_file() and cache.lookup(DESC) == rebuilt


def test_same_size_corruption_fails_the_sha256(cache, compiles):
    so = cache.get(DESC)
    data = bytearray(so.read_bytes())
    data[100] ^= 0xFF
    so.write_bytes(bytes(data))
    cache._verified.clear()
    assert cache.lookup(DESC) is None
    cache.get(DESC)
    assert count(compiles) == 2


@pytest.mark.parametrize("damage", ["garbage", "delete_so", "wrong_key"])
def test_damaged_manifest_is_a_miss(cache, compiles, damage):
    so = cache.get(DESC)
    manifest = next(cache.kernels_dir.glob("*.json"))
    if damage == "garbage":
        manifest.write_text("{not json")
    elif damage == "delete_so":
        so.unlink()
    else:
        m = json.loads(manifest.read_text())
        m["key"] = "0" * 64
        manifest.write_text(json.dumps(m))
    assert cache.lookup(DESC) is None
    assert cache.get(DESC).is_file() and count(compiles) == 2


def test_invalidate_forces_a_rebuild(cache, compiles):
    so = cache.get(DESC)
    cache.invalidate(DESC)
    assert not so.exists() and cache.lookup(DESC) is None
    cache.get(DESC)
    assert count(compiles) == 2


def _build_in_subprocess(root: str, tool_root: str, queue) -> None:
    try:
        c = KernelCache(root, toolchain=make_fake_toolchain(Path(tool_root)))
        queue.put(("ok", str(c.get(DESC))))
    except BaseException as e:  # reported to the parent, which asserts on it
        queue.put(("error", repr(e)))


def test_two_processes_building_the_same_kernel_both_succeed(cache, compiles, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_NVCC_SLEEP", "1.5")   # both are compiling at the same time
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_build_in_subprocess, args=(str(cache.root), str(tmp_path), queue))
             for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [r[0] for r in results] == ["ok", "ok"], results
    assert count(compiles) == 2            # both really compiled (neither saw the other's entry)
    for _, path in results:
        assert Path(path).is_file()
    final = cache.lookup(DESC)
    assert final is not None and str(final) in {r[1] for r in results}
    assert list(cache.tmp_dir.iterdir()) == []     # private build dirs are cleaned up


def test_compile_error_names_the_source_and_shows_the_failing_line(cache, compiles, monkeypatch):
    monkeypatch.setenv("FAKE_NVCC_FAIL", "wsp_kernel_name")
    with pytest.raises(CompileError) as info:
        cache.get(DESC)
    err = info.value
    kept = Path(err.source_path)
    assert kept.parent == cache.failed_dir and kept.is_file()
    assert str(kept) in str(err)
    assert 'identifier "wsp_kernel_name" is undefined' in err.log
    text = kept.read_text().splitlines()
    line = next(i for i, s in enumerate(text, 1) if "wsp_kernel_name" in s)
    assert f">{line:6d} | {text[line - 1]}" in str(err)     # the failing line, numbered and marked
    assert f" {line - 1:6d} | " in str(err)                   # with context around it
    assert (cache.failed_dir / (kept.stem + ".log")).read_text().strip() != ""
    assert cache.lookup(DESC) is None and list(cache.kernels_dir.glob("*.json")) == []


def test_compile_many_builds_each_unique_kernel_once_in_order(cache, compiles):
    descs = [default_desc("dense", "fp16", "sm90"), default_desc("dense", "bf16", "sm80"),
             default_desc("dense", "fp16", "sm90", tile=(64, 128, 64), kernel_schedule="tma_ws_pingpong")]
    paths = cache.compile_many(descs + [descs[0]], jobs=2)
    assert count(compiles) == 3
    assert paths[0] == paths[3] and len(set(paths)) == 3
    assert [p.name.split("-")[0] for p in paths[:3]] == [d.name for d in descs]
    assert cache.compile_many(descs, jobs=2) == paths[:3] and count(compiles) == 3


def test_compile_many_finishes_the_others_before_raising(cache, compiles, monkeypatch):
    monkeypatch.setenv("FAKE_NVCC_FAIL", "cute::Stride")      # only the sm90 template contains it
    good = default_desc("dense", "fp16", "sm80")
    with pytest.raises(CompileError):
        cache.compile_many([default_desc("dense", "fp16", "sm90"), good], jobs=2)
    assert cache.lookup(good) is not None


def test_info_and_clear(cache, compiles):
    assert cache.info()["entries"] == 0
    cache.get(DESC)
    cache.get(default_desc("dense", "tf32", "sm80"))
    info = cache.info()
    assert info["entries"] == 2 and info["bytes"] > 0 and info["path"] == str(cache.root)
    keep = cache.root / "notes.txt"
    keep.write_text("not ours")
    assert cache.clear() == 2
    assert cache.info()["entries"] == 0 and keep.exists()
    cache.get(DESC)
    assert count(compiles) == 3


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("CUTLASS_WSP_CACHE", str(tmp_path / "a"))
    assert default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("CUTLASS_WSP_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "cutlass-wsp"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "cutlass-wsp"


def test_error_inside_a_header_also_shows_the_instantiating_line(tmp_path):
    header = tmp_path / "builder.hpp"
    header.write_text("\n".join(f"header line {i}" for i in range(1, 21)))
    source = tmp_path / "k.cu"
    source.write_text("\n".join(f"source line {i}" for i in range(1, 41)))
    log = (f'{header}(12): error: static assertion failed with "Should meet TMA alignment requirement"\n'
           f"          detected during instantiation of class \"X\" at line 33 of {source}\n")
    text = describe_compile_error(log, source)
    assert "static assertion failed" in text
    assert ">    12 | header line 12" in text
    assert ">    33 | source line 33" in text


def test_host_compiler_style_errors_are_found(tmp_path):
    source = tmp_path / "k.cu"
    source.write_text("a\nb\nc\nd\n")
    text = describe_compile_error(f"{source}:3:5: error: expected ';'\n", source)
    assert ">     3 | c" in text and "expected ';'" in text


def test_unparseable_log_keeps_its_tail(tmp_path):
    assert "ptxas fatal" in describe_compile_error("one\ntwo\nptxas fatal : out of memory\n", tmp_path / "k.cu")


def test_a_given_toolchain_is_used_without_discovery(tmp_path, monkeypatch):
    # nothing to discover on PATH: keys and lookups still work with the toolchain given
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CUTLASS_WSP_NVCC", raising=False)
    c = KernelCache(tmp_path / "c", toolchain=make_fake_toolchain(tmp_path))
    assert len(c.key(DESC)) == 64 and c.lookup(DESC) is None


def test_relative_cache_root_is_made_absolute(tmp_path, monkeypatch):
    """nvcc runs inside the build directory: a relative root would send it to the wrong path."""
    from cutlass_wsp.kernels.cache import KernelCache

    monkeypatch.chdir(tmp_path)
    cache = KernelCache("rel-cache")
    assert cache.root.is_absolute() and cache.root == tmp_path / "rel-cache"
