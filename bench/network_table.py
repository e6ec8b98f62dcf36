"""The paper's Table 1 (ResNet-18 inference time per pruning method, RTX 2080 Ti) beside this toolkit's network
times from a results file, as a markdown table for docs/paper-comparison.md.

    python bench/network_table.py results/sweep-h200-b1.jsonl results/sweep-h200-b32.jsonl > table1.md

Our time of a method is the sum of measured whole-layer times over ResNet-18's 13 3×3 stride-1 convs
(cutlass_wsp/network_time.py, what `cutlass-wsp network` prints), at each batch in the files; its speedup is
over cuDNN's dense convolution of the same layers. The paper's WSP-C rows are at network ratios 40.1%, 60.7%
and 70.1%: ours prune every prunable layer at --ratios (default 0.4, 0.6, 0.7; each needs its own sweep rows).
The other methods are shown at --ratio (default 0.7). ABWSP's per-layer choice is made with the default
settings of `cutlass-wsp abwsp` (accuracy weight 0.5, output-error proxy on He weights, unfused
implementations).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cutlass_wsp.errors import WspError  # noqa: E402

# seed 001, Table 1: (method, pruning ratio, top-1 drop, time ms, speedup over the dense ResNet-18)
PAPER = [
    ("ResNet-18 dense", None, None, 7.270, 1.00),
    ("Winograd convolution, dense", None, None, 5.229, 1.39),
    ("TAS", 0.333, -1.50, 3.532, 2.06),
    ("LCCL", 0.346, -3.65, 3.439, 2.11),
    ("WSP-C", 0.401, -0.32, 3.389, 2.14),
    ("SFP", 0.417, -3.18, 3.094, 2.35),
    ("FPGM", 0.417, -1.87, 3.094, 2.35),
    ("WSP-C", 0.607, -1.04, 2.357, 3.08),
    ("WSP-C", 0.701, -1.49, 1.864, 3.90),
]
# paper row -> (our method, our ratio key): 'table1' means the --ratios entry nearest the paper's ratio
OURS = {"ResNet-18 dense": ("cudnn", None), "Winograd convolution, dense": ("dense", None), "WSP-C": ("wsp-c", "table1")}
EXTRA = ("fp", "wsp-r", "bwsp-r", "bwsp-c", "abwsp", "wwp", "bcbp", "fused-dense", "fused-fp", "fused-wsp-r",
         "fused-bwsp-r", "fused-wsp-rb", "fused-abwsp")


def _ratios(text: str) -> list[float]:
    from cutlass_wsp.commands.values import parse_ratios

    return list(parse_ratios(text, "--ratios"))


def network_times_at(measured, table, *, ratio: float, batches, p: int, dtype: str, net: str):
    """network_times at `ratio`, with each batch's ABWSP plan (default settings) where its rows allow one."""
    from cutlass_wsp.abwsp_plan import ProxySource, Settings, build_plan
    from cutlass_wsp.network_time import network_times
    from cutlass_wsp.sweep.missing import MissingResults

    choices, errors = {}, {}
    proxies = ProxySource(p)
    for name, impls, axes in (("abwsp", "unfused", ("R", "C")), ("fused-abwsp", "fused", ("R",))):
        for b in batches:
            try:
                s = Settings(ratio=ratio, implementations=impls, axes=axes, batch=b, p=p, dtype=dtype)
                choices[(name, b)] = build_plan(measured, table, s, proxies, net_spec=net, source="results",
                                                out="results.jsonl").choices()
            except MissingResults:
                errors[(name, b)] = "not measured"
    return network_times(measured, table, batches=batches, p=p, dtype=dtype, ratio=ratio, choices=choices,
                         plan_errors=errors)


def _cells(times_by_batch, batches, method: str) -> list[str]:
    out = []
    for b in batches:
        t = next(t for t in times_by_batch[b] if t.method.name == method)
        if t.total_ms is None:
            out += [t.state, "—"]
        else:
            out += [f"{t.total_ms:.3f}", f"{t.vs_cudnn:.2f}×" if t.vs_cudnn else "—"]
    return out


def table1(paths, *, net: str = "resnet18", ratios=(0.4, 0.6, 0.7), ratio: float = 0.7) -> str:
    from cutlass_wsp.layers import resolve_layers
    from cutlass_wsp.network_time import BY_NAME
    from cutlass_wsp.sweep.measured import Measured
    from cutlass_wsp.sweep.results import load_many

    measured = Measured(load_many(paths))
    batches = measured.values("batch")
    ps, dtypes = measured.values("p"), measured.values("dtype")
    if len(ps) != 1 or len(dtypes) != 1:
        raise WspError(f"the results hold tile sizes {ps} and dtypes {dtypes}", "pass files of one p and one dtype")
    p, dtype = ps[0], dtypes[0]
    table = [x for x in resolve_layers(net) if x.is_winograd]
    at = {r: network_times_at(measured, table, ratio=r, batches=batches, p=p, dtype=dtype, net=net)
          for r in dict.fromkeys([*ratios, ratio])}
    gpu = measured.gpu or "this GPU"
    head = ["method", "paper: pruning ratio", "paper: top-1 ↓", "paper: 2080 Ti ms", "paper: speedup", "our ratio"]
    for b in batches:
        head += [f"{gpu} batch {b} ms", "× cuDNN"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    wsp_c = iter(ratios)
    for name, pr, drop, ms, sp in PAPER:
        ours = OURS.get(name)
        shown = {"ResNet-18 dense": "ResNet-18 dense (ours: cuDNN's dense conv)",
                 "Winograd convolution, dense": "Winograd convolution, dense (ours: unfused Winograd layer)",
                 "WSP-C": "WSP-C (ours: unbalanced, the paper's WSP)"}.get(name, name)
        paper = [shown, "—" if pr is None else f"{pr:.1%}", "—" if drop is None else f"{drop:.2f}%", f"{ms:.3f}",
                 f"{sp:.2f}×"]
        if ours is None:
            lines.append("| " + " | ".join(paper + ["—"] + ["not re-run (another paper's filter pruning)", "—"]
                                           + ["", ""] * (len(batches) - 1)) + " |")
            continue
        method, which = ours
        r = next(wsp_c, ratio) if which == "table1" else ratio
        our_ratio = f"{r:g} every layer" if BY_NAME[method].pruned else "—"
        lines.append("| " + " | ".join(paper + [our_ratio] + _cells(at[r], batches, method)) + " |")
    for method in EXTRA:
        m = BY_NAME[method]
        lines.append("| " + " | ".join([f"{m.label} (ours)", "—", "—", "—", "—",
                                        f"{ratio:g} every layer" if m.pruned else "—"]
                                       + _cells(at[ratio], batches, method)) + " |")
    never = [x.name for x in table if not x.prunable]
    pruned = (f"{', '.join(never)} never pruned" if never else "every one pruned")
    note = (f"*Ours: {gpu}, {dtype}, F({p - 2}×{p - 2}, 3×3), the sum of measured whole-layer times over "
            f"{net}'s {len(table)} 3×3 stride-1 convs ({pruned}); × cuDNN = cuDNN's "
            "dense time of those layers ÷ the method's. The paper's times are the whole ResNet-18 on an RTX 2080 Ti "
            "(batch not stated) and its speedups are over the dense ResNet-18. \"not measured\": the results hold "
            "no rows for that method and ratio.*")
    return "\n".join(lines) + "\n\n" + note + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", help="results files of one GPU (e.g. a batch-1 and a batch-32 sweep)")
    ap.add_argument("--net", default="resnet18", help="network (default resnet18, the paper's Table 1)")
    ap.add_argument("--ratios", default="0.4,0.6,0.7",
                    help="our ratios for the paper's WSP-C rows at 40.1%%, 60.7%%, 70.1%% (default 0.4,0.6,0.7)")
    ap.add_argument("--ratio", default="0.7", help="ratio of the other methods (default 0.7)")
    args = ap.parse_args(argv)
    try:
        from cutlass_wsp.commands.values import parse_ratio

        ratios = _ratios(args.ratios)
        if len(ratios) != 3:
            raise WspError(f"--ratios {args.ratios!r} has {len(ratios)} ratios", "give three: the paper has three WSP-C rows")
        print(table1(args.results, net=args.net, ratios=ratios, ratio=parse_ratio(args.ratio)), end="")
    except WspError as e:
        print(f"network_table: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
