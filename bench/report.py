"""Markdown tables from a sweep's results file, for docs/performance.md and docs/paper-comparison.md.

    python bench/report.py results/sweep.jsonl [--ratio 0.7] > report.md

Sections: per-layer GEMM-batch times of every family against our dense kernel and cuBLAS; the cost
of imbalance (grouped vs padded vs balanced); speedup over our dense against the roofline-predicted
speedup (issue 7's target: >= 90 % of it, geomean over shapes with a floor >= 20 us); layer time
against cuDNN; the paper's VGG-16 per-layer WSP-C vs WSP-R comparison and its CSR-vs-dense finding.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cutlass_wsp.sweep.results import ResultStore, fill_speedups  # noqa: E402


def _close(a, b) -> bool:
    return a is not None and b is not None and abs(a - b) < 1e-9


def _us(ms) -> str:
    return "—" if ms is None else f"{ms * 1e3:.1f}"


def _geomean(xs) -> float | None:
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def _shape(r) -> tuple:
    return (r["net"], r["c"], r["n"], r["H"], r["batch"], r["p"], r["dtype"])


def _label(r) -> str:
    names = r.get("layers") or []
    short = names[0].split(".", 1)[-1] if names else ""
    more = f" (+{len(names) - 1})" if len(names) > 1 else ""
    return f"{r['net']} {short}{more} {r['c']}→{r['n']}@{r['H']}"


def _by_shape(rows):
    out = defaultdict(dict)
    for r in rows:
        if r.get("status") == "ok" and r.get("p") is not None:
            out[_shape(r)][(r["pattern"], r["impl"], r.get("ratio"), r.get("balance"))] = r
    return out


def families_table(rows, ratio: float) -> str:
    """Per layer at `ratio`: GEMM-batch µs of each family (ours) and cuBLAS on the compacted weights."""
    cols = [("dense", "cutlass", None, None, "dense"), ("dense", "cublas", None, None, "cuBLAS dense"),
            ("fp", "cutlass", ratio, None, "FP"), ("wsp-r", "cutlass", ratio, "balanced", "WSP-R"),
            ("wsp-r", "cublas", ratio, "balanced", "WSP-R cuBLAS"),
            ("wsp-c", "cutlass", ratio, "balanced", "WSP-C 2-pass"),
            ("wsp-c", "cublas", ratio, "balanced", "WSP-C 2-pass cuBLAS"),
            ("wsp-c-fused", "cutlass", ratio, "balanced", "WSP-C fused"),
            ("wsp-c-fused", "cutlass-xform", ratio, "balanced", "WSP-C xform"),
            ("wwp", "cusparse-block-diag", ratio, None, "CSR block-diag")]
    lines = ["| layer | floor dense | " + " | ".join(c[-1] for c in cols) + " |",
             "|---" * (len(cols) + 2) + "|"]
    for shape, pts in _by_shape(rows).items():
        cells = []
        for pat, impl, q, bal, _ in cols:
            r = next((v for (p_, i_, q_, b_), v in pts.items()
                      if p_ == pat and i_ == impl and (q is None or _close(q_, q)) and b_ == bal), None)
            cells.append(_us(r["median_ms"]) if r else "—")
        dense = pts.get(("dense", "cutlass", None, None))
        first = next(iter(pts.values()))
        lines.append(f"| {_label(first)} | {_us(dense['floor_ms']) if dense else '—'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def imbalance_table(rows) -> str:
    """Per layer and ratio: WSP-R balanced (batched) vs unbalanced grouped vs unbalanced padded."""
    lines = ["| layer | ratio | balanced (batched) µs | unbalanced grouped µs | unbalanced padded µs | "
             "grouped / balanced time | padded / balanced time |", "|---|---|---|---|---|---|---|"]
    for shape, pts in _by_shape(rows).items():
        ratios = sorted({k[2] for k in pts if k[0] == "wsp-r" and k[2] is not None})
        for q in ratios:
            b = pts.get(("wsp-r", "cutlass", q, "balanced"))
            g = pts.get(("wsp-r", "cutlass-grouped", q, "unbalanced"))
            pd = pts.get(("wsp-r", "cutlass-padded", q, "unbalanced"))
            rel = lambda x: f"{x['median_ms'] / b['median_ms']:.2f}×" if (x and b) else "—"  # noqa: E731
            any_r = b or g or pd
            if any_r:
                lines.append(f"| {_label(any_r)} | {q:g} | {_us(b and b['median_ms'])} | {_us(g and g['median_ms'])} | "
                             f"{_us(pd and pd['median_ms'])} | {rel(g)} | {rel(pd)} |")
    return "\n".join(lines)


TARGET_IMPLS = {("wsp-r", "cutlass"): "wsp-r", ("wsp-c", "cutlass"): "wsp-c (2-pass)",
                ("wsp-c-fused", "cutlass"): "wsp-c fused (gather in the GEMM mainloop)",
                ("wsp-c-fused", "cutlass-xform"): "wsp-c fused (gather in the input transform)"}


def target_table(rows) -> str:
    """Speedup over our dense vs the floor-predicted speedup (issue 7), balanced pruning."""
    out = ["| pattern | ratio | shapes (floor ≥ 20 µs) | geomean speedup | geomean predicted | achieved / predicted |",
           "|---|---|---|---|---|---|"]
    groups = defaultdict(list)
    for shape, pts in _by_shape(rows).items():
        dense = pts.get(("dense", "cutlass", None, None))
        if not dense or dense["floor_ms"] < 0.020:
            continue
        for (pat, impl, q, bal), r in pts.items():
            if (pat, impl) in TARGET_IMPLS and bal == "balanced":
                groups[(TARGET_IMPLS[(pat, impl)], q)].append(
                    (dense["median_ms"] / r["median_ms"], dense["floor_ms"] / r["floor_ms"]))
    for (name, q), xs in sorted(groups.items()):
        s, f = _geomean([x for x, _ in xs]), _geomean([y for _, y in xs])
        out.append(f"| {name} | {q:g} | {len(xs)} | {s:.2f}× | {f:.2f}× | {100 * s / f:.0f}% |")
    return "\n".join(out)


def kept_share(rows, min_gain: float = 0.10) -> str:
    """How much of the balanced speedup the unbalanced grouped / padded WSP-R launches keep:
    (dense/unbalanced - 1) / (dense/balanced - 1) per layer and ratio where balanced gains >= min_gain."""
    shares: dict[str, list[float]] = {"cutlass-grouped": [], "cutlass-padded": []}
    for shape, pts in _by_shape(rows).items():
        dense = pts.get(("dense", "cutlass", None, None))
        for (pat, impl, q, bal), b in pts.items():
            if not dense or (pat, impl, bal) != ("wsp-r", "cutlass", "balanced"):
                continue
            gain = dense["median_ms"] / b["median_ms"] - 1
            if gain < min_gain:
                continue
            for other in shares:
                u = pts.get(("wsp-r", other, q, "unbalanced"))
                if u:
                    shares[other].append((dense["median_ms"] / u["median_ms"] - 1) / gain)
    lines = ["| unbalanced launch | points (balanced gains ≥ 10 %) | median share kept | min | max |",
             "|---|---|---|---|---|"]
    for impl, xs in shares.items():
        if xs:
            xs = sorted(xs)
            med = xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2
            lines.append(f"| {impl} | {len(xs)} | {100 * med:.0f}% | {100 * xs[0]:.0f}% | {100 * xs[-1]:.0f}% |")
    return "\n".join(lines)


def layer_table(rows, ratio: float) -> str:
    """Per layer: cuDNN, Winograd dense and each pattern's whole-layer time at `ratio`."""
    conv = {(r["net"], r["c"], r["n"], r["H"], r["batch"], r["dtype"]): r for r in rows
            if r.get("status") == "ok" and r.get("pattern") == "conv"}
    lines = ["| layer | cuDNN µs | dense µs (transforms µs, % of their floor) | FP | WSP-R | WSP-C 2-pass | "
             "WSP-C fused | WSP-C xform | best / cuDNN |", "|---|---|---|---|---|---|---|---|---|"]
    for shape, pts in _by_shape(rows).items():
        net, c, n, H, b, p, dt = shape
        cd = conv.get((net, c, n, H, b, dt))
        dense = pts.get(("dense", "cutlass", None, None))

        def lay(pat, impls=None, bal="balanced"):
            cands = [r for (p_, i_, q_, b_), r in pts.items() if p_ == pat and _close(q_, ratio)
                     and (impls is None or i_ in impls) and (b_ in (None, bal)) and r.get("layer_ms")]
            return min(cands, key=lambda r: r["layer_ms"]) if cands else None

        opts = [dense, lay("fp"), lay("wsp-r"), lay("wsp-c"), lay("wsp-c-fused", ("cutlass", "cutlass-padded")),
                lay("wsp-c-fused", ("cutlass-xform",))]
        best = min((r["layer_ms"] for r in opts if r and r.get("layer_ms")), default=None)
        dcell = "—"
        if dense and dense.get("layer_ms"):
            dcell = (f"{_us(dense['layer_ms'])} ({_us(dense.get('transform_ms'))}, "
                     f"{dense.get('transform_pct_of_floor') or 0:.0f}%)")
        ratio_cell = f"{cd['layer_ms'] / best:.2f}×" if cd and best else "—"
        first = dense or next(iter(pts.values()))
        lines.append(f"| {_label(first)} | {_us(cd and cd['layer_ms'])} | {dcell} | "
                     + " | ".join(_us(r and r.get('layer_ms')) for r in opts[1:]) + f" | {ratio_cell} |")
    return "\n".join(lines)


def paper_table(rows, ratio: float) -> str:
    """VGG-16 per-layer speedup over dense (GEMM batch and whole layer) of WSP-C and WSP-R, as Figure 9."""
    lines = ["| VGG-16 layer | WSP-R GEMM speedup | WSP-C (2-pass) GEMM speedup | WSP-C fused GEMM speedup | "
             "WSP-C xform GEMM speedup | faster (GEMM) | WSP-R layer speedup | WSP-C layer speedup (best) |",
             "|---|---|---|---|---|---|---|---|"]
    for shape, pts in _by_shape(rows).items():
        if shape[0] != "vgg16":
            continue
        dense = pts.get(("dense", "cutlass", None, None))
        r = pts.get(("wsp-r", "cutlass", ratio, "balanced"))
        c2 = pts.get(("wsp-c", "cutlass", ratio, "balanced"))
        cf = pts.get(("wsp-c-fused", "cutlass", ratio, "balanced"))
        cx = pts.get(("wsp-c-fused", "cutlass-xform", ratio, "balanced"))
        if not (dense and r and c2):
            continue
        sr, sc, sf, sx = (dense["median_ms"] / x["median_ms"] if x else None for x in (r, c2, cf, cx))
        best_c = max(x for x in (sc, sf, sx) if x)
        lr = dense.get("layer_ms") and r.get("layer_ms") and dense["layer_ms"] / r["layer_ms"]
        c_layers = [x["layer_ms"] for x in (c2, cf, cx) if x and x.get("layer_ms")]
        lc = dense.get("layer_ms") and c_layers and dense["layer_ms"] / min(c_layers)
        f = lambda x: "—" if not x else f"{x:.2f}×"  # noqa: E731
        lines.append(f"| {_label(dense)} | {f(sr)} | {f(sc)} | {f(sf)} | {f(sx)} | "
                     f"{'WSP-C' if best_c > sr else 'WSP-R'} | {f(lr)} | {f(lc)} |")
    return "\n".join(lines)


def csr_table(rows) -> str:
    lines = ["| layer | ratio | dense cuBLAS µs | CSR per position µs | CSR block-diag µs | CSR / dense |",
             "|---|---|---|---|---|---|"]
    for shape, pts in _by_shape(rows).items():
        dense = pts.get(("dense", "cublas", None, None))
        for q in sorted({k[2] for k in pts if k[0] == "wwp"}):
            a = pts.get(("wwp", "cusparse-per-position", q, None))
            b = pts.get(("wwp", "cusparse-block-diag", q, None))
            best = min((x["median_ms"] for x in (a, b) if x), default=None)
            rel = f"{best / dense['median_ms']:.1f}× slower" if dense and best else "—"
            lines.append(f"| {_label(dense or a or b)} | {q:g} | {_us(dense and dense['median_ms'])} | "
                         f"{_us(a and a['median_ms'])} | {_us(b and b['median_ms'])} | {rel} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--ratio", type=float, default=0.7)
    args = ap.parse_args()
    rows = fill_speedups(ResultStore(args.results).load())
    gpu = next((r["gpu"] for r in rows if r.get("gpu")), "?")
    print(f"<!-- generated by: python bench/report.py {args.results} --ratio {args.ratio:g} -->")
    print(f"GPU: {gpu}; {len(rows)} rows, {sum(r['status'] == 'ok' for r in rows)} ok.\n")
    for title, body in (
            (f"GEMM batch per layer at ratio {args.ratio:g} (µs, median)", families_table(rows, args.ratio)),
            ("Imbalance: WSP-R balanced vs unbalanced (grouped, padded)", imbalance_table(rows)),
            ("Share of the balanced WSP-R speedup the unbalanced launches keep", kept_share(rows)),
            ("Speedup over our dense vs the roofline-predicted speedup", target_table(rows)),
            (f"Whole layer vs cuDNN at ratio {args.ratio:g} (µs)", layer_table(rows, args.ratio)),
            (f"VGG-16 per layer at ratio {args.ratio:g}: WSP-R vs WSP-C (paper Figure 9)",
             paper_table(rows, args.ratio)),
            ("Element-wise pruning (cuSPARSE CSR) vs dense", csr_table(rows))):
        print(f"### {title}\n\n{body}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
