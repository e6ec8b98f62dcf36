"""`cutlass-wsp` command line. Each subcommand lives in cutlass_wsp/commands/<name>.py and exposes
HELP, add_arguments(parser) and run(args) -> int. Command modules import nothing heavy at top level
(cupy, matplotlib load inside run) so the CLI starts fast and CPU-only commands work anywhere."""

from __future__ import annotations

import argparse
import importlib
import sys

from cutlass_wsp import __version__
from cutlass_wsp.errors import WspError

COMMANDS = ["layers", "env", "cache", "bench", "sweep", "plot", "compare", "plan"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cutlass-wsp",
        description="Benchmark structurally pruned Winograd convolution GEMM batches on a GPU.",
    )
    parser.add_argument("--version", action="version", version=f"cutlass-wsp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"cutlass_wsp.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"cutlass_wsp.commands.{name}":
                raise
            continue  # command not built yet
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except WspError as e:
        print(f"cutlass-wsp {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"cutlass-wsp {args.command}: interrupted", file=sys.stderr)
        return 130
