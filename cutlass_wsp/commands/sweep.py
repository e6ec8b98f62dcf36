"""`cutlass-wsp sweep`: measure every point of a sweep (default: the README's main job), append rows
to a JSON-lines file as they finish, resume where a previous run stopped, then write CSV and plots."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "measure a sweep of layers x patterns x ratios on the GPU (resumable), then plot it"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from cutlass_wsp.commands._tuning import add_tune_arguments
    from cutlass_wsp.commands.sweep_options import add_sweep_arguments

    add_sweep_arguments(p)
    o = p.add_argument_group("output and timing")
    o.add_argument("--out", default="results/sweep.jsonl", type=Path,
                   help="results file: rows are appended, points already there are skipped (default %(default)s)")
    o.add_argument("--plots", type=Path, default=None,
                   help="directory for the plots (default: <out dir>/plots)")
    o.add_argument("--no-plots", action="store_true", help="skip the plots")
    o.add_argument("--budget-ms", type=float, default=250.0,
                   help="time spent timing each point after warm-up (default %(default)s)")
    o.add_argument("--graph", action="store_true",
                   help="time CUDA-graph replays (for launch-bound shapes, e.g. batch 1)")
    add_tune_arguments(o)
    o.add_argument("--tune-budget-ms", type=float, default=None,
                   help="timing per problem when tuning (default 300, with --tune 1000)")
    o.add_argument("--dry-run", action="store_true", help="list the pending points and exit")
    c = p.add_argument_group("on a Dask cluster (the `distributed` extra: pip install -e '.[cuda13,distributed]'; "
                             "docs/distributed.md)")
    where = c.add_mutually_exclusive_group()
    where.add_argument("--workers", metavar="N|all",
                       help="measure on N GPUs of this host (or all), one Dask worker process per GPU "
                            "(dask-cuda); tuning and compiling happen here first, longest points first")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="measure on the workers of a running Dask cluster: tcp://HOST:8786, or the "
                            "scheduler's --scheduler-file; each GPU type measures every point")


def run(args: argparse.Namespace) -> int:
    from cutlass_wsp.commands.sweep_options import spec_from_args
    from cutlass_wsp.sweep.plan import expand
    from cutlass_wsp.sweep.results import ResultStore
    from cutlass_wsp.commands._tuning import tune_mode

    distributed = args.workers is not None or args.scheduler is not None
    if distributed:        # without the extra: one line saying what to install, before anything else
        from cutlass_wsp.sweep.cluster import parse_workers, require_engine

        workers = parse_workers(args.workers) if args.workers is not None else None
        require_engine("--workers" if workers is not None else "--scheduler", cuda=workers is not None)
    spec = spec_from_args(args)
    points = expand(spec)
    store = ResultStore(args.out, out_option="--out")
    pending = store.pending(points, retry_failed=args.retry_failed)
    if args.dry_run:
        for pt in pending:
            print(pt.key)
        print(f"{len(pending)} of {len(points)} points pending in {args.out}", file=sys.stderr)
        return 0
    from cutlass_wsp.storage import ensure_dir
    from cutlass_wsp.sweep.session import run_sweep

    ensure_dir(args.out.parent, option="--out")         # a bad path stops here, not after the measuring
    plot_dir = args.plots or args.out.parent / "plots"
    if not args.no_plots:
        ensure_dir(plot_dir, option="--plots")

    options = dict(budget_s=args.budget_ms / 1e3, use_graph=args.graph, retry_failed=args.retry_failed,
                   layer_time=spec.layer_time, tune=tune_mode(args), tune_budget_s=args.tune_budget_s,
                   tune_problem_s=None if args.tune_budget_ms is None else args.tune_budget_ms / 1e3)
    if distributed:
        from cutlass_wsp.sweep.cluster_session import run_sweep_on_cluster

        outcome = run_sweep_on_cluster(points, store, workers=workers, scheduler=args.scheduler, **options)
    else:
        outcome = run_sweep(points, store, **options)
    print(outcome.summary, file=sys.stderr)
    from cutlass_wsp.sweep.results import to_csv

    rows = store.load()
    print(f"{len(rows)} rows also in {to_csv(rows, args.out.with_suffix('.csv'))}", file=sys.stderr)
    if not args.no_plots:
        from cutlass_wsp.sweep.plot import plot_results, why_no_figures

        paths = plot_results(rows, plot_dir)
        why = "" if paths else f": {why_no_figures(rows)[0]}"
        print(f"{len(paths)} plot files in {plot_dir}{why}", file=sys.stderr)
    return 0
