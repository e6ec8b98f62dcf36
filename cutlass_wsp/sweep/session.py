"""A measuring session on the GPU: provenance, compile-ahead of the kernels a sweep needs, and the
runner loop with a progress bar. Kept apart from the CLI so notebooks and bench/ can call it."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cutlass_wsp.sweep.plan import Point
from cutlass_wsp.sweep.results import ResultStore, make_row, row_provenance
from cutlass_wsp.sweep.runner import SweepOutcome, TimingOptions, classify, run_points, summary_line


@dataclass
class SweepResult:
    outcome: SweepOutcome

    @property
    def summary(self) -> str:
        return summary_line(self.outcome)


def _provenance() -> tuple[dict, dict]:
    from cutlass_wsp.gpu.info import provenance

    prov = provenance()
    return prov, row_provenance(prov)


def _row_fields(prov_fields: dict) -> dict:
    """Per-row provenance with the measurement's own timestamp."""
    from datetime import datetime, timezone

    return {**prov_fields, "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def run_sweep(points: Sequence[Point], store: ResultStore, *, budget_s: float = 0.25,
              use_graph: bool = False, retry_failed: bool = False, layer_time: bool = True,
              tune: bool = False, tune_budget_s: float = 1.0) -> SweepResult:
    from cutlass_wsp.gpu.device import require_gpu
    from cutlass_wsp.sweep.measure import Measurer
    from cutlass_wsp.sweep.progress import Progress

    require_gpu()
    with store.writing():      # a second sweep onto this file stops here, before compiling or tuning
        prov, prov_fields = _provenance()
        store.provenance = prov
        m = Measurer(TimingOptions(budget_s=budget_s, use_graph=use_graph), layer_time=layer_time, tune=tune,
                     tune_budget_s=tune_budget_s)
        pending = store.pending(points, retry_failed=retry_failed)
        m.compile_ahead(pending)

        progress = Progress(len(pending))
        outcome = run_points(points, store, m.measure, provenance_fields=prov_fields, progress=progress,
                             retry_failed=retry_failed)
    return SweepResult(outcome)


def measure_one(point: Point, *, budget_s: float = 0.25, use_graph: bool = False,
                out: Path | None = None, layer_time: bool = True) -> dict:
    from cutlass_wsp.gpu.device import require_gpu
    from cutlass_wsp.sweep.measure import Measurer

    require_gpu()
    store = ResultStore(out, out_option="--out") if out is not None else None
    with store.writing() if store is not None else contextlib.nullcontext():   # refused before measuring
        _, prov_fields = _provenance()
        m = Measurer(TimingOptions(budget_s=budget_s, use_graph=use_graph), layer_time=layer_time)
        try:
            row = make_row(point, "ok", **m.measure(point), **_row_fields(prov_fields))
        except Exception as exc:  # noqa: BLE001 -- reported as a row, like in a sweep
            status, reason = classify(exc)
            row = make_row(point, status, reason=reason, **_row_fields(prov_fields))
        if store is not None:
            store.append(row)
    return row
