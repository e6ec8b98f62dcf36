"""Synthetic result rows for the abwsp and network tests: real planner points (sweep/plan.py), made-up times.

`rows_for(spec_layers, times)` gives one ok row per point whose (pattern, impl, ratio, balance) has a time
in `times`; a time is (GEMM batch ms, whole-layer ms or None). Nothing here was measured.
"""

from __future__ import annotations

from cutlass_wsp.sweep.plan import SweepSpec, expand
from cutlass_wsp.sweep.results import ResultStore, make_row

GPU = "synthetic-GPU"
PATTERNS = ("conv", "dense", "fp", "wsp-r", "wsp-c", "wsp-c-fused", "wwp")


def points(layers: tuple[str, ...], batch: int = 32, ratios=(0.7,), patterns=PATTERNS):
    spec = SweepSpec(layers=layers, batches=(batch,), tiles=(4,), dtypes=("fp16",), patterns=patterns,
                     ratios=ratios, balances=("balanced", "unbalanced"))
    return expand(spec)


def row(point, gemm_ms: float, layer_ms: float | None, status: str = "ok", **kw):
    if status != "ok":
        return make_row(point, status, reason="synthetic failure", gpu=GPU, **kw)
    fields = dict(median_ms=gemm_ms, q1_ms=gemm_ms * 0.99, q3_ms=gemm_ms * 1.01, gpu=GPU)
    if layer_ms is not None:
        fields.update(layer_ms=layer_ms, layer_q1_ms=layer_ms * 0.99, layer_q3_ms=layer_ms * 1.01)
    return make_row(point, "ok", **{**fields, **kw})


def rows_for(pts, times: dict) -> list[dict]:
    """times[(pattern, impl, ratio, balance)] = (gemm_ms, layer_ms) or a callable(point) -> that pair;
    points without an entry get no row."""
    out = []
    for pt in pts:
        t = times.get((pt.pattern, pt.impl, pt.ratio, pt.balance))
        if t is None:
            continue
        if callable(t):
            t = t(pt)
        if t == "wrong":
            out.append(row(pt, 0, None, status="wrong"))
        else:
            out.append(row(pt, *t))
    return out


def write(path, rows) -> str:
    store = ResultStore(path)
    for r in rows:
        store.append(r)
    return str(path)


# One time per (pattern, impl, ratio 0.7, balance): BWSP-R fastest, WSP-R next, WSP-C slowest.
BASE_TIMES = {
    ("conv", "cudnn", None, None): (0.050, 0.050),
    ("dense", "cutlass", None, None): (0.040, 0.100),
    ("dense", "cublas", None, None): (0.042, 0.104),
    ("fp", "cutlass", 0.7, None): (0.016, 0.070),
    ("wsp-r", "cutlass", 0.7, "balanced"): (0.015, 0.070),
    ("wsp-r", "cutlass-grouped", 0.7, "balanced"): (0.017, 0.074),
    ("wsp-r", "cutlass-grouped", 0.7, "unbalanced"): (0.019, 0.080),
    ("wsp-r", "cutlass-padded", 0.7, "unbalanced"): (0.022, 0.085),
    ("wsp-c", "cutlass", 0.7, "balanced"): (0.030, 0.090),
    ("wsp-c", "cutlass-padded", 0.7, "unbalanced"): (0.034, 0.095),
    ("wsp-c-fused", "cutlass-xform", 0.7, "balanced"): (0.025, 0.085),
    ("wsp-c-fused", "cutlass-xform", 0.7, "unbalanced"): (0.027, 0.088),
    ("wwp", "cusparse-block-diag", 0.7, None): (0.400, 0.480),
}
