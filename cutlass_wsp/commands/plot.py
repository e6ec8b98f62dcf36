"""`cutlass-wsp plot RESULTS.jsonl`: speedup figures (PNG + SVG) from result files; needs no GPU."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "draw speedup figures (PNG and SVG) from result files; works without a GPU"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", metavar="RESULTS.jsonl",
                        help="result files (a point in several files: the later file wins)")
    parser.add_argument("--out", default=None,
                        help="output folder (default: plots/ in the folder of the first results file, as "
                             "sweep does)")
    parser.add_argument("--ratio", default=None,
                        help="ratio of the per-layer bar charts, 0.7 or 70%% (default 0.7 when measured)")
    parser.add_argument("--format", default="png,svg", help="comma list of png, svg, pdf (default png,svg)")


def run(args: argparse.Namespace) -> int:
    from cutlass_wsp.commands.values import parse_ratio
    from cutlass_wsp.errors import InputError
    from cutlass_wsp.storage import ensure_dir
    from cutlass_wsp.sweep.plot import plot_results, skipped_counts, why_no_figures
    from cutlass_wsp.sweep.results import load_many

    ratio = None if args.ratio is None else parse_ratio(args.ratio)
    formats = [f.strip().lower() for f in args.format.split(",") if f.strip()]
    bad = [f for f in formats if f not in ("png", "svg", "pdf")]
    if bad or not formats:
        raise InputError(f"--format {args.format!r}: unknown format {bad[0] if bad else '(none)'!r}",
                         "use a comma list of png, svg, pdf")
    rows = load_many(args.results)
    out = Path(args.out) if args.out is not None else Path(args.results[0]).parent / "plots"
    created = not out.exists()
    ensure_dir(out, option="--out")
    paths = plot_results(rows, out, ratio=ratio, formats=formats)
    if not paths:
        if created:
            out.rmdir()     # leave no empty folder behind
        raise InputError(*why_no_figures(rows))
    for p in paths:
        print(p)
    skipped = skipped_counts(rows)
    ok = sum(r.get("status") == "ok" for r in rows)
    detail = f" ({', '.join(f'{n} {s}' for s, n in sorted(skipped.items()))})" if skipped else ""
    print(f"{len(paths)} files from {ok} ok rows; {sum(skipped.values())} rows not ok left out{detail}")
    return 0
