"""How fast a fused Winograd layer can run on Hopper, at best, beside what was measured (CPU only; no GPU needed).

    python bench/fused_bounds.py [--rows results/fused/gen4-final-time-h200.jsonl] [--l2-tbps 8.6] [--overhead 64]

Per layer (batch 32, fp16, the VGG-16 / ResNet-18 layers the rows hold): cuDNN and the fused dense layer
(generation 4) as measured in the rows' run, the bound of generation 4's own design, and the lowest bound over the
design family of cutlass_wsp/fused_bounds.py for F(2,3) and F(4,3): with one CTA per work item, with TMA
multicast of the input region, and with clusters that also split the positions; each against the run's cuDNN.
docs/fused.md ("The bounds over a design family") reads this table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cutlass_wsp.errors import InputError, WspError  # noqa: E402
from cutlass_wsp.fused_bounds import Design, Hopper, designs, geomean, layer_bound  # noqa: E402
from cutlass_wsp.layers import resolve_layers  # noqa: E402

GEN4 = Design(4, row_groups=2, col_groups=1, filters=32)   # generation 4: two warpgroups of two V rows, FB 32
FAMILIES = (("one CTA", lambda d: d.cluster == 1 and d.mcast == 1),
            ("+ region multicast", lambda d: d.cluster == 1),
            ("+ clusters splitting positions", lambda d: True))


def read_measured(path: str) -> dict[tuple[str, str], float]:
    """(layer, 'cudnn' | 'dense') -> median ms, from a `bench/fused_layer.py time --out` file."""
    out = {}
    try:
        for line in open(path):
            if not line.strip():
                continue
            r = json.loads(line)
            what = "cudnn" if r.get("impl") == "cudnn" else "dense" if r.get("impl") == "p4 gen4 dense" else None
            if what and r.get("median_ms"):
                out[(r["layer"], what)] = float(r["median_ms"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise InputError(f"cannot read the timed rows {path} ({e})",
                         "pass the --out file of `bench/fused_layer.py time --gen4`") from e
    if not out:
        raise InputError(f"{path} holds no cuDNN or generation-4 dense row", "pass a `fused_layer.py time --gen4` file")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="results/fused/gen4-final-time-h200.jsonl")
    ap.add_argument("--nets", default="vgg16,resnet18")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--l2-tbps", type=float, default=8.6, help="L2 -> SM bandwidth (TB/s)")
    ap.add_argument("--overhead", type=int, default=64,
                    help="registers per thread besides the accumulators (generation 4: 68, plus its A fragments)")
    args = ap.parse_args(argv)
    try:
        measured = read_measured(args.rows)
        hw = Hopper(l2_Bps=args.l2_tbps * 1e12)
        layers = [lay for net in args.nets.split(",") for lay in resolve_layers(net) if lay.c >= 64 and lay.is_winograd]
        menu = {p: designs(p, overhead=args.overhead, hw=hw) for p in (4, 6)}
    except WspError as e:
        print(f"fused_bounds: {e}", file=sys.stderr)
        return 2
    print(f"# bounds at {hw.clock_hz / 1e9:.2f} GHz, {hw.sms} SMs, L2 -> SM {args.l2_tbps} TB/s, {args.overhead} "
          f"registers of overhead; measured: {args.rows}; x = cuDNN ms / ms")
    head = ["layer", "cuDNN ms", "gen 4 ms (x)", "gen 4 design bound ms (x, limit)"]
    head += [f"p={p} {name} (x)" for p in (4, 6) for name, _ in FAMILIES]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    ratios: dict[str, list[float]] = {}
    seen = set()
    for lay in layers:
        key = lay.name.replace(".", ":", 1)
        if lay.shape in seen or (key, "cudnn") not in measured:
            continue
        seen.add(lay.shape)
        cud = measured[(key, "cudnn")]
        cells = [key, f"{cud:.3f}"]
        gen4 = measured.get((key, "dense"))
        cells.append(f"{gen4:.3f} ({cud / gen4:.2f})" if gen4 else "-")
        ratios.setdefault("gen 4", []).append(cud / gen4 if gen4 else float("nan"))
        b = layer_bound(GEN4, lay, args.batch, hw)
        cells.append(f"{b.seconds * 1e3:.3f} ({cud / (b.seconds * 1e3):.2f}, {b.limit})")
        ratios.setdefault("gen 4 design", []).append(cud / (b.seconds * 1e3))
        for p in (4, 6):
            for name, keep in FAMILIES:
                best = min((layer_bound(d, lay, args.batch, hw) for d in menu[p] if keep(d)), key=lambda x: x.seconds)
                x = cud / (best.seconds * 1e3)
                cells.append(f"{x:.2f}")
                ratios.setdefault(f"p={p} {name}", []).append(x)
        print("| " + " | ".join(cells) + " |")
    if not seen:
        print("fused_bounds: no layer of the rows matches --nets", file=sys.stderr)
        return 2
    print("| geomean | | " + " | ".join(f"{geomean(v):.2f}" if all(x == x for x in v) else "-"
                                      for v in ratios.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
