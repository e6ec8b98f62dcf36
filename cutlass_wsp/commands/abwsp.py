"""`cutlass-wsp abwsp RESULTS.jsonl --net vgg16 --ratio 0.7`: per prunable layer, BWSP or WSP (R or C),
from measured speedups and an accuracy proxy; the plan is also written as JSON.

Exit status: 0 every prunable layer got a choice; 1 the plan is printed but some layer has none (its line
says why); 2 bad input, or the results lack what the plan needs (one line with the sweep that measures it).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys

HELP = ("ABWSP: per layer, balanced (BWSP) or unbalanced WSP, rows or columns, from measured speedups and an "
        "accuracy proxy; works without a GPU")
FORMATS = ("text", "csv", "json")
AXIS_CHOICES = {"r": ("R",), "c": ("C",), "both": ("R", "C")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cutlass_wsp.commands.abwsp_options import add_choice_arguments, add_selection_arguments

    add_selection_arguments(parser, several_batches=False)
    parser.add_argument("--against", default="dense",
                        help="speedup baseline: dense (the fastest verified dense Winograd layer) or cudnn "
                             "(cuDNN's conv; needs whole-layer times) (default dense); it scales every "
                             "speedup alike, so it never changes the choice")
    parser.add_argument("--axis", default="both", help="candidates: r (WSP-R/BWSP-R), c, or both (default both)")
    parser.add_argument("--impl", default="all",
                        help="implementations a candidate's time may come from: all, unfused (every one but the "
                             "fused layer kernel) or fused (with --axis r) (default all)")
    add_choice_arguments(parser)
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="where the plan is written as JSON (default abwsp_NET_bB_rR.json beside the first "
                             "results file)")
    parser.add_argument("--format", default="text", help=f"{', '.join(FORMATS)} on stdout (default text)")


# ------------------------------------------------------------------------------------------ output
def _cell(c) -> str:
    if c is None or not c.available:
        return "-"
    if c.proxy == "drop":
        value = f"drop {c.drop:.2f}"
    elif c.proxy == "energy":
        value = f"energy {c.energy_retained:.3f}"
    else:
        value = f"err {c.output_error:.3f}"
    return f"{c.speedup:.2f}× {value}"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for j, r in enumerate(rows):
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _labels(plan) -> list[str]:
    from cutlass_wsp.abwsp import BALANCES, label

    return [label(a, b) for a in plan.settings.axes for b in BALANCES]


def _sums(plan) -> str | None:
    """Times summed over the prunable layers: the plan's choice beside every candidate taken everywhere."""
    from cutlass_wsp.sweep.measured import LAYER

    if not plan.layers or any(lp.basis != LAYER or lp.chosen is None for lp in plan.layers):
        return None
    parts = [f"ABWSP {sum(lp.chosen.time.ms for lp in plan.layers):.4f} ms"]
    for lab in _labels(plan):
        ts = [next((c.time for c in lp.candidates if c.label == lab), None) for lp in plan.layers]
        parts.append(f"all {lab} " + (f"{sum(t.ms for t in ts):.4f} ms" if all(ts) else "-"))
    parts.append(f"baseline ({plan.settings.against}) {sum(lp.baseline.ms for lp in plan.layers):.4f} ms")
    return "sum over the prunable layers (whole-layer times): " + ", ".join(parts)


def render_text(plan) -> str:
    from cutlass_wsp.sweep.measured import BASIS_WORDS, LAYER

    s = plan.settings
    bases = {lp.basis for lp in plan.layers if lp.basis}
    basis = (f"time: {BASIS_WORDS[bases.pop()]} for every layer" if len(bases) == 1
             else f"time: {BASIS_WORDS[LAYER]} where every candidate has it, else {BASIS_WORDS['gemm']} (column 'time')")
    proxy_words = {"output": "relative output error", "energy": "1 - share of Winograd weight energy kept"}[s.proxy]
    head = [f"ABWSP plan: {plan.net}, every prunable layer at ratio {s.ratio:g}; batch {s.batch}, p{s.p}, {s.dtype}; "
            f"{plan.gpu or 'unknown GPU'}",
            f"speedup = {'cuDNN conv' if s.against == 'cudnn' else 'dense Winograd layer'} time ÷ the candidate's "
            f"fastest verified implementation ({s.implementations} implementations); {basis}",
            f"proxy: {s.proxy} (loss = {proxy_words}; a measured drop: points / 10); calibration {plan.calibration}; weights {plan.weights}",
            f"rule: score = (1 - a)·ln(speedup) - a·loss, a = --accuracy-weight {s.accuracy_weight:g}; "
            "ties: more accurate, faster, BWSP, R", ""]
    labels = _labels(plan)
    rows = [["layer", "shape", "choice", "impl", "time"] + labels]
    for lp in plan.layers:
        x = lp.layer
        by = {c.label: c for c in lp.candidates}
        rows.append([x.name, f"{x.c}→{x.n}@{x.H}" + ("" if x.H == x.W else f"x{x.W}"),
                     lp.chosen.label if lp.chosen else "none",
                     lp.chosen.time.impl if lp.chosen else "-", lp.basis or "-"] + [_cell(by.get(lab)) for lab in labels])
    out = head + [_table(rows), "", "why:"]
    out += [f"  {lp.layer.name}: {lp.why}" for lp in plan.layers]
    if plan.not_pruned:
        out.append("never pruned: " + ", ".join(f"{x.name} (c={x.c})" for x in plan.not_pruned))
    sums = _sums(plan)
    if sums:
        out.append(sums)
    out += [f"note: {n}" for n in plan.notes]
    return "\n".join(out) + "\n"


def render_csv(plan) -> str:
    buf = io.StringIO()
    labels = _labels(plan)
    fields = ["layer", "c", "n", "H", "W", "basis", "baseline_ms", "choice", "chosen_impl", "chosen_ms"]
    for lab in labels:
        fields += [f"{lab}_{f}" for f in ("speedup", "ms", "impl", "energy_retained", "output_error", "drop",
                                          "loss", "score", "unavailable")]
    fields.append("why")
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    a = plan.settings.accuracy_weight
    for lp in plan.layers:
        x = lp.layer
        d = {"layer": x.name, "c": x.c, "n": x.n, "H": x.H, "W": x.W, "basis": lp.basis,
             "baseline_ms": lp.baseline and lp.baseline.ms, "choice": lp.chosen and lp.chosen.label,
             "chosen_impl": lp.chosen and lp.chosen.time.impl, "chosen_ms": lp.chosen and lp.chosen.time.ms,
             "why": lp.why}
        for c in lp.candidates:
            d.update({f"{c.label}_speedup": c.speedup, f"{c.label}_ms": c.time and c.time.ms,
                      f"{c.label}_impl": c.time and c.time.impl, f"{c.label}_energy_retained": c.energy_retained,
                      f"{c.label}_output_error": c.output_error, f"{c.label}_drop": c.drop,
                      f"{c.label}_loss": c.loss, f"{c.label}_score": c.score(a) if c.available else None,
                      f"{c.label}_unavailable": c.unavailable})
        w.writerow({k: "" if v is None else v for k, v in d.items()})
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ run
def settings_from(args: argparse.Namespace, measured, source: str, *, implementations: str | None = None,
                  axes: tuple[str, ...] | None = None, batch: int | None = None):
    """Settings from the shared options; batch, p and dtype default to the only ones in the results."""
    from cutlass_wsp.abwsp_plan import AGAINST, Settings
    from cutlass_wsp.commands.abwsp_options import pick
    from cutlass_wsp.commands.values import parse_fraction, parse_ratio
    from cutlass_wsp.errors import InputError
    from cutlass_wsp.sweep.measured import IMPL_SETS

    against = str(getattr(args, "against", "dense")).strip().lower()
    if against not in AGAINST:
        raise InputError(f"--against {args.against!r}", f"use one of {', '.join(AGAINST)}")
    if axes is None:
        axis = str(getattr(args, "axis", "both")).strip().lower()
        if axis not in AXIS_CHOICES:
            raise InputError(f"--axis {args.axis!r}", f"use one of {', '.join(AXIS_CHOICES)}")
        axes = AXIS_CHOICES[axis]
    impls = implementations or str(getattr(args, "impl", "all")).strip().lower()
    if impls not in IMPL_SETS:
        raise InputError(f"--impl {args.impl!r}", f"use one of {', '.join(IMPL_SETS)}")
    if batch is None:
        batch = pick(args.batch, measured.values("batch"), "--batch", "batch size", source, int)
    return Settings(ratio=parse_ratio(args.ratio), accuracy_weight=parse_fraction(args.accuracy_weight,
                                                                                  "--accuracy-weight"),
                    proxy=str(args.proxy).strip().lower(), against=against, axes=axes, implementations=impls,
                    batch=batch, p=pick(args.tile, measured.values("p"), "--tile", "tile size", source, int),
                    dtype=pick(args.dtype, measured.values("dtype"), "--dtype", "dtype", source)).check()


def run(args: argparse.Namespace) -> int:
    from cutlass_wsp.abwsp_plan import build_plan, write_plan
    from cutlass_wsp.commands.abwsp_options import default_out, load_selection, out_for_batch, proxy_source
    from cutlass_wsp.layers import resolve_layers

    fmt, rows, source, measured, net = load_selection(args, FORMATS)
    table = resolve_layers(net)
    s = settings_from(args, measured, source)
    proxies = proxy_source(args, table, s.p)
    plan = build_plan(measured, table, s, proxies, net_spec=net, source=source,
                      out=out_for_batch(args.results, s.batch), results=[str(p) for p in args.results])
    stem = net if not net.endswith((".csv", ".json", ".yaml", ".yml")) else net.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    stem = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in stem)
    path = args.json or default_out(args.results, f"abwsp_{stem}_b{s.batch}_r{s.ratio:g}.json")
    written = write_plan(plan, path)
    render = {"text": render_text, "csv": render_csv,
              "json": lambda pl: json.dumps(pl.to_dict(), indent=1) + "\n"}[fmt]
    print(render(plan), end="")
    print(f"cutlass-wsp abwsp: plan written to {written}", file=sys.stderr)
    return 0 if plan.complete else 1
