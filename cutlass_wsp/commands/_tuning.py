"""The tuning options `sweep` and `bench` share: tuned by default, `--tune` again, `--no-tune`, a budget."""

from __future__ import annotations

import argparse


def add_tune_arguments(parser) -> None:
    """--tune / --no-tune / --tune-budget-s on a parser or an argument group."""
    from cutlass_wsp.sweep.session import DEFAULT_TUNE_BUDGET_S

    g = parser.add_mutually_exclusive_group()
    g.add_argument("--tune", dest="tune", action="store_const", const="again", default="auto",
                   help="tune every kernel of these points again, with the full candidate menus (default: "
                        "tune only what this GPU has not tuned yet, with the short menus, within "
                        "--tune-budget-s)")
    g.add_argument("--no-tune", dest="tune", action="store_const", const="off",
                   help="tune nothing: kernels tuned before are used, the rest run their default configs")
    parser.add_argument("--tune-budget-s", type=positive(float), default=None, metavar="S",
                        help=f"wall time for tuning, compiling the candidates included; when it runs out, "
                             f"the rest keep their defaults (default {DEFAULT_TUNE_BUDGET_S:g}; with --tune: "
                             "no limit)")


def tune_mode(args: argparse.Namespace) -> str:
    return getattr(args, "tune", "auto") or "auto"


def positive(kind):
    """An argparse type: a number of `kind` > 0 (what bench/tune_families.py's options use too)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
        return value
    return parse
