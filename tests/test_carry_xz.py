"""scripts/carry_xz.py: compile-cache files packed here, restored on the device (scripts/device_run.sh)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "carry_xz.py"


def _module():
    spec = importlib.util.spec_from_file_location("carry_xz", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_packed_file_comes_back_byte_for_byte_with_its_times_and_mode(tmp_path):
    cx = _module()
    src, carry = tmp_path / "src", tmp_path / "carry"
    src.mkdir()
    carry.mkdir()
    lib = src / "k-0123.so"
    lib.write_bytes(os.urandom(2000) + b"\0" * 200_000)   # a library is mostly zeros and tables: it compresses
    cu = src / "k-0123.cu"
    cu.write_text("__global__ void k() {}\n" * 500)
    os.utime(lib, ns=(1_000_000_000_000_000_000, 1_500_000_000_000_000_000))
    sizes = [cx.pack(f, carry) for f in (lib, cu)]
    assert sorted(p.name for p in carry.iterdir()) == ["k-0123.cu.xz", "k-0123.so.xz"]
    assert sizes[0] < lib.stat().st_size / 5 and sizes[1] < cu.stat().st_size / 5
    assert (carry / "k-0123.so.xz").stat().st_mtime_ns == lib.stat().st_mtime_ns
    assert cx.unpack(carry) == (2, [])
    assert sorted(p.name for p in carry.iterdir()) == ["k-0123.cu", "k-0123.so"]   # the .xz files are gone
    assert (carry / "k-0123.so").read_bytes() == lib.read_bytes()
    assert (carry / "k-0123.cu").read_text() == cu.read_text()
    assert (carry / "k-0123.so").stat().st_mtime_ns == lib.stat().st_mtime_ns       # older than the device call
    assert os.access(carry / "k-0123.so", os.X_OK) and not os.access(carry / "k-0123.cu", os.X_OK)


def test_a_damaged_file_is_left_out_by_name_and_the_rest_is_restored(tmp_path):
    cx = _module()
    good = tmp_path / "a.so"
    good.write_bytes(b"x" * 1000)
    cx.pack(good, tmp_path)
    good.unlink()
    (tmp_path / "b.so.xz").write_bytes(b"not xz")
    n, bad = cx.unpack(tmp_path)
    assert n == 1 and len(bad) == 1 and bad[0].startswith("b.so.xz (")
    assert (tmp_path / "a.so").read_bytes() == b"x" * 1000
    assert not (tmp_path / "b.so").exists() and not (tmp_path / "b.so.part").exists()


def test_the_command_line_says_what_it_did_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "unpack", str(tmp_path / "none")], capture_output=True,
                         text=True)
    assert out.returncode == 0 and "is not a folder: nothing to unpack" in out.stderr
    (tmp_path / "c.so").write_bytes(b"y" * 10)
    _module().pack(tmp_path / "c.so", tmp_path)
    (tmp_path / "c.so").unlink()
    out = subprocess.run([sys.executable, str(SCRIPT), "unpack", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == f"carry_xz: restored 1 files in {tmp_path}\n"
    bad = subprocess.run([sys.executable, str(SCRIPT), "pack"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("usage:")
