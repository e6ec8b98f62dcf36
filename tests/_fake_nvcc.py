"""A stand-in for nvcc in unit tests: `python _fake_nvcc.py [flags] -o OUT SOURCE`.

Environment:
  FAKE_NVCC_LOG     append one line per compile (the output path) to this file
  FAKE_NVCC_SLEEP   seconds to sleep before writing (to overlap concurrent builders)
  FAKE_NVCC_MODE    'blob' (default): write bytes derived from the source, not a loadable library;
                    'gcc': build a real shared library from tests/_fake_kernel.c with gcc
                    (-DFAKE_ABI_VERSION=<n> from FAKE_NVCC_ABI when set)
  FAKE_NVCC_FAIL    if this marker string occurs in the source: print an nvcc-style error at that line
                    to stderr and exit 2
--version prints an nvcc-like banner (FAKE_NVCC_VERSION, default 12.4.131).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    if "--version" in argv:
        v = os.environ.get("FAKE_NVCC_VERSION", "12.4.131")
        print(f"nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release {v.rsplit('.', 1)[0]}, V{v}")
        return 0
    out = Path(argv[argv.index("-o") + 1])
    source = Path(argv[-1])
    text = source.read_text()
    log = os.environ.get("FAKE_NVCC_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{out}\n")
    marker = os.environ.get("FAKE_NVCC_FAIL")
    if marker and marker in text:
        line = text[: text.index(marker)].count("\n") + 1
        print(f'{source}({line}): error: identifier "{marker}" is undefined', file=sys.stderr)
        print(f"1 error detected in the compilation of \"{source}\".", file=sys.stderr)
        return 2
    time.sleep(float(os.environ.get("FAKE_NVCC_SLEEP", "0")))
    if os.environ.get("FAKE_NVCC_MODE", "blob") == "gcc":
        here = Path(__file__).resolve().parent
        cmd = ["gcc", "-shared", "-fPIC", "-O1", f"-I{here.parent / 'templates'}",
               f"-DFAKE_KERNEL_NAME=\"{source.stem.split('-')[0]}\"", "-o", str(out), str(here / "_fake_kernel.c")]
        if os.environ.get("FAKE_NVCC_ABI"):
            cmd.insert(1, f"-DFAKE_ABI_VERSION={os.environ['FAKE_NVCC_ABI']}")
        return subprocess.run(cmd).returncode
    # Written in pieces so a concurrent reader could observe a partial file if publishing were not atomic.
    digest = hashlib.sha256(text.encode()).digest()
    with open(out, "wb") as f:
        for _ in range(64):
            f.write(digest * 64)
            f.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
