"""Winograd-domain sparsity of spatial-Winograd masks (seed 003) per layer of VGG-16 and ResNet-18, beside
the paper's figures. CPU only: python bench/spatial_winograd_sparsity.py [--nets vgg16,resnet18]
[--p 4,6] [--targets 0.63,0.50,0.74] [--structure support|kernel] [--spatial-ratio R]

For every 3×3 stride-1 layer (He-normal filters from cutlass_wsp.weights, seed = layer index; layer 1,
c = 3, stays dense), and each target ratio r: spatial_winograd_prune(g, m, r) prunes r of the spatial taps
in the structured way (or --spatial-ratio of them), then tops the Winograd domain up to r with the importance factor matrix. Columns:
  W-sparsity   the layer's achieved Winograd-domain sparsity (zeros / p²·n·c)
  transferred  the part of it step 1 made exactly zero by spatial pruning alone
  err SW       relative output error of the spatial-Winograd weights against the dense layer (exact for
               i.i.d. inputs, winograd_importance.relative_output_error; no retraining)
  err W-only   the same for Winograd-domain pruning alone with the importance factors (spatial_ratio 0)
  err WWP      the same for plain magnitude pruning in the Winograd domain (importance 'uniform')
The 'network' row is the sparsity over all 3×3 stride-1 layers' Winograd weights, layer 1 counted dense:
the quantity the paper reports (63% CIFAR-10, 50% CIFAR-100, 74% ImageNet, after retraining, on its own
networks). These masks come from untrained weights with no retraining: the errors say what retraining
would have to recover, not what accuracy the masks reach.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from cutlass_wsp.errors import WspError
from cutlass_wsp.layers import network
from cutlass_wsp.spatial_winograd import STRUCTURES, prune_winograd, spatial_winograd_prune
from cutlass_wsp.weights import he_spatial_filters
from cutlass_wsp.winograd import filter_transform, tile_m
from cutlass_wsp.winograd_importance import relative_output_error

PAPER = {0.63: "CIFAR-10", 0.50: "CIFAR-100", 0.74: "ImageNet"}
TITLES = {"vgg16": "VGG-16", "resnet18": "ResNet-18"}


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None


def layer_row(g: np.ndarray, m: int, ratio: float, structure: str, spatial_ratio: float | None = None) -> dict:
    """One layer at one target: the spatial-Winograd mask's numbers and the two Winograd-only baselines."""
    P = spatial_winograd_prune(g, m, ratio, structure=structure, spatial_ratio=spatial_ratio)
    U = filter_transform(g, m)
    errs = {}
    for name, imp in (("err_w_only", "transform"), ("err_wwp", "uniform")):
        keep = prune_winograd(U, m, ratio, importance=imp)
        errs[name] = relative_output_error(U, np.where(keep, U, 0.0), m)
    return dict(zeros=int(P.mask.size - P.mask.sum()), size=int(P.mask.size), sparsity=P.achieved_ratio,
                transferred=P.structural_sparsity, err_sw=P.output_error, **errs)


def table(net: str, p: int, ratio: float, structure: str, spatial_ratio: float | None = None) -> list[str]:
    m = tile_m(p)
    paper = PAPER.get(round(ratio, 2))
    lines = [f"== {TITLES.get(net, net)}, F({m}x{m},3x3) p={p}, target {ratio:.0%}"
             + (f" (paper, {paper}: {ratio:.0%})" if paper else "") + f", spatial structure '{structure}', spatial ratio "
             + ("= target" if spatial_ratio is None else f"{spatial_ratio:.0%}") + " ==",
             f"{'layer':<18} {'c->n':>9} {'W-sparsity':>10} {'transferred':>11} {'err SW':>7} {'err W-only':>10} {'err WWP':>8}"]
    zeros = size = 0
    for index, layer in enumerate(network(net)):
        if not layer.is_winograd:
            continue
        if not layer.prunable:
            size += p * p * layer.n * layer.c
            lines.append(f"{layer.name:<18} {f'{layer.c}->{layer.n}':>9} {'dense':>10}   (layer 1 is never pruned)")
            continue
        r = layer_row(he_spatial_filters(layer, seed=index), m, ratio, structure, spatial_ratio)
        zeros, size = zeros + r["zeros"], size + r["size"]
        lines.append(f"{layer.name:<18} {f'{layer.c}->{layer.n}':>9} {r['sparsity']:>10.1%} {r['transferred']:>11.1%} "
                     f"{r['err_sw']:>7.3f} {r['err_w_only']:>10.3f} {r['err_wwp']:>8.3f}")
    lines.append(f"{'network':<18} {'':>9} {zeros / size:>10.1%}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default="vgg16,resnet18", help="comma-separated networks (vgg16, resnet18)")
    ap.add_argument("--p", type=_ints, default=[4, 6], help="Winograd tile sizes p, e.g. 4,6")
    ap.add_argument("--targets", type=_floats, default=list(PAPER), help="target ratios, e.g. 0.63,0.50,0.74")
    ap.add_argument("--structure", choices=STRUCTURES, default="support", help="spatial step's unit")
    ap.add_argument("--spatial-ratio", type=float, default=None, help="share of spatial taps step 1 prunes "
                    "(default: the target)")
    args = ap.parse_args(argv)
    start = time.time()
    try:
        for net in [n.strip() for n in args.nets.split(",") if n.strip()]:
            for p in args.p:
                for ratio in args.targets:
                    print("\n".join(table(net, p, ratio, args.structure, args.spatial_ratio)) + "\n", flush=True)
    except WspError as e:
        print(f"spatial_winograd_sparsity: {e}", file=sys.stderr)
        return 2
    print(f"({time.time() - start:.0f} s; He-normal weights, no retraining)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
