"""Measure the numerical error of the numpy Winograd convolution F(m×m, 3×3), m = 2, 4, 6.

Relative error ||out - ref|| / ||ref|| against the direct float64 correlation of the same (float64)
inputs, median over seeds, for float64, float32 and the fp16 GPU emulation (fp16 storage between
steps, fp32 arithmetic). The "direct fp16" column is the direct conv with fp16-rounded inputs and an
fp16-rounded output: the error any fp16 layer has before Winograd adds its own. Prints markdown.

    python scripts/winograd_error.py                      # B=2, c=n=64, 28×28, 5 seeds
    python scripts/winograd_error.py --matrices           # the exact matrices, for docs/winograd.md
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from cutlass_wsp import winograd as wg


def rel_err(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(out.astype(np.float64) - ref) / np.linalg.norm(ref))


def measure(batch: int, c: int, n: int, size: int, seeds: int) -> list[dict]:
    errs: dict[tuple[str, int], list[float]] = {}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        d = rng.standard_normal((batch, c, size, size))
        g = rng.standard_normal((n, c, 3, 3)) * np.sqrt(2.0 / (9 * c))  # He init
        ref = wg.direct_conv2d(d, g)
        direct16 = wg.direct_conv2d(d.astype(np.float16), g.astype(np.float16)).astype(np.float16)
        errs.setdefault(("direct16", 0), []).append(rel_err(direct16, ref))
        for m in wg.TILE_SIZES:
            for name, dt in (("fp64", np.float64), ("fp32", np.float32), ("fp16", np.float16)):
                errs.setdefault((name, m), []).append(rel_err(wg.winograd_conv2d(d, g, m, dt), ref))
    direct16 = statistics.median(errs[("direct16", 0)])
    rows = []
    for m in wg.TILE_SIZES:
        med = {k: statistics.median(errs[(k, m)]) for k in ("fp64", "fp32", "fp16")}
        rows.append({"m": m, "p": m + 2, **med, "direct16": direct16})
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = ["| F(m×m,3×3) | p | mults saved (9m²/p²) | float64 | float32 | fp16 emulation | direct conv, fp16 in/out |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        m, p = r["m"], r["p"]
        lines.append(f"| F({m}×{m},3×3) | {p} | {9 * m * m / (p * p):.2f}× | {r['fp64']:.1e} | {r['fp32']:.1e} "
                     f"| {r['fp16']:.1e} | {r['direct16']:.1e} |")
    return "\n".join(lines)


def matrices_markdown() -> str:
    out = []
    for m in wg.TILE_SIZES:
        pts = ", ".join(str(a) for a in wg.POINTS[m])
        out.append(f"### F({m}×{m}, 3×3), p = {m + 2}, points {pts}, ∞\n")
        for name, M in zip(("Aᵀ", "G", "Bᵀ"), wg.matrices(m)):
            width = max(len(str(x)) for x in M.flat)
            body = "\n".join("  " + " ".join(str(x).rjust(width) for x in row) for row in M)
            out.append(f"{name} ({M.shape[0]}×{M.shape[1]}):\n```\n{body}\n```\n")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--channels", type=int, default=64, help="c")
    ap.add_argument("--filters", type=int, default=64, help="n")
    ap.add_argument("--size", type=int, default=28, help="H = W")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--matrices", action="store_true", help="print the exact transform matrices instead")
    args = ap.parse_args()
    if args.matrices:
        print(matrices_markdown())
        return
    rows = measure(args.batch, args.channels, args.filters, args.size, args.seeds)
    print(f"B={args.batch}, c={args.channels}, n={args.filters}, {args.size}×{args.size}, He-init filters, "
          f"N(0,1) inputs; ||out - ref|| / ||ref|| vs direct float64, median of {args.seeds} seeds\n")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
