"""Issue 14's table, measured in one run: for each VGG-16 and ResNet-18 3×3 layer with c >= 64 (batch 32,
fp16, F(2×2, 3×3)), the GEMM-batch time and the whole-layer time of

  2:4 at 50% (cuSPARSELt: ctypes strided-batched, and torch's binding, one call per position),
  WSP-R, WSP-C and BCBP at --ratio (0.5; balanced, CUTLASS),
  the hybrid dense-block point (seed 004) and WWP/CSR (cuSPARSE) at the sparsity of the spatial-Winograd
  masks (seed 003) at --sw-ratio (0.74: the paper's ImageNet figure),

beside dense CUTLASS and cuDNN's convolution, measured in the same run, and each one's speedup over dense
(GEMM batch and layer) and over cuDNN (layer), as a markdown table on stdout. Rows go to --out (JSONL, the
sweep's results format: `cutlass-wsp plot/plan/compare` read it).

    python bench/seeds_table.py                           # measure (GPU), then print the table
    python bench/seeds_table.py --read results/seeds-h200.jsonl   # the table from a results file (no GPU)

It is `cutlass-wsp sweep` on a fixed point list (sweep/session.run_sweep: verify, then time, every point;
resumable), with a short timing budget (--budget-ms 100 per timed launch) and no tuning by default
(--tune auto tunes what this GPU has not tuned yet, within --tune-budget-s): dense runs its tuned kernel
when the tuning store has one, else the default. 108 points (12 layer shapes × 9); on an H200 with a warm compile cache
it takes about 2 minutes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cutlass_wsp.errors import WspError  # noqa: E402

# (label, pattern, implementations, which ratio: "r" = --ratio, "sw" = --sw-ratio, None = the pattern's own)
METHODS = (
    ("cuDNN", "conv", ("cudnn",), None),
    ("dense", "dense", ("cutlass",), None),
    ("2:4 cuSPARSELt", "2:4", ("cusparselt",), None),
    ("2:4 torch", "2:4", ("torch-cslt",), None),
    ("WSP-R", "wsp-r", ("cutlass",), "r"),
    ("WSP-C", "wsp-c", ("cutlass",), "r"),
    ("BCBP", "bcbp", ("cutlass",), "r"),
    ("hybrid", "hybrid", ("bcbp+cusparse-block-diag",), "sw"),
    ("WWP/CSR", "spatial-winograd", ("cusparse-block-diag",), "sw"),
)
ALL_IMPLS = {"hybrid": ("bcbp+cusparse-block-diag", "bcbp+cusparse-per-position"),
             "spatial-winograd": ("cusparse-block-diag", "cusparse-per-position")}
MIN_C = 64


def points(nets: tuple[str, ...], ratio: float, sw_ratio: float, *, all_impls: bool = False, batch: int = 32):
    """The table's sweep points, in measuring order (per layer shape: cuDNN, dense, then the rest)."""
    from cutlass_wsp.sweep.plan import SweepSpec, expand

    out: dict[str, object] = {}
    for which, r in (("r", ratio), ("sw", sw_ratio)):
        chosen = [m for m in METHODS if m[3] in (which, None)]
        impls: dict[str, tuple[str, ...]] = {}
        for _, pat, im, _ in chosen:
            impls[pat] = tuple(dict.fromkeys(impls.get(pat, ()) + (ALL_IMPLS.get(pat, im) if all_impls else im)))
        spec = SweepSpec(layers=nets, batches=(batch,), tiles=(4,), dtypes=("fp16",),
                         patterns=tuple(dict.fromkeys(p for _, p, _, _ in chosen)), ratios=(r,),
                         balances=("balanced",), implementations=impls)
        for pt in expand(spec):
            if pt.c >= MIN_C:
                out.setdefault(pt.key, pt)
    order = {m[1]: i for i, m in enumerate(METHODS)}
    pts = list(out.values())
    shapes = list(dict.fromkeys((p.net, p.c, p.n, p.H, p.W) for p in pts))
    return sorted(pts, key=lambda p: (shapes.index((p.net, p.c, p.n, p.H, p.W)), order[p.pattern]))


def _fmt_ms(x) -> str:
    return "—" if x is None else f"{x:.3f}"


def _fmt_x(num, den) -> str:
    return "—" if num is None or den is None or den <= 0 else f"{num / den:.2f}×"


def table(rows: list[dict], ratio: float, sw_ratio: float) -> str:
    """Markdown: one line per (layer shape, method); speedup = reference time / the method's time."""
    from cutlass_wsp.sweep.results import latest_by_key

    rows = [r for r in latest_by_key(rows) if r.get("batch") and r.get("c", 0) >= MIN_C]
    label_of = {(pat, impl): label for label, pat, impls, _ in METHODS for impl in impls}
    for pat, impls in ALL_IMPLS.items():
        base = next(label for label, p, _, _ in METHODS if p == pat)
        for impl in impls:
            label_of.setdefault((pat, impl), f"{base} ({impl})")
    shapes = list(dict.fromkeys((r["net"], r["c"], r["n"], r["H"], r["W"]) for r in rows))
    out = [f"Batch 32, fp16, F(2×2,3×3). WSP-R/WSP-C/BCBP at {ratio:g} (balanced); hybrid and WWP/CSR at the "
           f"spatial-Winograd masks' sparsity (target {sw_ratio:g}; 'kept' says what each kept); 2:4 at 0.5. "
           "×dense and ×cuDNN are speedups: the reference's time ÷ the method's (> 1 = faster). GEMM = the "
           "Winograd GEMM batch; layer = input transform + GEMM batch + output transform (cuDNN: its conv).",
           "",
           "| layer | c→n @H | method | kept | GEMM ms | layer ms | GEMM ×dense | layer ×dense | layer ×cuDNN | status |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for net, c, n, H, W in shapes:
        here = [r for r in rows if (r["net"], r["c"], r["n"], r["H"], r["W"]) == (net, c, n, H, W)]
        ok = [r for r in here if r.get("status") == "ok"]
        dense = next((r for r in ok if r["pattern"] == "dense"), None)
        cudnn = next((r for r in ok if r["pattern"] == "conv"), None)
        d_gemm, d_layer = (dense or {}).get("median_ms"), (dense or {}).get("layer_ms")
        c_layer = (cudnn or {}).get("layer_ms") or (cudnn or {}).get("median_ms")
        names = ",".join((here[0].get("layers") or [])[:3]) if here else ""
        for r in sorted(here, key=lambda r: list(label_of).index((r["pattern"], r["impl"]))
                        if (r["pattern"], r["impl"]) in label_of else 99):
            label = label_of.get((r["pattern"], r["impl"]), f"{r['pattern']} {r['impl']}")
            good = r.get("status") == "ok"
            gemm = r.get("median_ms") if good and r["pattern"] != "conv" else None
            layer = (r.get("layer_ms") or (r.get("median_ms") if r["pattern"] == "conv" else None)) if good else None
            kept = r.get("kept_fraction")
            status = r.get("status", "")
            if not good and r.get("reason"):
                status += ": " + str(r["reason"])[:90].replace("|", "/")
            out.append(f"| {net} {names} | {c}→{n} @{H} | {label} | {'—' if kept is None else f'{kept:.3f}'} | "
                       f"{_fmt_ms(gemm)} | {_fmt_ms(layer)} | {_fmt_x(d_gemm, gemm)} | {_fmt_x(d_layer, layer)} | "
                       f"{_fmt_x(c_layer, layer)} | {status} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", default="vgg16,resnet18", help="networks (default %(default)s)")
    ap.add_argument("--ratio", type=float, default=0.5, help="ratio of WSP-R, WSP-C and BCBP (default %(default)s)")
    ap.add_argument("--sw-ratio", type=float, default=0.74,
                    help="target sparsity of the spatial-Winograd masks (hybrid, WWP/CSR; default %(default)s)")
    ap.add_argument("--out", type=Path, default=Path("results/seeds-table.jsonl"), help="results file (JSONL)")
    ap.add_argument("--read", type=Path, default=None, help="print the table of this results file; measure nothing")
    ap.add_argument("--budget-ms", type=float, default=100.0, help="timing budget per timed launch (default %(default)s)")
    ap.add_argument("--tune", choices=("off", "auto"), default="off", help="tune untuned kernels first (default off)")
    ap.add_argument("--tune-budget-s", type=float, default=60.0, help="with --tune auto (default %(default)s)")
    ap.add_argument("--all-impls", action="store_true",
                    help="hybrid and WWP/CSR with both cuSPARSE modes (per position and block-diagonal)")
    ap.add_argument("--dry-run", action="store_true", help="list the points and exit")
    ap.add_argument("--skip", default="", help="patterns left out, comma-separated (e.g. hybrid)")
    args = ap.parse_args(argv)
    try:
        from cutlass_wsp.sweep.results import ResultStore, load_many

        nets = tuple(x for x in args.nets.split(",") if x)
        if args.read is not None:
            print(table(load_many([args.read]), args.ratio, args.sw_ratio))
            return 0
        pts = points(nets, args.ratio, args.sw_ratio, all_impls=args.all_impls)
        skip = {x for x in args.skip.split(",") if x}
        pts = [p for p in pts if p.pattern not in skip]
        if args.dry_run:
            print("\n".join(p.key for p in pts))
            print(f"{len(pts)} points", file=sys.stderr)
            return 0
        from cutlass_wsp.sweep.session import run_sweep

        args.out.parent.mkdir(parents=True, exist_ok=True)
        store = ResultStore(args.out, out_option="--out")
        run_sweep(pts, store, budget_s=args.budget_ms / 1e3, tune=args.tune,
                  tune_budget_s=args.tune_budget_s if args.tune == "auto" else None)
        print(table(load_many([args.out]), args.ratio, args.sw_ratio))
    except WspError as e:
        print(f"seeds_table: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
