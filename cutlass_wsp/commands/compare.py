"""`cutlass-wsp compare BASE.jsonl NEW.jsonl`: per-point time ratio and verdict.

Exit status: 0 no regression; 1 a point regressed (slower by more than the threshold, or no longer ok)
or a point of BASE is missing from NEW (unless --allow-missing); 2 bad input or nothing compared (an
empty file, or no point in common): a gate that compared nothing must not pass.
"""

from __future__ import annotations

import argparse

HELP = "compare two result files point by point; exit 1 if NEW regressed against BASE"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("base", metavar="BASE.jsonl", help="baseline results")
    parser.add_argument("new", metavar="NEW.jsonl", help="candidate results")
    parser.add_argument("--threshold", default="5%",
                        help="how much slower a point may get before it counts as a regression, 0 or more: 5%%, "
                             "0.05, or METRIC:5%% (default 5%%); a negative threshold is refused")
    parser.add_argument("--metric", default=None,
                        help="time statistic compared: median, min, q1, q3 of the GEMM batch, or layer (the whole layer's median) (default median)")
    parser.add_argument("--allow-different-gpu", action="store_true",
                        help="compare files measured on different GPUs anyway")
    parser.add_argument("--allow-missing", action="store_true",
                        help="pass even when points of BASE are missing from NEW (gate on the common points "
                             "only); comparing nothing at all still fails")
    parser.add_argument("--changed", action="store_true", help="list only points whose verdict is not 'same'")


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _table(rows: list[list[str]], left: int = 1) -> str:
    """Text columns (the first `left` and the last) flush left, numbers flush right."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, r in enumerate(rows):
        cells = [c.ljust(w) if i < left or i == len(r) - 1 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from cutlass_wsp.errors import InputError
    from cutlass_wsp.sweep.compare import SAME, compare, parse_metric, parse_threshold
    from cutlass_wsp.sweep.results import ResultStore, row_provenance

    metric_from_threshold, threshold = parse_threshold(args.threshold)
    if args.metric is not None:
        metric = parse_metric(args.metric)
    else:
        metric = metric_from_threshold or "median_ms"
    stores = [ResultStore(args.base), ResultStore(args.new)]
    base_rows, new_rows = (s.load() for s in stores)
    header_gpus = [{g} if (g := row_provenance((s.header or {}).get("provenance") or {})["gpu"]) else None
                   for s in stores]
    result = compare(base_rows, new_rows, threshold=threshold, metric=metric,
                     allow_different_gpu=args.allow_different_gpu,
                     base_gpus=None if base_rows and any(r.get("gpu") for r in base_rows) else header_gpus[0],
                     new_gpus=None if new_rows and any(r.get("gpu") for r in new_rows) else header_gpus[1])

    if not result.entries:
        raise InputError(f"nothing compared: {_nothing_in_common(args, base_rows, new_rows)}",
                         "compare two files that measured the same points")
    shown = [e for e in result.entries if not args.changed or e.verdict != SAME]
    name = metric.removesuffix("_ms")
    several = len(result.gpus) > 1          # a file of several GPUs: each GPU compared with itself
    if shown:
        table = [(["gpu"] if several else []) + ["key", f"base {name} ms", f"new {name} ms", "ratio", "verdict"]]
        for e in shown:
            verdict = e.verdict
            if e.verdict in ("broke", "fixed", "not ok"):
                verdict += f" ({e.base_status} -> {e.new_status})"
            table.append(([e.gpu or "-"] if several else [])
                         + [e.key, _ms(e.base), _ms(e.new), "-" if e.ratio is None else f"{e.ratio:.3f}", verdict])
        print(_table(table, left=2 if several else 1))
    for k in result.only_base:
        print(f"only in BASE: {k}")
    for k in result.only_new:
        print(f"only in NEW:  {k}")

    gm = result.geomean_ratio()
    counts = ", ".join(f"{result.count(v)} {v}" for v in ("slower", "faster", "same", "broke", "fixed", "not ok")
                       if result.count(v) or v in ("slower", "faster", "same"))
    print(f"\n{len(result.entries)} points compared on {name} time, threshold {threshold:.1%}: {counts}; "
          f"geomean ratio {'-' if gm is None else f'{gm:.3f}'}; "
          f"{len(result.only_base)} only in BASE, {len(result.only_new)} only in NEW")
    if several:
        for gpu in result.gpus:
            mine = [e for e in result.entries if e.gpu == gpu]
            g = result.geomean_ratio(gpu)
            print(f"  {gpu}: {len(mine)} points, {sum(e.is_regression for e in mine)} regressed, "
                  f"geomean ratio {'-' if g is None else f'{g:.3f}'}")
    if result.base_gpus and result.new_gpus and not result.base_gpus & result.new_gpus:
        print(f"warning: different GPUs ({', '.join(sorted(result.base_gpus))} vs "
              f"{', '.join(sorted(result.new_gpus))}), compared because of --allow-different-gpu")
    regressions, missing = result.regressions, len(result.only_base)
    if regressions:
        print(f"REGRESSION: {len(regressions)} point(s) slower by more than {threshold:.1%} or no longer ok")
    if missing and not args.allow_missing:
        n = len(result.entries)
        print(f"MISSING: {missing} point(s) of BASE are not in NEW (measure them into NEW, or pass --allow-missing "
              f"to gate on the {n} common point{'s' * (n != 1)} only)")
    if regressions or (missing and not args.allow_missing):
        return 1
    print("no regression" + (f" ({missing} point(s) of BASE not in NEW, allowed by --allow-missing)" if missing else ""))
    return 0


def _nothing_in_common(args: argparse.Namespace, base_rows: list, new_rows: list) -> str:
    def points(n: int) -> str:
        return f"{n} point{'s' * (n != 1)}"

    for path, rows in ((args.new, new_rows), (args.base, base_rows)):
        if not rows:
            return f"{path} has no rows"
    return f"{args.base} ({points(len(base_rows))}) and {args.new} ({points(len(new_rows))}) have no point in common"
