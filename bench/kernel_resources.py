#!/usr/bin/env python
"""What the compiler made of our kernels: registers, shared memory, stack and spills (cuobjdump's
resource report) and the SASS instruction mix (how the tile is loaded, multiplied and stored).

    python bench/kernel_resources.py                 # every kernel library in the compile cache
    python bench/kernel_resources.py --match dense_fp16_sm90 --match gather_b_fp16

Needs cuobjdump (CUDA toolkit; found on PATH or beside nvcc). Reads the cached libraries only: nothing
is compiled or run. The instruction classes are the ones that tell the mainloops apart: TMA bulk loads
(UTMALDG) and warpgroup MMAs (HGMMA) in the sm90 kernels, cp.async (LDGSTS) and warp MMAs (HMMA) in
the sm80 ones, and the epilogue's stores (UTMASTG: TMA, STG: per thread).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

CLASSES = {   # SASS opcode prefix -> what it is
    "HGMMA": "wgmma (sm90 warpgroup MMA)",
    "HMMA": "mma.sync (warp MMA)",
    "UTMALDG": "TMA load",
    "UTMASTG": "TMA store",
    "LDGSTS": "cp.async (global -> shared, per thread)",
    "LDG": "global load",
    "STG": "global store",
    "LDSM": "ldmatrix (shared -> registers)",
    "LDS": "shared load",
    "STS": "shared store",
    "SYNCS": "mbarrier operations",
    "BAR": "CTA barrier",
    "WARPGROUP": "warpgroup fence/arrive",
}
_RES = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)")
_OP = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)")


def cuobjdump() -> str | None:
    found = shutil.which("cuobjdump")
    if found:
        return found
    nvcc = shutil.which("nvcc")
    if nvcc and (Path(nvcc).parent / "cuobjdump").exists():
        return str(Path(nvcc).parent / "cuobjdump")
    return None


def resources(tool: str, lib: Path) -> list[dict]:
    """One dict per kernel function in the library: name, registers, stack, shared, local bytes."""
    text = subprocess.run([tool, "-res-usage", str(lib)], capture_output=True, text=True).stdout
    out, fn = [], None
    for line in text.splitlines():
        if line.strip().startswith("Function"):
            fn = line.split("Function", 1)[1].strip().rstrip(":")
        m = _RES.search(line)
        if m and fn:
            reg, stack, shared, local = map(int, m.groups())
            out.append({"function": fn, "regs": reg, "stack": stack, "shared": shared, "local": local})
            fn = None
    return out


def sass_mix(tool: str, lib: Path) -> Counter:
    """Static count of each instruction class in the library's SASS (all its kernels)."""
    text = subprocess.run([tool, "-sass", str(lib)], capture_output=True, text=True).stdout
    counts: Counter = Counter()
    for m in _OP.finditer(text):
        if m.group(1) in CLASSES:   # the base opcode, before its '.' modifiers
            counts[m.group(1)] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--match", action="append", default=[], help="substring of the kernel name (repeatable)")
    ap.add_argument("--cache", default=None, help="compile cache root (default $CUTLASS_WSP_CACHE or ~/.cache)")
    args = ap.parse_args(argv)

    from cutlass_wsp.kernels.cache import KernelCache

    tool = cuobjdump()
    if tool is None:
        print("error: cuobjdump not found (install the CUDA toolkit or put it on PATH)", file=sys.stderr)
        return 2
    libs = sorted(KernelCache(args.cache).root.glob("kernels/wsp_*.so"))
    libs = [p for p in libs if not args.match or any(m in p.name for m in args.match)]
    if not libs:
        print("no kernel libraries matched in the compile cache", file=sys.stderr)
        return 1
    cols = [c for c in CLASSES]
    print("| kernel | regs | smem static B | stack B | local B | " + " | ".join(cols) + " |")
    print("|---" * (5 + len(cols)) + "|")
    for lib in libs:
        name = lib.name.split("-")[0]
        res = [r for r in resources(tool, lib) if "device_kernel" in r["function"] or "Kernel" in r["function"]]
        r = max(res, key=lambda r: r["regs"], default={"regs": 0, "shared": 0, "stack": 0, "local": 0})
        mix = sass_mix(tool, lib)
        print(f"| {name} | {r['regs']} | {r['shared']} | {r['stack']} | {r['local']} | "
              + " | ".join(str(mix.get(c, 0)) for c in cols) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
