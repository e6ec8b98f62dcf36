"""The storage layer: atomic whole-file writes, durable appends, one writer at a time, output folders."""

from __future__ import annotations

import multiprocessing as mp
import os
import stat
import time
from pathlib import Path

import pytest

from cutlass_wsp import storage
from cutlass_wsp.errors import Busy, InputError


# ------------------------------------------------------------------------------ atomic whole-file writes
def test_atomic_write_text_replaces_the_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "sub" / "t.json"
    storage.atomic_write_text(path, "first\n")
    storage.atomic_write_text(path, "second\n")
    assert path.read_text() == "second\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["t.json"]


def test_atomic_write_fsyncs_before_it_replaces(tmp_path, monkeypatch):
    order = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(storage.os, "fsync", lambda fd: (order.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(storage.os, "replace", lambda a, b: (order.append("replace"), real_replace(a, b))[1])
    storage.atomic_write_text(tmp_path / "t.txt", "x")
    assert order[:2] == ["fsync", "replace"]


def test_a_failed_atomic_write_keeps_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "t.txt"
    storage.atomic_write_text(path, "old")

    def boom(a, b):
        raise OSError("disk full")

    monkeypatch.setattr(storage.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        storage.atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.txt"]       # the temp file is gone


def test_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a")
    path.chmod(0o640)
    storage.atomic_write_text(path, "b")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    fresh = tmp_path / "new.csv"
    storage.atomic_write_text(fresh, "c")
    assert stat.S_IMODE(fresh.stat().st_mode) & 0o044 == 0o044 & ~_umask()   # not mkstemp's 0600


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_append_durably_appends_and_fsyncs(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(storage.os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    path = tmp_path / "d" / "r.jsonl"
    storage.append_durably(path, b"one\n")
    storage.append_durably(path, b"two\n")
    assert path.read_bytes() == b"one\ntwo\n" and len(synced) == 2


# ------------------------------------------------------------------------------------ the lock file
def _hold(path: str, ready, release) -> None:
    with storage.locked(path, wait=False):
        ready.set()
        release.wait(30)


@pytest.fixture
def held(tmp_path):
    """Another process holding the lock of tmp_path/r.jsonl until the test ends."""
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    path = tmp_path / "r.jsonl"
    proc = ctx.Process(target=_hold, args=(str(path), ready, release))
    proc.start()
    assert ready.wait(30), "the helper process never took the lock"
    yield path, proc
    release.set()
    proc.join(30)


def test_lock_path_is_beside_the_file(tmp_path):
    assert storage.lock_path(tmp_path / "r.jsonl") == tmp_path / "r.jsonl.lock"


def test_a_held_lock_refuses_a_second_process_and_names_it(held):
    path, proc = held
    with pytest.raises(Busy) as e:
        with storage.locked(path, wait=False):
            pass
    assert e.value.holder_pid == proc.pid
    assert f"pid {proc.pid}" in str(e.value) and str(path) in str(e.value)


def test_waiting_a_while_then_giving_up(held):
    path, _ = held
    t0 = time.monotonic()
    with pytest.raises(Busy):
        with storage.locked(path, wait=0.3):
            pass
    assert 0.25 < time.monotonic() - t0 < 5


def test_the_lock_is_free_again_after_the_block(tmp_path):
    path = tmp_path / "r.jsonl"
    with storage.locked(path, wait=False):
        assert storage.lock_path(path).exists()
    with storage.locked(path, wait=False):      # released: taking it again works at once
        pass


def test_a_waiting_writer_gets_the_lock_when_it_is_released(tmp_path):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    path = tmp_path / "r.jsonl"
    proc = ctx.Process(target=_hold, args=(str(path), ready, release))
    proc.start()
    assert ready.wait(30)
    release.set()
    with storage.locked(path, wait=30):
        pass
    proc.join(30)


# ----------------------------------------------------------------------------------- output folders
def test_ensure_dir_creates_the_folder(tmp_path):
    out = storage.ensure_dir(tmp_path / "a" / "b", option="--out")
    assert out.is_dir()


@pytest.mark.parametrize("case", ["file", "proc", "under-a-file"])
def test_ensure_dir_refuses_with_one_line(tmp_path, case):
    target = {"file": tmp_path / "f", "proc": Path("/proc/cutlass-wsp-test/plots"),
              "under-a-file": tmp_path / "f" / "plots"}[case]
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError) as e:
        storage.ensure_dir(target, option="--out")
    msg = str(e.value)
    assert "\n" not in msg and "--out" in msg and str(target) in msg
    assert e.value.fix


def test_ensure_dir_refuses_a_folder_it_cannot_write(tmp_path, monkeypatch):
    real = storage._probe_writable

    def denied(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(storage, "_probe_writable", denied)
    with pytest.raises(InputError, match="cannot write.*Permission denied"):
        storage.ensure_dir(tmp_path, option="--plots")
    monkeypatch.setattr(storage, "_probe_writable", real)
    assert storage.ensure_dir(tmp_path, option="--plots") == tmp_path


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_ensure_dir_refuses_a_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(InputError, match="cannot write"):
            storage.ensure_dir(ro / "plots", option="--out")
    finally:
        ro.chmod(0o700)


def test_folder_problem_only_looks(tmp_path):
    (tmp_path / "f").write_text("x")
    assert storage.folder_problem(tmp_path / "new" / "deep") is None and not (tmp_path / "new").exists()
    assert storage.folder_problem(tmp_path / "f") == "is a file, not a folder"
    assert storage.folder_problem(tmp_path / "f" / "sub") == f"is a file, not a folder ({tmp_path / 'f'})"
    assert storage.folder_problem("/proc/cutlass-wsp-x").startswith("cannot be created")
    assert list(tmp_path.iterdir()) == [tmp_path / "f"]
