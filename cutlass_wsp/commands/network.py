"""`cutlass-wsp network RESULTS.jsonl... --net resnet18 --ratio 0.7`: per pruning method, the network time
(the sum of measured whole-layer times over every 3×3 stride-1 conv) at each batch, and its ratio to cuDNN
dense; a table and a figure.

Exit status: 0 every method has a total or is not measured; 1 some method is incomplete (a layer lacks a
time); 2 bad input, or the results lack cuDNN or the ratio (one line with the sweep that measures it).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

HELP = ("network time per pruning method (dense/FP/WSP/BWSP/ABWSP/CSR/fused/cuDNN) from whole-layer times, "
        "at each batch, against cuDNN; table and figure; works without a GPU")
FORMATS = ("table", "markdown", "csv", "json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cutlass_wsp.commands.abwsp_options import add_choice_arguments, add_selection_arguments

    add_selection_arguments(parser, several_batches=True)
    parser.add_argument("--plan", default=None, metavar="PLAN.json",
                        help="an ABWSP plan written by cutlass-wsp abwsp: its per-layer choices give the ABWSP row "
                             "(the fused ABWSP row when it was made with --impl fused) at every batch; without it "
                             "each batch's plan is made from that batch's rows and the options below")
    parser.add_argument("--methods", default=None, metavar="M,...",
                        help="methods to show, by name (default all): cudnn, dense, fp, wsp-r, wsp-c, bwsp-r, "
                             "bwsp-c, abwsp, wwp, bcbp, fused-dense, fused-fp, fused-wsp-r, fused-bwsp-r, "
                             "fused-wsp-rb, fused-abwsp")
    parser.add_argument("--format", default="table", help=f"{', '.join(FORMATS)} (default table)")
    parser.add_argument("--per-layer", action="store_true",
                        help="also print each layer's time under every method (ms)")
    parser.add_argument("--plot-dir", default=None, metavar="DIR",
                        help="folder of the figure (default plots/ beside the first results file)")
    parser.add_argument("--no-plot", action="store_true", help="draw no figure")
    add_choice_arguments(parser)


# ------------------------------------------------------------------------------------------ output
def _fmt_ms(t) -> str:
    return f"{t.total_ms:.4f}" if t.total_ms is not None else t.state


def _fmt_x(t) -> str:
    return f"{t.vs_cudnn:.2f}×" if t.vs_cudnn is not None else "-"


def _grid(times) -> tuple[list[int], list[str], list[list[str]]]:
    batches = sorted(times)
    head = ["method"]
    for b in batches:
        head += [f"batch {b} ms", "vs cuDNN"]
    rows = []
    for i, t0 in enumerate(times[batches[0]]):
        row = [t0.method.label]
        for b in batches:
            t = times[b][i]
            row += [_fmt_ms(t), _fmt_x(t)]
        rows.append(row)
    return batches, head, rows


def _notes(times) -> list[str]:
    """Why a method has no total, then the layers counted at a stand-in (grouped over methods and batches)."""
    out = []
    for b in sorted(times):
        for t in times[b]:
            if t.note and t.state != "ok":
                out.append(f"batch {b}, {t.method.label}: {t.state}: {t.note}")
    stand_ins: dict[tuple[str, str], dict[str, list[int]]] = {}
    for b in sorted(times):
        for t in times[b]:
            if t.state == "not measured":
                continue
            for lt in t.fallbacks:
                stand_ins.setdefault((lt.layer.name, lt.note), {}).setdefault(t.method.label, []).append(b)
    for (name, note), methods in stand_ins.items():
        which = ", ".join(f"{m} (batch {','.join(map(str, bs))})" for m, bs in methods.items())
        out.append(f"{name} {note}: {which}")
    return out


def _header(ctx: dict) -> str:
    return (f"{ctx['net']}: network time of its {ctx['n_layers']} 3×3 stride-1 convs (whole-layer times summed; "
            f"a shape shared by k layers counts k times); pruned methods at ratio {ctx['ratio']:g}, every prunable "
            f"layer; p{ctx['p']}, {ctx['dtype']}; {ctx['gpu'] or 'unknown GPU'}")


FOOT = "vs cuDNN = cuDNN dense network time ÷ the method's (above 1: faster than cuDNN)"


def render_table(times, ctx: dict) -> str:
    _, head, rows = _grid(times)
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    lines = [_header(ctx), ""]
    for j, r in enumerate([head] + rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += ["", FOOT] + [f"note: {n}" for n in _notes(times)] + [f"to measure: {h}" for h in ctx["hints"]]
    return "\n".join(lines) + "\n"


def render_markdown(times, ctx: dict) -> str:
    _, head, rows = _grid(times)
    lines = [f"*{_header(ctx)}*", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", FOOT + "."] + [f"- {n}" for n in _notes(times)]
    return "\n".join(lines) + "\n"


def render_csv(times, ctx: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["net", "gpu", "ratio", "p", "dtype", "batch", "method", "label", "state", "total_ms", "vs_cudnn", "note"])
    for b in sorted(times):
        for t in times[b]:
            w.writerow([ctx["net"], ctx["gpu"] or "", ctx["ratio"], ctx["p"], ctx["dtype"], b, t.method.name,
                        t.method.label, t.state, "" if t.total_ms is None else t.total_ms,
                        "" if t.vs_cudnn is None else t.vs_cudnn, t.note or ""])
    return buf.getvalue()


def render_json(times, ctx: dict) -> str:
    doc = {k: ctx[k] for k in ("net", "gpu", "ratio", "p", "dtype", "n_layers")}
    doc["batches"] = {str(b): [t.to_dict() for t in times[b]] for b in sorted(times)}
    return json.dumps(doc, indent=1) + "\n"


def render_per_layer(times) -> str:
    out = []
    for b in sorted(times):
        ts = times[b]
        head = ["layer"] + [t.method.label for t in ts]
        rows = [[lt.layer.name] + [f"{t.layers[i].timed.ms:.4f}" if t.layers[i].timed else "-" for t in ts]
                for i, lt in enumerate(ts[0].layers)]
        widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
        out.append(f"batch {b}: whole-layer ms per layer")
        for j, r in enumerate([head] + rows):
            out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
            if j == 0:
                out.append("  ".join("-" * w for w in widths))
        out.append("")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ run
def _batches(args, measured, source: str) -> list[int]:
    from cutlass_wsp.commands.abwsp_options import positive_int
    from cutlass_wsp.errors import InputError

    have = measured.values("batch")
    if not have:
        raise InputError(f"{source} has no verified (ok) rows", "measure with cutlass-wsp sweep first")
    if args.batch is None:
        return have
    wanted = [positive_int(s, "--batch") for s in str(args.batch).split(",") if s.strip()]
    lacking = [b for b in wanted if b not in have]
    if lacking:
        raise InputError(f"{source} has no verified rows at --batch {lacking[0]}",
                         f"pick from {', '.join(map(str, have))}, or measure it: cutlass-wsp sweep --batch {lacking[0]} "
                         f"--out {Path(str(source).split(' ')[0]).with_name(f'sweep-b{lacking[0]}.jsonl')}")
    return wanted


def _methods(args):
    from cutlass_wsp.errors import InputError
    from cutlass_wsp.network_time import BY_NAME, METHODS, REFERENCE

    if not args.methods:
        return list(METHODS)
    names = [s.strip().lower() for s in args.methods.split(",") if s.strip()]
    bad = [n for n in names if n not in BY_NAME]
    if bad:
        raise InputError(f"--methods: unknown method {bad[0]!r}", f"use names from {', '.join(BY_NAME)}")
    if REFERENCE not in names:
        names.insert(0, REFERENCE)     # the ratio column needs it
    return [BY_NAME[n] for n in names]


def _check_reference(times, measured, table, args, source, ctx) -> None:
    """cuDNN is the denominator: a layer without a cuDNN row at a batch is a one-line error."""
    from cutlass_wsp.commands.abwsp_options import out_for_batch
    from cutlass_wsp.network_time import REFERENCE
    from cutlass_wsp.sweep.missing import Need, missing_error

    for b, ts in times.items():
        ref = next(t for t in ts if t.method.name == REFERENCE)
        absent = [lt.layer for lt in ref.layers if lt.timed is None and lt.note == "not measured"]
        if absent:
            raise missing_error(source, ctx["net"], [Need(x, ("conv",)) for x in absent], table, batch=b,
                                p=None, dtype=ctx["dtype"], out=out_for_batch(args.results, b),
                                what="the network's cuDNN reference")


def _check_ratio(times, measured, table, args, source, ctx) -> None:
    """The ratio must have been swept for some pruned method at every batch."""
    from cutlass_wsp.commands.abwsp_options import out_for_batch
    from cutlass_wsp.errors import InputError
    from cutlass_wsp.network_time import NOT_MEASURED
    from cutlass_wsp.sweep.missing import Need, sweep_command

    for b, ts in times.items():
        pruned = [t for t in ts if t.method.pruned and not t.method.plan]
        if pruned and all(t.state == NOT_MEASURED for t in pruned):
            have = ", ".join(f"{r:g}" for r in measured.ratios()) or "none"
            prunable = [x for x in table if x.prunable]
            needs = [Need(x, ("fp", "wsp-r", "wsp-c", "wsp-c-fused", "wwp"), ctx["ratio"], bal)
                     for x in prunable for bal in ("balanced", "unbalanced")]
            cmd = sweep_command(ctx["net"], needs, table, batch=b, p=ctx["p"], dtype=ctx["dtype"],
                                out=out_for_batch(args.results, b))
            raise InputError(f"{source} has no pruned rows at ratio {ctx['ratio']:g}, batch {b} (measured ratios: "
                             f"{have})", f"pick one with --ratio, or measure it: {cmd}")


def _method_needs(t, firsts, ratio: float) -> list:
    """What a method lacks: every layer shape when it is not measured, else the layers that have no row at all
    (failed rows are named in the notes: a sweep would skip them)."""
    from cutlass_wsp.abwsp import AXIS_PATTERNS, BALANCES
    from cutlass_wsp.network_time import INCOMPLETE, NOT_MEASURED
    from cutlass_wsp.sweep.missing import Need

    m = t.method
    impl = "fused" if m.fused else None
    if t.state == INCOMPLETE:
        out = []
        for lt in t.missing:
            if lt.note != "not measured" or m.plan:
                continue
            x = lt.layer
            if m.pruned and x.prunable:
                out.append(Need(x, m.patterns, ratio, m.balance, impl))
            else:
                out.append(Need(x, m.unpruned, None, None, impl))
        return out
    if t.state != NOT_MEASURED:
        return []
    if m.plan:
        axes = ("R",) if m.fused else ("R", "C")
        return [Need(x, AXIS_PATTERNS[a], ratio, bal, impl) for x in firsts for a in axes for bal in BALANCES]
    if m.pruned:
        return [Need(x, m.patterns, ratio, bal, impl) for x in firsts for bal in ((m.balance,) if m.balance else (None,))]
    return [Need(x, m.patterns, None, None, impl) for x in firsts]


def _hints(times, table, args, ctx) -> list[str]:
    """One sweep command per batch, implementation kind and set of layer shapes: for the methods not measured,
    every layer shape; for the incomplete ones, the layers without a row."""
    from cutlass_wsp.commands.abwsp_options import out_for_batch
    from cutlass_wsp.sweep.missing import sweep_command

    prunable = [x for x in table if x.prunable]
    firsts = list({x.shape: x for x in reversed(prunable)}.values())[::-1]
    out = []
    for b in sorted(times):
        for fused in (False, True):
            by_shapes: dict[frozenset, list] = {}
            for t in times[b]:
                needs = _method_needs(t, firsts, ctx["ratio"]) if t.method.fused == fused else []
                if needs:
                    by_shapes.setdefault(frozenset(nd.layer.shape for nd in needs), []).extend(needs)
            for needs in by_shapes.values():
                out.append(sweep_command(ctx["net"], needs, table, batch=b, p=ctx["p"], dtype=ctx["dtype"],
                                         out=out_for_batch(args.results, b)))
    return out


def _plans(args, measured, table, batches, source, methods, *, net: str, p: int, ratio: float):
    """(choices, plan errors) of the ABWSP rows per (method name, batch)."""
    from cutlass_wsp.abwsp_plan import build_plan, read_choices
    from cutlass_wsp.commands.abwsp import settings_from
    from cutlass_wsp.commands.abwsp_options import out_for_batch, proxy_source
    from cutlass_wsp.errors import InputError
    from cutlass_wsp.sweep.missing import MissingResults

    choices, errors = {}, {}
    wanted = [m for m in methods if m.plan]
    if not wanted:
        return choices, errors
    from_file = None
    if args.plan:
        header, plan_choices = read_choices(args.plan)
        made_at = header.get("ratio")
        if not isinstance(made_at, (int, float)) or abs(made_at - ratio) > 1e-9:
            raise InputError(f"{args.plan} was made at ratio {made_at}, not at --ratio {ratio:g}",
                             f"pass --ratio {made_at}, or make a plan at {ratio:g} with cutlass-wsp abwsp --ratio {ratio:g}")
        from_file = ("fused-abwsp" if header.get("implementations") == "fused" else "abwsp", plan_choices)
    proxies = None
    for m in wanted:
        for b in batches:
            if from_file and from_file[0] == m.name:
                choices[(m.name, b)] = from_file[1]
                continue
            try:
                if proxies is None:
                    proxies = proxy_source(args, table, p)
                s = settings_from(args, measured, source, implementations=m.implementations,
                                  axes=("R",) if m.fused else ("R", "C"), batch=b)
                plan = build_plan(measured, table, s, proxies, net_spec=net, source=source,
                                  out=out_for_batch(args.results, b))
                choices[(m.name, b)] = plan.choices()
            except MissingResults:      # its candidates were not swept: 'to measure' names the sweep
                errors[(m.name, b)] = "its candidates were not swept"
    return choices, errors


def run(args: argparse.Namespace) -> int:
    from cutlass_wsp.commands.abwsp_options import load_selection, pick
    from cutlass_wsp.commands.values import parse_ratio
    from cutlass_wsp.layers import resolve_layers
    from cutlass_wsp.network_time import INCOMPLETE, network_times

    fmt, rows, source, measured, net = load_selection(args, FORMATS)
    table = [x for x in resolve_layers(net) if x.is_winograd]
    ratio = parse_ratio(args.ratio)
    batches = _batches(args, measured, source)
    p = pick(args.tile, measured.values("p"), "--tile", "tile size", source, int)
    dtype = pick(args.dtype, measured.values("dtype"), "--dtype", "dtype", source)
    methods = _methods(args)
    choices, plan_errors = _plans(args, measured, table, batches, source, methods, net=net, p=p, ratio=ratio)
    times = network_times(measured, table, batches=batches, p=p, dtype=dtype, ratio=ratio, methods=methods,
                          choices=choices, plan_errors=plan_errors)
    ctx = {"net": net, "gpu": measured.gpu, "ratio": ratio, "p": p, "dtype": dtype, "n_layers": len(table)}
    _check_reference(times, measured, table, args, source, ctx)
    _check_ratio(times, measured, table, args, source, ctx)
    ctx["hints"] = _hints(times, table, args, ctx)
    render = {"table": render_table, "markdown": render_markdown, "csv": render_csv, "json": render_json}[fmt]
    print(render(times, ctx), end="")
    if args.per_layer:
        print(render_per_layer(times), end="")
    if not args.no_plot:
        from cutlass_wsp.network_plot import plot_network
        from cutlass_wsp.storage import ensure_dir

        folder = Path(args.plot_dir) if args.plot_dir else Path(args.results[0]).parent / "plots"
        ensure_dir(folder, option="--plot-dir")
        for path in plot_network(times, folder, net=net, ratio=ratio, gpu=measured.gpu, dtype=dtype, p=p):
            print(f"cutlass-wsp network: figure {path}", file=sys.stderr)
    return 1 if any(t.state == INCOMPLETE for ts in times.values() for t in ts) else 0
