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

from cutlass_wsp.errors import GpuUnavailable, KernelError, WspError
from cutlass_wsp.gpu.harness import TimingOptions
from cutlass_wsp.status import classify
from cutlass_wsp.sweep.plan import Point
from cutlass_wsp.sweep.results import ResultStore, make_row

# CUDA errors after which the context is unusable: stop instead of filling the file with failures.
_STICKY = ("cudaErrorIllegalAddress", "cudaErrorLaunchFailure", "cudaErrorIllegalInstruction",
           "cudaErrorMisalignedAddress", "cudaErrorHardwareStackError", "cudaErrorAssert",
           "illegal memory access", "misaligned address", "unspecified launch failure")


class ContextLost(WspError):
    """The CUDA context died on a point; the sweep stops, rows so far are saved."""


@dataclass
class SweepOutcome:
    path: Path
    written: int = 0
    skipped: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def is_sticky(reason: str) -> bool:
    return any(s in reason for s in _STICKY)


def run_points(points: Sequence[Point], store: ResultStore, measure: Callable[[Point], dict], *,
               provenance_fields: dict, progress=None, retry_failed: bool = False) -> SweepOutcome:
    """Measure the points the store does not have yet, appending one row per point as it finishes.
    `measure(point)` returns the row's measured fields or raises; it is the only GPU-facing part."""
    t0 = time.perf_counter()
    pending = store.pending(points, retry_failed=retry_failed)
    out = SweepOutcome(path=store.path, skipped=len(points) - len(pending))
    if progress is not None:
        progress.total = len(pending)
    for point in pending:
        prov = {**provenance_fields, "timestamp": _now()}   # each row: when it was measured
        try:
            fields = measure(point)
            row = make_row(point, "ok", **fields, **prov)
        except KeyboardInterrupt:
            raise
        except GpuUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 -- any failure becomes a row; the sweep goes on
            status, reason = classify(exc)
            extra = getattr(exc, "row_fields", None) or {}
            row = make_row(point, status, reason=reason, **extra, **prov)
            if status == "error" and is_sticky(reason):
                store.append(row)
                out.written += 1
                out.statuses[status] = out.statuses.get(status, 0) + 1
                raise ContextLost(f"the CUDA context was lost on {point.key}: {reason}",
                                  "run the same command again: the sweep resumes after this point") from exc
        store.append(row)
        out.written += 1
        out.statuses[row["status"]] = out.statuses.get(row["status"], 0) + 1
        if progress is not None:
            progress.update(f"{point.key} {row['status']}")
    if progress is not None:
        progress.close()
    out.seconds = time.perf_counter() - t0
    return out


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def summary_line(o: SweepOutcome) -> str:
    st = ", ".join(f"{k} {v}" for k, v in sorted(o.statuses.items())) or "nothing new"
    return (f"{o.written} points measured ({st}), {o.skipped} already in {o.path}, "
            f"{o.seconds:.0f} s")


def warn(msg: str) -> None:
    print(f"cutlass-wsp: {msg}", file=sys.stderr)


__all__ = ["TimingOptions", "SweepOutcome", "classify", "is_sticky", "run_points", "summary_line",
           "ContextLost", "KernelError"]
