"""`cutlass-wsp` command line. Each subcommand lives in cutlass_wsp/commands/<name>.py and exposes
HELP, add_arguments(parser) and run(args) -> int. Command modules import nothing heavy at top level
(cupy, matplotlib load inside run) so the CLI starts fast and CPU-only commands work anywhere.

What every command shares, here: a WspError (or an OSError) is one line on stderr and a non-zero
status, never a traceback; a warning is one line `cutlass-wsp CMD: warning: ...`; output cut short by
its reader (`| head -1`) ends the command quietly with status 141, as SIGPIPE ends other tools; an
option value that starts with '-' and a digit ('--threshold -5%') is a value, not an option.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import warnings

from cutlass_wsp import __version__
from cutlass_wsp.errors import WspError, exit_now, is_sticky

COMMANDS = ["layers", "env", "cache", "bench", "sweep", "plot", "compare", "plan", "abwsp", "network"]
SIGPIPE_STATUS = 141    # 128 + SIGPIPE: what a shell reports for a writer whose reader went away

# argparse (before Python 3.13) reads '-5%' as an unknown option unless it looks like a plain negative
# number. Python 3.13's rule: '-' then a digit (or '.' and a digit) starts a value. Used for every parser.
_NEGATIVE_VALUE = re.compile(r"-\.?\d")


def _values_may_start_with_minus(parser: argparse.ArgumentParser) -> None:
    parser._negative_number_matcher = _NEGATIVE_VALUE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cutlass-wsp",
        description="Benchmark structurally pruned Winograd convolution GEMM batches on a GPU.",
    )
    _values_may_start_with_minus(parser)
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
        _values_may_start_with_minus(p)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


_context_lost = False   # main() ended on a sticky CUDA error: entry() skips the interpreter's teardown


def entry() -> None:
    """The `cutlass-wsp` script and `python -m cutlass_wsp`: main()'s status as the exit code. After a sticky CUDA error
    (the sweep's ContextLost, its one line printed) the process ends without the interpreter's teardown, in which
    CuPy's finalizers fail on the dead context and print tracebacks."""
    status = main()
    if _context_lost:
        exit_now(status)
    sys.exit(status)


def main(argv: list[str] | None = None) -> int:
    global _context_lost
    _context_lost = False
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    prefix = f"cutlass-wsp {args.command}"

    def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"{prefix}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = one_line_warning
            status = int(args._run(args) or 0)
            sys.stdout.flush()       # a closed pipe shows here, not in the interpreter's exit flush
            return status
    except BrokenPipeError:
        _drop_stdout()
        return SIGPIPE_STATUS
    except WspError as e:
        print(f"{prefix}: error: {e}", file=sys.stderr)
        _context_lost = is_sticky(str(e))
        return e.exit_code
    except OSError as e:     # a path the OS refused: one line, not a traceback
        where = f": {e.filename}" if e.filename else ""
        print(f"{prefix}: error: {e.strerror or e}{where} (check the path and its permissions)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130


def _drop_stdout() -> None:
    """The reader of stdout is gone: send what is still buffered to /dev/null, so the interpreter's
    final flush does not fail again (the recipe in Python's signal module documentation)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):    # stdout is not a file descriptor (captured in a test)
        pass
