"""How fast a fused Winograd layer can run on Hopper, at best, beside what was measured (CPU only; no GPU needed).

    python bench/fused_bounds.py [--rows results/fused/gen4-final-time-h200.jsonl] [--l2-tbps 8.6] [--ipc 4]
                                 [--overhead 64] [--ratio 0.7]

Per layer (batch 32, fp16, the VGG-16 / ResNet-18 layers the rows hold), two tables. Dense: cuDNN and the fused
dense layer (generation 4) as measured in the rows' run, the bound of generation 4's own design, and the lowest
bound over the design family of cutlass_wsp/fused_bounds.py for F(2,3) and F(4,3): with one CTA per work item,
with TMA multicast of the input region, and with clusters that also split the positions. WSP-RB at --ratio (row
pruning balanced per position and filter block): the fastest generation-4 row of the run, the bound of generation
4's wide-block design (32 packed rows of the block `balanced_block` picks, 96 filters at 0.7) and the family's
lowest bound (each position keeping 1 - ratio of its block's rows). Each
against the run's cuDNN. docs/fused.md ("The bounds over a design family") reads these tables.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cutlass_wsp.errors import InputError, WspError  # noqa: E402
from cutlass_wsp.families.fused import balanced_block  # noqa: E402
from cutlass_wsp.fused_bounds import Design, Hopper, designs, geomean, layer_bound  # noqa: E402
from cutlass_wsp.layers import resolve_layers  # noqa: E402

GEN4 = Design(4, row_groups=2, col_groups=1, filters=32)   # generation 4: two warpgroups of two V rows, FB 32
FAMILIES = (("one CTA", lambda d: d.cluster == 1 and d.mcast == 1),
            ("+ region multicast", lambda d: d.cluster == 1),
            ("+ clusters splitting positions", lambda d: True))


def read_measured(path: str, ratio: float) -> dict[tuple[str, str], float]:
    """(layer, 'cudnn' | 'dense' | 'wsp-rb') -> median ms (the fastest row of each), from a `bench/fused_layer.py
    time --gen4 --out` file; 'wsp-rb' at `ratio`."""
    out: dict[tuple[str, str], float] = {}
    try:
        for line in open(path):
            if not line.strip():
                continue
            r = json.loads(line)
            impl = r.get("impl")
            what = ("cudnn" if impl == "cudnn" else "dense" if impl == "p4 gen4 dense" else
                    "wsp-rb" if impl == "p4 gen4 wsp-rb" and r.get("ratio") == ratio else None)
            if what and r.get("median_ms"):
                key = (r["layer"], what)
                out[key] = min(out.get(key, float("inf")), float(r["median_ms"]))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise InputError(f"cannot read the timed rows {path} ({e})",
                         "pass the --out file of `bench/fused_layer.py time --gen4`") from e
    if not any(what == "cudnn" for _, what in out):
        raise InputError(f"{path} holds no cuDNN row", "pass a `fused_layer.py time --gen4` file")
    return out


def _table(title: str, layers, measured, what: str, design: Design, menus, args, hw) -> None:
    """One markdown table: per layer the run's cuDNN and `what`, `design`'s bound, and each menu's lowest bound."""
    print(f"\n{title}\n")
    head = ["layer", "cuDNN ms", f"measured {what} ms (x)", f"{design.label()}: bound ms (x, limit)"]
    head += [f"{name} (x)" for name, _ in menus]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    cols: list[list[float]] = [[] for _ in range(2 + len(menus))]
    for key, lay in layers:
        cud = measured[(key, "cudnn")]
        got = measured.get((key, what))
        cells = [key, f"{cud:.3f}", f"{got:.3f} ({cud / got:.2f})" if got else "-"]
        cols[0].append(cud / got if got else float("nan"))
        b = layer_bound(design, lay, args.batch, hw)
        cells.append(f"{b.seconds * 1e3:.3f} ({cud / (b.seconds * 1e3):.2f}, {b.limit})")
        cols[1].append(cud / (b.seconds * 1e3))
        for i, (_, menu) in enumerate(menus):
            x = cud / (min(layer_bound(d, lay, args.batch, hw).seconds for d in menu) * 1e3)
            cells.append(f"{x:.2f}")
            cols[2 + i].append(x)
        print("| " + " | ".join(cells) + " |")
    print("| geomean | | " + " | ".join(f"{geomean(v):.2f}" if all(x == x for x in v) else "-" for v in cols) + " |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="results/fused/gen4-final-time-h200.jsonl")
    ap.add_argument("--nets", default="vgg16,resnet18")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--ratio", type=float, default=0.7, help="WSP-RB's pruning ratio, in [0, 1)")
    ap.add_argument("--l2-tbps", type=float, default=8.6, help="L2 -> SM bandwidth (TB/s)")
    ap.add_argument("--ipc", type=float, default=4.0,
                    help="warp instructions an SM issues per cycle (4 at most; generation 4 measured 1.33)")
    ap.add_argument("--overhead", type=int, default=64,
                    help="registers per thread besides the accumulators (generation 4: 68, plus its A fragments)")
    args = ap.parse_args(argv)
    try:
        if not 0 <= args.ratio < 1:
            raise InputError(f"ratio {args.ratio}", "use a pruning ratio in [0, 1)")
        measured = read_measured(args.rows, args.ratio)
        if not 0 < args.ipc <= 4:
            raise InputError(f"--ipc {args.ipc}", "an SM issues between 0 and 4 warp instructions per cycle")
        hw = Hopper(l2_Bps=args.l2_tbps * 1e12, issue_per_clk=args.ipc)
        layers, seen = [], set()
        for net in args.nets.split(","):
            for lay in resolve_layers(net):
                key = lay.name.replace(".", ":", 1)
                if lay.c >= 64 and lay.is_winograd and lay.shape not in seen and (key, "cudnn") in measured:
                    seen.add(lay.shape)
                    layers.append((key, lay))
        if not layers:
            raise InputError(f"no layer of {args.rows} is in --nets {args.nets}", "pass the nets the rows measured")
        kept = 1 - args.ratio
        dense = {p: designs(p, overhead=args.overhead, hw=hw) for p in (4, 6)}
        pruned = designs(4, overhead=args.overhead, kept=kept, hw=hw)
    except WspError as e:
        print(f"fused_bounds: {e}", file=sys.stderr)
        return 2
    print(f"# bounds at {hw.clock_hz / 1e9:.2f} GHz, {hw.sms} SMs, L2 -> SM {args.l2_tbps} TB/s, {args.ipc:g} "
          f"instructions per cycle, {args.overhead} registers of overhead; measured: {args.rows}; x = cuDNN ms / ms")
    _table("Dense", layers, measured, "dense", GEN4,
           [(f"p={p} {name}", [d for d in dense[p] if keep(d)]) for p in (4, 6) for name, keep in FAMILIES],
           args, hw)
    # generation 4's wide-block design: 32 packed rows of the block the sweep uses at this ratio (0.7: 96 filters)
    wide = Design(4, 2, 1, 32, kept=32 / balanced_block(args.ratio, 512))
    _table(f"WSP-RB {args.ratio:g} (p = 4)", layers, measured, "wsp-rb", wide,
           [(f"p=4 {name}", [d for d in pruned if keep(d)]) for name, keep in FAMILIES], args, hw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
