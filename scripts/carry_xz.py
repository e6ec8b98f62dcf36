"""Compile-cache files carried to the device compressed, and restored there.

A fused kernel's library is ~1.0 MB and xz makes it ~0.25 MB, so one device call (64 MiB with the tree and the wheel)
carries every kernel it needs instead of a third of them, and the device builds nothing before its tests.
scripts/fused_carry.py packs; scripts/device_run.sh unpacks before anything reads the cache:

    python3 scripts/carry_xz.py unpack .cache/wsp/kernels
"""

from __future__ import annotations

import lzma
import os
import sys
from pathlib import Path

SUFFIX = ".xz"


def pack(src: Path, dst_dir: Path) -> int:
    """Write `src` compressed as dst_dir/<name>.xz, with src's times; returns the bytes written."""
    out = Path(dst_dir) / (Path(src).name + SUFFIX)
    out.write_bytes(lzma.compress(Path(src).read_bytes(), preset=6))
    st = Path(src).stat()
    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
    return out.stat().st_size


def unpack(directory: Path) -> tuple[int, list[str]]:
    """Restore every *.xz of `directory` beside it and remove it. The restored file keeps the .xz's times (older than
    the device call, so device_run.sh does not carry it back) and a library its executable mode. A damaged file is
    left out with its name in the second value (the compile cache then builds that kernel again)."""
    restored, bad = 0, []
    for f in sorted(Path(directory).glob("*" + SUFFIX)):
        out = f.with_name(f.name[:-len(SUFFIX)])
        tmp = out.with_name(out.name + ".part")
        try:
            tmp.write_bytes(lzma.decompress(f.read_bytes()))
        except (lzma.LZMAError, OSError) as e:
            tmp.unlink(missing_ok=True)
            bad.append(f"{f.name} ({e})")
            continue
        st = f.stat()
        tmp.chmod(0o755 if out.suffix == ".so" else 0o644)
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        tmp.replace(out)
        f.unlink()
        restored += 1
    return restored, bad


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "unpack":
        print("usage: carry_xz.py unpack DIR", file=sys.stderr)
        return 2
    d = Path(argv[1])
    if not d.is_dir():
        print(f"carry_xz: {d} is not a folder: nothing to unpack", file=sys.stderr)
        return 0
    n, bad = unpack(d)
    print(f"carry_xz: restored {n} files in {d}" + (f"; {len(bad)} damaged, left to rebuild: {bad[0]}" if bad else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
