"""Figures from result rows (matplotlib, Agg backend, imported only when drawing).

One set of figures per (GPU, network, dtype, batch, tile size), each titled with GPU, dtype and batch:
  speedup_*            per-layer speedup over dense of every pattern at one ratio, roofline prediction marked
  ratio_*              speedup against ratio, one panel per layer, one line per pattern
  balance_*            balanced against unbalanced, per layer, for the patterns that have a balance
  structured-vs-csr_*  best structured pruning (WSP-R/WSP-C) against cuSPARSE CSR (WWP), per layer
and one per (GPU, network, dtype, batch), over every tile size:
  layer_*              whole-layer time of cuDNN, Winograd dense and each pruned pattern at one ratio,
                       per layer, with the per-layer plan's choice marked (sweep/planner.py)
Speedup = fastest ok dense time of the same GEMM batch ÷ fastest ok time of the pattern (over its
implementations); predicted = dense roofline floor ÷ the pattern's floor. Rows whose status is not
ok are left out and counted in a note at the foot of each figure.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from cutlass_wsp.errors import InputError
from cutlass_wsp.patterns import in_plot_group
from cutlass_wsp.sweep.plan import PATTERNS
from cutlass_wsp.sweep.results import fill_speedups

FORMATS = ("png", "svg")
STRUCTURED = in_plot_group("structured")   # wsp-r, wsp-c, wsp-c-fused (cutlass_wsp/patterns.py)


def skipped_counts(rows: Iterable[Mapping]) -> Counter:
    """How many rows are not ok, by status."""
    return Counter(r.get("status") for r in rows if r.get("status") != "ok")


def _close(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", str(text)).strip("-").lower() or "x"


def _shape(r: Mapping) -> tuple:
    return (r["c"], r["n"], r["H"], r["W"])


class _Context:
    """Rows of one (gpu, net, dtype, batch, p) group with lookups of the best time per series."""

    def __init__(self, gpu, net, dtype, batch, p, rows: list[dict]):
        self.gpu, self.net, self.dtype, self.batch, self.p = gpu, net, dtype, batch, p
        self.skipped = skipped_counts(rows)
        self.ok = [r for r in rows if r.get("status") == "ok" and r.get("speedup") is not None]
        self.no_dense = sum(r.get("status") == "ok" and r.get("speedup") is None for r in rows)
        self.shapes: dict[tuple, list[str]] = {}
        for r in rows:   # all rows, so a layer whose points all failed still gets its place on the axis
            names = self.shapes.setdefault(_shape(r), [])
            names.extend(x for x in (r.get("layers") or []) if x not in names)

    def label(self, shape: tuple) -> str:
        names = [x.removeprefix(f"{self.net}.") for x in self.shapes[shape]] or ["?"]
        more = f" +{len(names) - 1}" if len(names) > 1 else ""
        c, n, H, W = shape
        return f"{names[0]}{more}\n{c}→{n}@{H}" + ("" if H == W else f"x{W}")

    def best(self, shape, patterns, ratio=None, balance=None) -> dict | None:
        """The row with the highest speedup among `patterns` (any implementation) at this point."""
        cands = [r for r in self.ok if _shape(r) == shape and r["pattern"] in patterns
                 and (ratio is None or _close(r.get("ratio"), ratio))
                 and (balance is None or r.get("balance") == balance)]
        return max(cands, key=lambda r: r["speedup"], default=None)

    def title(self, what: str) -> str:
        return f"{self.net}: {what}\n{self.gpu or 'unknown GPU'}, {self.dtype}, batch {self.batch}, p={self.p}"

    def note(self) -> str:
        notes = []
        if self.skipped:
            parts = ", ".join(f"{n} {s}" for s, n in sorted(self.skipped.items(), key=lambda x: str(x[0])))
            total = sum(self.skipped.values())
            notes.append(f"{total} row{'s' * (total != 1)} not ok ({parts})")
        if self.no_dense:
            notes.append(f"{self.no_dense} ok rows without an ok dense row of their layer")
        return "not shown: " + "; ".join(notes) if notes else ""


def _default_balance(ctx: _Context, pattern: str) -> str | None:
    if not PATTERNS[pattern].uses_balance:
        return None
    present = [r.get("balance") for r in ctx.ok if r["pattern"] == pattern]
    return "balanced" if "balanced" in present else (present[0] if present else None)


def _series_label(pattern: str, balance: str | None) -> str:
    return pattern if balance is None else f"{pattern} ({balance})"


def _new_figure(figsize):
    """A figure on the Agg canvas: no pyplot, no GUI backend, no global figure state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _figure(n_groups: int):
    return _new_figure((max(8.0, 1.1 * n_groups + 4.0), 5.2))


def _bars(ax, ctx: _Context, shapes: list, series: list[tuple[str, list[dict | None]]], predicted: bool) -> None:
    """Grouped bars: one group per layer, one bar per series; a black tick at each roofline prediction."""
    import numpy as np

    x = np.arange(len(shapes))
    width = 0.8 / max(len(series), 1)
    tick_labelled = False
    for i, (label, found) in enumerate(series):
        xs = x - 0.4 + width * (i + 0.5)
        ys = [r["speedup"] if r else np.nan for r in found]
        ax.bar(xs, ys, width * 0.92, label=label)
        if predicted:
            pred = [(xx, r["floor_speedup"]) for xx, r in zip(xs, found) if r and r.get("floor_speedup")]
            if pred:
                px, py = zip(*pred)
                ax.scatter(px, py, marker="_", s=(width * 260) ** 2 / 40, linewidths=2.2, color="black", zorder=3,
                           label=None if tick_labelled else "roofline prediction")
                tick_labelled = True
    ax.axhline(1.0, color="0.4", linewidth=0.8, linestyle="--")
    ax.set_xticks(x, [ctx.label(s) for s in shapes], fontsize=8)
    ax.set_ylabel("speedup over dense (×)")
    ax.figure.legend(loc="outside right upper", fontsize=8)


def _drop_empty(shapes: list, series: list[tuple[str, list]]) -> tuple[list, list]:
    """Keep the layers and series that have at least one bar (not-prunable layers have none)."""
    keep = [i for i in range(len(shapes)) if any(found[i] for _, found in series)]
    series = [(label, [found[i] for i in keep]) for label, found in series if any(found)]
    return [shapes[i] for i in keep], series


def save_figure(fig, out: Path, stem: str, formats) -> list[Path]:
    """Write `fig` as out/stem.<fmt> for each format; the files written."""
    paths = []
    for fmt in formats:
        path = out / f"{stem}.{fmt}"
        fig.savefig(path, dpi=120)
        paths.append(path)
    return paths


def _finish(fig, ctx: _Context, title: str, out: Path, stem: str, formats) -> list[Path]:
    fig.suptitle(title, fontsize=10)
    note = ctx.note()
    if note:
        fig.supxlabel(note, fontsize=7, color="0.35")   # inside the layout, so it never covers labels
    return save_figure(fig, out, stem, formats)


def _ratio_figure(ctx, shapes, ratio, out, stem, formats) -> list[Path]:
    patterns = [p for p in PATTERNS if p != "dense" and any(r["pattern"] == p for r in ctx.ok)]
    series = []
    for pat in patterns:
        bal = _default_balance(ctx, pat)
        series.append((_series_label(pat, bal), [ctx.best(s, (pat,), ratio, bal) for s in shapes]))
    shapes, series = _drop_empty(shapes, series)
    if not series:
        return []
    fig = _figure(len(shapes))
    _bars(fig.add_subplot(), ctx, shapes, series, predicted=True)
    return _finish(fig, ctx, ctx.title(f"speedup over dense at ratio {ratio:g}"), out, stem, formats)


def _ratio_lines(ctx, shapes, out, stem, formats) -> list[Path]:
    patterns = [p for p in PATTERNS if PATTERNS[p].uses_ratio and any(r["pattern"] == p for r in ctx.ok)]
    ratios = sorted({r["ratio"] for r in ctx.ok if r.get("ratio") is not None})
    if not patterns or len(ratios) < 2:
        return []
    shapes = [s for s in shapes if any(r["pattern"] != "dense" and _shape(r) == s for r in ctx.ok)]
    if not shapes:
        return []
    cols = min(4, len(shapes))
    rows = math.ceil(len(shapes) / cols)
    fig = _new_figure((max(8.0, 3.2 * cols + 2.5), 2.8 * rows + 1.2))
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    for ax, shape in zip(axes.flat, shapes):
        for pat in patterns:
            bal = _default_balance(ctx, pat)
            pts = [(q, ctx.best(shape, (pat,), q, bal)) for q in ratios]
            pts = [(q, r) for q, r in pts if r]
            if pts:
                line, = ax.plot([q for q, _ in pts], [r["speedup"] for _, r in pts], marker="o",
                                label=_series_label(pat, bal))
                pred = [(q, r["floor_speedup"]) for q, r in pts if r.get("floor_speedup")]
                if pred:
                    ax.plot(*zip(*pred), linestyle=":", color=line.get_color(), linewidth=1)
        ax.axhline(1.0, color="0.4", linewidth=0.8, linestyle="--")
        ax.set_title(ctx.label(shape).replace("\n", "  "), fontsize=8)
        ax.set_xlabel("ratio pruned", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(shapes):]:
        ax.set_visible(False)
    axes[0][0].set_ylabel("speedup over dense (×)", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes.flat:
        h, lab = ax.get_legend_handles_labels()
        if len(h) > len(handles):
            handles, labels = h, lab
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    title = ctx.title("speedup against ratio (dotted: roofline prediction)")
    return _finish(fig, ctx, title, out, stem, formats)


def _balance_figure(ctx, shapes, ratio, out, stem, formats) -> list[Path]:
    series = []
    for pat in PATTERNS:
        if not PATTERNS[pat].uses_balance:
            continue
        balances = list(dict.fromkeys(r["balance"] for r in ctx.ok if r["pattern"] == pat and r.get("balance")))
        if len(balances) < 2:
            continue
        balances.sort(key=lambda b: (b != "balanced", b))
        for bal in balances:
            series.append((_series_label(pat, bal), [ctx.best(s, (pat,), ratio, bal) for s in shapes]))
    shapes, series = _drop_empty(shapes, series)
    if not series:
        return []
    fig = _figure(len(shapes))
    _bars(fig.add_subplot(), ctx, shapes, series, predicted=True)
    return _finish(fig, ctx, ctx.title(f"balanced vs unbalanced at ratio {ratio:g}"), out, stem, formats)


def _structured_figure(ctx, shapes, ratio, out, stem, formats) -> list[Path]:
    structured = [ctx.best(s, STRUCTURED, ratio) for s in shapes]
    csr = [ctx.best(s, ("wwp",), ratio) for s in shapes]
    if not any(structured) or not any(csr):
        return []
    shapes, series = _drop_empty(shapes, [("structured: best of WSP-R/WSP-C", structured),
                                          ("cuSPARSE CSR (WWP)", csr)])
    fig = _figure(len(shapes))
    ax = fig.add_subplot()
    _bars(ax, ctx, shapes, series, predicted=False)
    ax.set_yscale("log")
    return _finish(fig, ctx, ctx.title(f"structured pruning vs cuSPARSE CSR at ratio {ratio:g}"),
                   out, stem, formats)


_LAYER_COLORS = {"cuDNN": "0.25", "Winograd dense": "0.6"}


def _layer_figure(entries: list, ratio: float | None, title: str, out: Path, stem: str, formats) -> list[Path]:
    """Grouped bars of whole-layer time (log scale): cuDNN, the best Winograd dense over p, and the
    best option of each pruned pattern at `ratio`; a star over the plan's choice, with its speedup
    over cuDNN."""
    import numpy as np

    entries = [e for e in entries if e.has_candidates]
    if not entries:
        return []
    patterns = [p for p in PATTERNS if any((rp := e.at(ratio)) and p in rp.best_per_pattern for e in entries)]
    series: list[tuple[str, list]] = [("cuDNN", [e.cudnn for e in entries]),
                                      ("Winograd dense", [e.winograd_dense for e in entries])]
    for pat in patterns:
        series.append((f"{pat} r{ratio:g}", [(rp.best_per_pattern.get(pat) if (rp := e.at(ratio)) else None)
                                             for e in entries]))
    series = [(label, found) for label, found in series if any(found)]
    fig = _figure(len(entries))
    ax = fig.add_subplot()
    x = np.arange(len(entries))
    width = 0.8 / len(series)
    for i, (label, found) in enumerate(series):
        xs = x - 0.4 + width * (i + 0.5)
        ys = [o.layer_ms if o else np.nan for o in found]
        ax.bar(xs, ys, width * 0.92, label=label, color=_LAYER_COLORS.get(label))
    starred = False
    for j, e in enumerate(entries):
        chosen = e.chosen(ratio)
        if chosen is None:
            continue
        i = next((i for i, (_, found) in enumerate(series) if found[j] is not None and found[j].key == chosen.key), None)
        if i is None:
            continue
        xx = x[j] - 0.4 + width * (i + 0.5)
        ax.scatter([xx], [chosen.layer_ms * 1.25], marker="*", s=90, color="black", zorder=3,
                   label=None if starred else "plan's choice (× over cuDNN)")
        starred = True
        if chosen.speedup_vs_cudnn is not None:
            ax.annotate(f"{chosen.speedup_vs_cudnn:.2f}×", (xx, chosen.layer_ms * 1.5), ha="center", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("whole-layer time (ms, log scale)")
    labels = []
    for e in entries:
        names = [n.removeprefix(f"{e.net}.") for n in e.layers] or ["?"]
        labels.append(f"{names[0]}{f' +{len(names) - 1}' if len(names) > 1 else ''}\n{e.shape}")
    ax.set_xticks(x, labels, fontsize=8)
    ax.margins(y=0.15)
    fig.legend(loc="outside right upper", fontsize=8)
    fig.suptitle(title, fontsize=10)
    ignored: Counter = Counter()
    for e in entries:
        ignored.update(e.ignored)
    if ignored:
        parts = ", ".join(f"{n} {s}" for s, n in sorted(ignored.items()))
        fig.supxlabel(f"not shown: {sum(ignored.values())} rows ({parts})", fontsize=7, color="0.35")
    return save_figure(fig, out, stem, formats)


def _layer_figures(rows: list[dict], ratio: float | None, out: Path, several_gpus: bool, formats) -> list[Path]:
    from cutlass_wsp.sweep.planner import plan_layers

    groups: dict[tuple, list] = {}
    for e in plan_layers(rows):
        groups.setdefault((e.gpu, e.net, e.dtype, e.batch), []).append(e)
    paths: list[Path] = []
    for (gpu, net, dtype, batch), entries in groups.items():
        base = f"{_slug(net)}_{dtype}_b{batch}" + (f"_{_slug(gpu)}" if several_gpus else "")
        what = f"whole-layer time vs cuDNN at ratio {ratio:g}" if ratio is not None else "whole-layer time vs cuDNN"
        title = f"{net}: {what}\n{gpu or 'unknown GPU'}, {dtype}, batch {batch}, best p per option"
        stem = f"layer_{base}" + (f"_r{ratio:g}" if ratio is not None else "")
        paths += _layer_figure(entries, ratio, title, out, stem, formats)
    return paths


def why_no_figures(rows: Iterable[Mapping]) -> tuple[str, str]:
    """(problem, fix) when plot_results drew nothing from `rows`: what each kind of figure needs and
    what the rows lack."""
    from cutlass_wsp.sweep.planner import plan_layers

    rows = fill_speedups(rows)
    ok = [r for r in rows if r.get("status") == "ok"]
    pruned = [r for r in ok if r.get("pattern") in PATTERNS and PATTERNS[r["pattern"]].uses_ratio]
    if not pruned:
        pruned_found = "found none"
    else:
        with_dense = sum(r.get("speedup") is not None for r in pruned)
        pruned_found = f"found {len(pruned)}, {with_dense} of them with an ok dense row of their layer"
    timed = sum(_finite_positive(r.get("layer_ms")) for r in ok)
    layer_found = (f"found {timed}, but no cuDNN, Winograd dense or pruned option to compare"
                   if timed and not any(e.has_candidates for e in plan_layers(ok)) else f"found {timed}")
    pruned_names = ", ".join(p for p in PATTERNS if PATTERNS[p].uses_ratio)
    return (f"no figure can be drawn from the {len(ok)} ok rows: the speedup figures need ok rows of a pruned "
            f"pattern ({pruned_names}) beside an ok dense row of the same layer ({pruned_found}); the layer "
            f"figures need ok rows with a whole-layer time (layer_ms) ({layer_found})",
            "measure dense and a pruned pattern, e.g. sweep --pattern dense,wsp-r --ratio 0.7, and conv with "
            "--layer-time (the default) for the layer figures")


def _finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def available_ratios(rows: Iterable[Mapping]) -> list[float]:
    return sorted({r["ratio"] for r in rows if r.get("status") == "ok" and r.get("ratio") is not None})


def plot_results(rows: Iterable[Mapping], out_dir: str | Path, ratio: float | None = None,
                 formats: Iterable[str] = FORMATS) -> list[Path]:
    """Draw every figure the rows allow into `out_dir` (created); return the written paths.
    `ratio` picks the ratio of the per-layer bar charts (default 0.7 when measured, else the middle one)."""
    rows = [dict(r) for r in rows]
    formats = tuple(formats)
    ratios = available_ratios(rows)
    if ratio is None:
        ratio = next((q for q in ratios if _close(q, 0.7)), ratios[len(ratios) // 2] if ratios else None)
    elif ratios and not any(_close(q, ratio) for q in ratios):
        raise InputError(f"no ok rows at ratio {ratio:g}",
                         f"pick one of the measured ratios: {', '.join(f'{q:g}' for q in ratios)}")
    if not any(r.get("status") == "ok" for r in rows):
        raise InputError(f"nothing to plot: none of the {len(rows)} rows is ok "
                         f"({', '.join(f'{n} {s}' for s, n in skipped_counts(rows).items()) or 'no rows'})",
                         "plot a results file with measured points")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = fill_speedups(rows)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r.get("gpu"), r.get("net"), r.get("dtype"), r.get("batch"), r.get("p")), []).append(r)
    several_gpus = len({g[0] for g in groups}) > 1

    import matplotlib

    paths: list[Path] = []
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "cutlass-wsp"}):  # titles stay text in SVG
        for (gpu, net, dtype, batch, p), grows in groups.items():
            ctx = _Context(gpu, net, dtype, batch, p, grows)
            if not ctx.ok:
                continue
            shapes = list(ctx.shapes)
            base = f"{_slug(net)}_{dtype}_b{batch}_p{p}" + (f"_{_slug(gpu)}" if several_gpus else "")
            if ratio is not None:
                r_s = f"_r{ratio:g}"
                paths += _ratio_figure(ctx, shapes, ratio, out, f"speedup_{base}{r_s}", formats)
                paths += _balance_figure(ctx, shapes, ratio, out, f"balance_{base}{r_s}", formats)
                paths += _structured_figure(ctx, shapes, ratio, out, f"structured-vs-csr_{base}{r_s}", formats)
            paths += _ratio_lines(ctx, shapes, out, f"ratio_{base}", formats)
        paths += _layer_figures(rows, ratio, out, several_gpus, formats)
    return paths
