"""`cutlass-wsp bench`: measure one point (verified, then timed) and print its row."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "measure one point: a layer, a pattern, an implementation, a ratio"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from cutlass_wsp.dtypes import DTYPES
    from cutlass_wsp.sweep.plan import PATTERNS

    balanced = ", ".join(name for name, info in PATTERNS.items() if info.uses_balance)
    pruned = ", ".join(name for name, info in PATTERNS.items() if info.uses_ratio and info.fixed_ratio is None)
    p.add_argument("layer", help="one layer: NET:NAME or NET:INDEX (e.g. vgg16:conv4_2), or a layer file")
    p.add_argument("--batch", type=int, default=32, help="batch size (default %(default)s)")
    p.add_argument("--tile", type=int, default=4, help="Winograd tile p (4, 6, 8)")
    p.add_argument("--dtype", default="fp16", help=f"{', '.join(DTYPES)} (default %(default)s)")
    p.add_argument("--pattern", default="dense", help=f"{', '.join(PATTERNS)} (default %(default)s)")
    p.add_argument("--impl", default=None, help="implementation (default: the pattern's first)")
    p.add_argument("--ratio", default=None,
                   help=f"fraction pruned, 0.7 or 70%% (needed by {pruned})")
    p.add_argument("--balance", default=None,
                   help=f"balanced (default), unbalanced or spread:S, for the patterns with a balance ({balanced})")
    p.add_argument("--budget-ms", type=float, default=250.0,
                   help="time spent timing the point after warm-up, in ms (default %(default)s)")
    p.add_argument("--graph", action="store_true", help="time CUDA-graph replays")
    p.add_argument("--no-layer-time", action="store_true", help="time the GEMM batch only, not the whole layer")
    p.add_argument("--out", type=Path, default=None, help="also append the row to this results file")
    p.add_argument("--json", action="store_true", help="print the whole row as JSON")
    from cutlass_wsp.commands._tuning import add_tune_arguments

    add_tune_arguments(p)


def run(args: argparse.Namespace) -> int:
    from cutlass_wsp.commands.values import parse_ratio
    from cutlass_wsp.errors import InputError
    from cutlass_wsp.sweep.plan import PATTERNS, SweepSpec, expand

    if args.pattern not in PATTERNS:
        raise InputError(f"unknown pattern {args.pattern!r}", f"use one of {', '.join(PATTERNS)}")
    info = PATTERNS[args.pattern]
    impl = args.impl or info.default_implementations[0]
    if info.uses_ratio and args.ratio is None and info.fixed_ratio is None:
        raise InputError(f"pattern {args.pattern} needs --ratio", "e.g. --ratio 0.7")
    ratios = (parse_ratio(args.ratio),) if info.uses_ratio and args.ratio is not None else ()
    spec = SweepSpec(layers=(args.layer,), batches=(args.batch,), tiles=(args.tile,), dtypes=(args.dtype,),
                     patterns=(args.pattern,), ratios=ratios,
                     balances=(args.balance or "balanced",), implementations={args.pattern: (impl,)})
    points = expand(spec)
    if len(points) != 1:
        raise InputError(f"{args.layer!r} names {len(points)} layer shapes", "name one layer, e.g. vgg16:conv4_2")
    from cutlass_wsp.commands._tuning import tune_mode
    from cutlass_wsp.sweep.session import measure_one

    row = measure_one(points[0], budget_s=args.budget_ms / 1e3, use_graph=args.graph, out=args.out,
                      layer_time=not args.no_layer_time, tune=tune_mode(args), tune_budget_s=args.tune_budget_s)
    if args.json:
        print(json.dumps(row, indent=1))
    else:
        keys = ("key", "status", "reason", "kernel", "median_ms", "iqr_ms", "reps", "floor_ms",
                "pct_of_floor", "rel_error", "layer_ms", "transform_ms", "transform_pct_of_floor")
        for k in keys:
            if row.get(k) is not None:
                print(f"{k:>13}: {row[k]}")
    return 0 if row["status"] == "ok" else 1
