"""`cutlass-wsp layers`: list a network's (or a layer file's) Winograd layers and their GEMM batch sizes."""

from __future__ import annotations

import argparse
import csv
import io
import json

from cutlass_wsp.dtypes import DTYPES, get_dtype
from cutlass_wsp.layers import NETWORKS, layer_problem, resolve_layers, unique_shapes

HELP = "list the Winograd layers of a network or layer file with the size of each layer's GEMM batch"

COLUMNS = ("layer", "c", "n", "H", "W", "T", "GFLOP", "MB", "pruned")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("layers", nargs="?", metavar="LAYERS",
                        help=f"a network ({', '.join(NETWORKS)}), a layer file (.json/.yaml/.csv with columns "
                             "name, c, n, H, W), or a selection such as vgg16:conv4_2 or vgg16:0,3 "
                             "(0-based indices); without it, the known networks are listed")
    parser.add_argument("--batch", type=int, default=32, help="images per batch (default 32)")
    parser.add_argument("--tile", type=int, default=4, metavar="P",
                        help="Winograd input tile p: 4 = F(2,3), 6 = F(4,3), 8 = F(6,3) (default 4)")
    parser.add_argument("--dtype", default="fp16", choices=list(DTYPES),
                        help="element type for MB (W + X + Y moved once; default fp16)")
    parser.add_argument("--format", default="table", choices=("table", "csv", "json"), help="output format")


def rows_for(spec: str, batch: int, p: int, dtype: str) -> list[dict]:
    """One dict per layer: name, sizes, T, GFLOP and MB of its GEMM batch, and whether it is pruned."""
    dt = get_dtype(dtype)
    out = []
    for layer in resolve_layers(spec):
        prob = layer_problem(layer, batch, p)
        out.append({"layer": layer.name, "c": layer.c, "n": layer.n, "H": layer.H, "W": layer.W, "T": prob.N,
                    "GFLOP": prob.flops() / 1e9, "MB": prob.bytes_moved(dt) / 1e6,
                    "pruned": "yes" if layer.prunable else "no"})
    return out


def _cell(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _table(rows: list[dict]) -> str:
    cells = [list(COLUMNS)] + [[_cell(r[k]) for k in COLUMNS] for r in rows]
    widths = [max(len(row[j]) for row in cells) for j in range(len(COLUMNS))]
    lines = ["  ".join(s.ljust(w) if j == 0 else s.rjust(w) for j, (s, w) in enumerate(zip(row, widths)))
             for row in cells]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if not args.layers:
        for name, layers in NETWORKS.items():
            print(f"{name}: {len(layers)} Winograd layers, {len(unique_shapes(layers))} distinct shapes")
        return 0
    rows = rows_for(args.layers, args.batch, args.tile, args.dtype)
    if args.format == "json":
        print(json.dumps({"batch": args.batch, "p": args.tile, "dtype": args.dtype, "layers": rows}, indent=2))
    elif args.format == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        print(buf.getvalue(), end="")
    else:
        m = args.tile - 2
        print(f"# {args.layers}: batch {args.batch}, p={args.tile} (F({m}x{m},3x3)), {args.dtype}")
        print(_table(rows))
    return 0
