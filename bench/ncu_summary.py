#!/usr/bin/env python
"""A short account of one kernel from Nsight Compute's source page (scripts/ncu_fused.sh writes it:
`ncu -i REPORT --page source --csv --print-source sass`): the warp-stall samples by reason, the instructions
with the most samples, the opcode mix per warp and per unit of work, and the shared-memory wavefronts.

    python bench/ncu_summary.py ncu-fused-sass.csv --units 401408 [--kernel 0] [--top 20]

`--units`: how many units the counts are divided by, e.g. CTAs x chunks x warps for "per warp per chunk"
(VGG conv4_2 at batch 32, generation 3: 1568 x 32 x 12). Only the standard library: it runs anywhere.
"""

from __future__ import annotations

import argparse
import collections
import csv
import re
import sys

_OP = re.compile(r"\s*(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)")


def kernels(path: str) -> list[list[list[str]]]:
    """Each kernel's rows (header first) from ncu's source-page CSV (one 'Kernel Name' line per kernel)."""
    out: list[list[list[str]]] = []
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if row and row[0] == "Kernel Name":
                out.append([])
            elif out:
                out[-1].append(row)
    if not out:
        raise SystemExit(f"error: {path} holds no 'Kernel Name' section (write it with ncu --page source --csv)")
    return out


def summarize(rows: list[list[str]], units: float, top: int) -> str:
    hdr, data = rows[0], rows[1:]
    col = {h: i for i, h in enumerate(hdr)}

    def num(r, h):
        v = r[col[h]] if h in col and col[h] < len(r) else ""
        return int(v) if v not in ("", "-") else 0

    samples_h = "Warp Stall Sampling (All Samples)"
    stalls = [h for h in hdr if h.startswith("stall_") and "Not Issued" not in h]
    by_reason = collections.Counter()
    for r in data:
        for h in stalls:
            by_reason[h[6:]] += num(r, h)
    total = sum(by_reason.values()) or 1
    lines = [f"stall samples: {total}; by reason: " +
             ", ".join(f"{k} {v / total:.0%}" for k, v in by_reason.most_common(8))]
    lines.append(f"top {top} instructions by samples (index, SASS, samples, share, executions, main reasons):")
    for i in sorted(sorted(range(len(data)), key=lambda i: -num(data[i], samples_h))[:top]):
        r = data[i]
        why = sorted(((num(r, h), h[6:]) for h in stalls), reverse=True)[:2]
        lines.append(f"  {i:5d} {r[1].strip()[:60]:60s} {num(r, samples_h):7d} {num(r, samples_h) / total:5.1%} "
                     f"{num(r, 'Instructions Executed'):9d}  " + ", ".join(f"{k} {v}" for v, k in why if v))
    ops = collections.Counter()
    for r in data:
        m = _OP.match(r[1])
        ops[m.group(1) if m else "?"] += num(r, "Instructions Executed")
    n = sum(ops.values())
    lines.append(f"warp instructions executed: {n}; per unit: {n / units:.1f}; per unit by opcode: " +
                 ", ".join(f"{k} {v / units:.1f}" for k, v in ops.most_common(16)))
    wf = sum(num(r, "L1 Wavefronts Shared") for r in data)
    ideal = sum(num(r, "L1 Wavefronts Shared Ideal") for r in data)
    lines.append(f"shared-memory wavefronts (LSU and wgmma operands): {wf} ({wf / units:.1f} per unit), ideal {ideal}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv")
    ap.add_argument("--units", type=float, required=True, help="divide counts by this (e.g. CTAs x chunks x warps)")
    ap.add_argument("--kernel", type=int, default=0, help="which profiled launch (0: the first)")
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args(argv)
    try:
        ks = kernels(args.csv)
    except OSError as e:
        print(f"error: cannot read {args.csv}: {e.strerror}", file=sys.stderr)
        return 1
    if not 0 <= args.kernel < len(ks):
        print(f"error: --kernel {args.kernel}: the file holds {len(ks)} kernels (0..{len(ks) - 1})", file=sys.stderr)
        return 1
    print(summarize(ks[args.kernel], args.units, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
