"""`cutlass-wsp cache info|clear`: the compiled-kernel cache ($CUTLASS_WSP_CACHE or ~/.cache/cutlass-wsp)."""

from __future__ import annotations

import argparse

HELP = "show or clear the compiled-kernel cache"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", default="info", choices=("info", "clear"),
                        help="info (default): where the cache is and what it holds; clear: delete its kernels")
    parser.add_argument("--dir", default=None, metavar="PATH",
                        help="cache directory (default: $CUTLASS_WSP_CACHE, else $XDG_CACHE_HOME/cutlass-wsp)")


def run(args: argparse.Namespace) -> int:
    from cutlass_wsp.kernels.cache import KernelCache

    cache = KernelCache(args.dir)
    if args.action == "clear":
        n = cache.clear()
        print(f"removed {n} kernel{'s' if n != 1 else ''} from {cache.root}")
        return 0
    info = cache.info()
    print(f"path     {info['path']}")
    print(f"kernels  {info['entries']}")
    print(f"failed   {info['failed']} (sources kept in {cache.failed_dir})")
    print(f"size     {info['bytes'] / 1e6:.1f} MB")
    return 0
