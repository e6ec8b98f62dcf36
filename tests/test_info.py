"""Provenance on any machine: git state, versions, and GPU fields None with a reason when no GPU."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cutlass_wsp.gpu.device import gpu_status
from cutlass_wsp.gpu.info import GPU_FIELDS, git_state, provenance

REPO = Path(__file__).resolve().parents[1]
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")


def _git(*args, cwd):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout.strip()


@needs_git
def test_provenance_has_commit_versions_and_time():
    p = provenance()
    if (REPO / ".git").exists():
        assert p["git_commit"] == _git("rev-parse", "HEAD", cwd=REPO)
        assert isinstance(p["git_dirty"], bool)
    assert re.fullmatch(r"\d+\.\d+\.\d+", p["python"])
    stamp = dt.datetime.fromisoformat(p["timestamp_utc"])
    assert stamp.utcoffset() == dt.timedelta(0)
    assert p["numpy"] and p["hostname"]


@pytest.mark.skipif(gpu_status()[0], reason="this machine has a GPU; tests/gpu covers it")
def test_provenance_without_gpu_names_the_reason():
    p = provenance()
    assert p["gpu_error"] == gpu_status()[1] and p["gpu_error"]
    assert all(p[k] is None for k in GPU_FIELDS)


@needs_git
def test_git_state_commit_and_dirty(tmp_path):
    _git("init", "-q", cwd=tmp_path)
    assert git_state(tmp_path) == (None, None)  # no commit yet
    (tmp_path / "f.txt").write_text("a")
    _git("add", "f.txt", cwd=tmp_path)
    _git("commit", "-q", "-m", "c", cwd=tmp_path)
    head = _git("rev-parse", "HEAD", cwd=tmp_path)
    assert git_state(tmp_path) == (head, False)
    (tmp_path / "untracked.txt").write_text("u")  # untracked files do not make it dirty
    assert git_state(tmp_path) == (head, False)
    (tmp_path / "f.txt").write_text("b")
    assert git_state(tmp_path) == (head, True)


@needs_git
def test_git_state_outside_a_checkout(tmp_path):
    assert git_state(tmp_path) == (None, None)
    sub = tmp_path / "pkg"
    sub.mkdir()
    _git("init", "-q", cwd=tmp_path)
    assert git_state(sub) == (None, None)  # inside someone else's repo, not its top: not ours
