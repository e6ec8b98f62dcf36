"""Run a sweep: for each pending point, prepare it, verify it on fresh random data, then time it, and
append one row. A failing point becomes a row with its reason and the sweep goes on; only a lost CUDA
context (a sticky error: every later launch would fail too) stops it, with everything so far saved.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cutlass_wsp.errors import GpuUnavailable, KernelError, WspError, is_sticky
from cutlass_wsp.gpu.harness import TimingOptions
from cutlass_wsp.status import classify
from cutlass_wsp.sweep.plan import Point
from cutlass_wsp.sweep.results import ResultStore, make_row

class ContextLost(WspError):
    """The CUDA context died on a point (a sticky error, errors.is_sticky: every later launch would fail too); the
    sweep stops, rows so far are saved."""


@dataclass
class SweepOutcome:
    path: Path
    written: int = 0
    skipped: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def run_points(points: Sequence[Point], store: ResultStore, measure: Callable[[Point], dict], *,
               provenance_fields: dict, progress=None, retry_failed: bool = False) -> SweepOutcome:
    """Measure the points the store does not have yet, appending one row per point as it finishes.
    `measure(point)` returns the row's measured fields or raises; it is the only GPU-facing part.

    The whole run holds the results file's writer lock: a second sweep onto the same file is refused
    (Busy, one line) before it measures anything. Each point is checked again before it is measured
    and before its row is appended, so a row already in the file is never measured or written twice."""
    t0 = time.perf_counter()
    with store.writing():
        pending = store.pending(points, retry_failed=retry_failed)
        out = SweepOutcome(path=store.path, skipped=len(points) - len(pending))
        if progress is not None:
            progress.total = len(pending)
        for point in pending:
            if not store.is_pending(point.key, retry_failed):
                out.skipped += 1              # recorded meanwhile by another writer
                continue
            row, exc = _measure_row(point, measure, provenance_fields)
            if not store.append_pending(row, retry_failed=retry_failed):
                out.skipped += 1
                continue
            out.written += 1
            out.statuses[row["status"]] = out.statuses.get(row["status"], 0) + 1
            if row["status"] == "error" and is_sticky(row["reason"] or ""):
                raise ContextLost(f"the CUDA context was lost on {point.key}: {row['reason']}",
                                  "run the same command again: the sweep resumes after this point") from exc
            if progress is not None:
                progress.update(f"{point.key} {row['status']}")
    if progress is not None:
        progress.close()
    out.seconds = time.perf_counter() - t0
    return out


def _measure_row(point: Point, measure: Callable[[Point], dict],
                 provenance_fields: dict) -> tuple[dict, Exception | None]:
    """(the point's row, the exception it failed with or None): measured, or the failure as a row.
    GpuUnavailable and Ctrl-C stop the sweep."""
    prov = {**provenance_fields, "timestamp": _now()}   # each row: when it was measured
    try:
        fields = measure(point)
        return make_row(point, "ok", **fields, **prov), None
    except KeyboardInterrupt:
        raise
    except GpuUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 -- any failure becomes a row; the sweep goes on
        status, reason = classify(exc)
        extra = getattr(exc, "row_fields", None) or {}
        return make_row(point, status, reason=reason, **extra, **prov), exc


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def summary_line(o: SweepOutcome) -> str:
    st = ", ".join(f"{k} {v}" for k, v in sorted(o.statuses.items())) or "nothing new"
    return (f"{o.written} points measured ({st}), {o.skipped} already in {o.path}, "
            f"{o.seconds:.0f} s")


def warn(msg: str) -> None:
    print(f"cutlass-wsp: {msg}", file=sys.stderr)


__all__ = ["TimingOptions", "SweepOutcome", "classify", "run_points", "summary_line",
           "ContextLost", "KernelError"]
