"""`cutlass-wsp plan RESULTS.jsonl`: per layer, the fastest verified way to run the whole layer.

Exit status: 0 every layer got a choice; 1 the plan is printed but some layer has no candidate (its
line says why); 2 bad input or nothing to plan (no ok row with a whole-layer time).
"""

from __future__ import annotations

import argparse
import csv
import io
import json

HELP = "per-layer plan from whole-layer times: cuDNN vs Winograd dense vs pruned, per ratio; works without a GPU"
FORMATS = ("table", "csv", "json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", metavar="RESULTS.jsonl",
                        help="result files (a point in several files: the later file wins)")
    parser.add_argument("--ratio", default=None,
                        help="ratio the chosen option is taken at, 0.7 or 70%% (default 0.7 when measured, "
                             "else the middle measured ratio)")
    parser.add_argument("--format", default="table", help=f"{', '.join(FORMATS)} (default table)")


def pick_ratio(requested: float | None, measured: list[float]) -> float | None:
    """`requested` when measured (InputError otherwise); by default 0.7, else the middle ratio, else None."""
    from cutlass_wsp.errors import InputError

    def same(a: float, b: float) -> bool:
        return abs(a - b) < 1e-9

    if requested is None:
        return next((q for q in measured if same(q, 0.7)), measured[len(measured) // 2] if measured else None)
    if not any(same(q, requested) for q in measured):
        have = ", ".join(f"{q:g}" for q in measured) or "none (no pruned row has a layer time)"
        raise InputError(f"no whole-layer times at ratio {requested:g}", f"pick one of the measured ratios: {have}")
    return next(q for q in measured if same(q, requested))


# ------------------------------------------------------------------------------------------ output
def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _x(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _names(entry) -> str:
    names = list(entry.layers) or [f"{entry.net}.?"]
    return names[0] + (f" +{len(names) - 1}" if len(names) > 1 else "")


def _table(rows: list[list[str]], numeric: set[int]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, r in enumerate(rows):
        cells = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _option_cell(o) -> str:
    return "-" if o is None else f"{o.label} {_ms(o.layer_ms)} {_x(o.speedup_vs_cudnn)}"


def render_table(entries, ratios: list[float], ratio: float | None) -> str:
    sections: dict[tuple, list] = {}
    for e in entries:
        sections.setdefault((e.gpu, e.dtype, e.batch), []).append(e)
    at = f" @{ratio:g}" if ratio is not None else ""
    out = []
    for (gpu, dtype, batch), group in sections.items():
        out.append(f"{gpu or 'unknown GPU'}, {dtype}, batch {batch}: whole-layer times in ms; a pruned cell is "
                   f"option, ms, speedup over cuDNN; chosen = fastest of cuDNN, Winograd dense and "
                   f"{'the pruned options at ratio ' + format(ratio, 'g') if ratio is not None else 'nothing pruned'}")
        head = ["layer", "shape", "cuDNN", "Winograd dense"] + [f"best pruned r{q:g}" for q in ratios] \
            + [f"chosen{at}", "ms", "vs cuDNN", "vs dense"]
        n_text = len(head) - 3
        table = [head]
        notes = []
        for e in group:
            dense, chosen = e.winograd_dense, e.chosen(ratio)
            row = [_names(e), e.shape, _ms(e.cudnn and e.cudnn.layer_ms),
                   "-" if dense is None else f"p{dense.p} {dense.impl} {_ms(dense.layer_ms)}"]
            row += [_option_cell(rp.best_pruned) for rp in e.ratios]
            if chosen is None:
                row += ["none", "-", "-", "-"]
            else:
                row += [chosen.label + (f" r{chosen.ratio:g}" if chosen.ratio is not None else ""),
                        _ms(chosen.layer_ms), _x(chosen.speedup_vs_cudnn), _x(chosen.speedup_vs_dense)]
            table.append(row)
            if e.note:
                notes.append(f"  {_names(e)} {e.shape}: {e.note}")
        out.append(_table(table, numeric={2} | set(range(n_text, len(head)))))
        out.extend(notes)
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _flat(e, ratios: list[float], ratio: float | None) -> dict:
    d = {"gpu": e.gpu, "net": e.net, "layers": ";".join(e.layers), "c": e.c, "n": e.n, "H": e.H, "W": e.W,
         "batch": e.batch, "dtype": e.dtype, "cudnn_ms": e.cudnn and e.cudnn.layer_ms,
         "dense_p": e.winograd_dense and e.winograd_dense.p, "dense_impl": e.winograd_dense and e.winograd_dense.impl,
         "dense_ms": e.winograd_dense and e.winograd_dense.layer_ms,
         "dense_vs_cudnn": e.winograd_dense and e.winograd_dense.speedup_vs_cudnn}
    for rp in e.ratios:
        o = rp.best_pruned
        pre = f"r{rp.ratio:g}_"
        d.update({pre + "pattern": o and o.pattern, pre + "impl": o and o.impl, pre + "balance": o and o.balance,
                  pre + "p": o and o.p, pre + "ms": o and o.layer_ms, pre + "vs_cudnn": o and o.speedup_vs_cudnn,
                  pre + "vs_dense": o and o.speedup_vs_dense})
    c = e.chosen(ratio)
    d.update({"chosen_at_ratio": ratio, "chosen_kind": c and c.kind, "chosen_pattern": c and c.pattern,
              "chosen_impl": c and c.impl, "chosen_p": c and c.p, "chosen_ratio": c and c.ratio,
              "chosen_balance": c and c.balance, "chosen_ms": c and c.layer_ms,
              "chosen_vs_cudnn": c and c.speedup_vs_cudnn, "chosen_vs_dense": c and c.speedup_vs_dense,
              "chosen_key": c and c.key, "note": e.note})
    return d


def render_csv(entries, ratios: list[float], ratio: float | None) -> str:
    rows = [_flat(e, ratios, ratio) for e in entries]
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if v is None else v for k, v in r.items()})
    return buf.getvalue()


def render_json(entries, ratios: list[float], ratio: float | None) -> str:
    doc = {"ratio": ratio, "ratios": ratios,
           "entries": [{**e.to_dict(), "chosen": (c := e.chosen(ratio)) and c.to_dict()} for e in entries]}
    return json.dumps(doc, indent=2) + "\n"


def run(args: argparse.Namespace) -> int:
    from cutlass_wsp.commands.values import parse_ratio
    from cutlass_wsp.errors import InputError
    from cutlass_wsp.sweep.planner import plan_layers, plan_ratios
    from cutlass_wsp.sweep.results import load_many

    fmt = args.format.strip().lower()
    if fmt not in FORMATS:
        raise InputError(f"--format {args.format!r} is not a plan format", f"use one of {', '.join(FORMATS)}")
    requested = None if args.ratio is None else parse_ratio(args.ratio)
    rows = load_many(args.results)
    entries = plan_layers(rows)
    if not any(e.has_candidates for e in entries):
        raise InputError(f"nothing to plan: none of the {len(rows)} rows is ok with a whole-layer time (layer_ms)",
                         "sweep with --layer-time (the default) and the conv pattern, then plan that file")
    ratios = plan_ratios(rows)
    ratio = pick_ratio(requested, ratios)
    render = {"table": render_table, "csv": render_csv, "json": render_json}[fmt]
    print(render(entries, ratios, ratio), end="")
    return 0 if all(e.has_candidates for e in entries) else 1
