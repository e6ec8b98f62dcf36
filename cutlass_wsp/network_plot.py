"""The network-time figure (matplotlib, Agg canvas, imported only when drawing; as sweep/plot.py draws).

One horizontal bar per method and batch: the speedup over cuDNN's dense network time (cuDNN total ÷ the
method's total), each bar labelled with the total in ms; a method without a total says why in place of
its bar ("not measured", "incomplete").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

FORMATS = ("png", "svg")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", str(text)).strip("-").lower() or "x"


def stem(net: str, ratio: float) -> str:
    return f"network_{_slug(Path(net).stem if Path(net).suffix else net)}_r{ratio:g}"


def plot_network(times: Mapping[int, Sequence], out_dir: str | Path, *, net: str, ratio: float, gpu: str | None,
                 dtype: str, p: int, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Draw `times` (network_time.network_times' result) into the existing folder out_dir; returns the files."""
    import matplotlib
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from cutlass_wsp.sweep.plot import save_figure

    batches = sorted(times)
    methods = [t.method for t in times[batches[0]]]
    out_dir = Path(out_dir)
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "cutlass-wsp"}):
        fig = Figure(figsize=(9.5, 0.3 * len(methods) * max(len(batches), 1) + 1.8), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        y = np.arange(len(methods))[::-1].astype(float)
        h = 0.8 / len(batches)
        top = max([t.vs_cudnn for b in batches for t in times[b] if t.vs_cudnn] or [1.0])
        for j, b in enumerate(batches):
            ys = y + 0.4 - h * (j + 0.5)
            vals = [t.vs_cudnn or 0.0 for t in times[b]]
            ax.barh(ys, vals, h * 0.9, label=f"batch {b}")
            for yy, t in zip(ys, times[b]):
                if t.total_ms is not None:
                    text = f" {t.total_ms:.3f} ms ({t.vs_cudnn:.2f}×)" if t.vs_cudnn else f" {t.total_ms:.3f} ms"
                    ax.text(t.vs_cudnn or 0.0, yy, text, va="center", fontsize=7)
                else:
                    ax.text(0.0, yy, f" {t.state}", va="center", fontsize=7, color="0.45", style="italic")
        ax.axvline(1.0, color="0.3", linewidth=0.8, linestyle="--")
        ax.set_yticks(y, [m.label for m in methods], fontsize=8)
        ax.set_xlim(0, top * 1.35)
        ax.set_xlabel("speedup over cuDNN dense (cuDNN network time ÷ the method's), whole-layer times summed")
        ax.legend(loc="lower right", fontsize=8)
        fig.suptitle(f"{net}: network time of its 3×3 stride-1 convs, pruned methods at ratio {ratio:g}\n"
                     f"{gpu or 'unknown GPU'}, {dtype}, p{p}", fontsize=10)
        return save_figure(fig, out_dir, stem(net, ratio), formats)
