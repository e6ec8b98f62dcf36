"""A minimal progress bar with ETA on stderr. On a terminal it redraws one line; otherwise (a log
file, CI) it prints one line per point, so the log says what was measured when."""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO


def format_duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """`Progress(total)`, then `.update(label)` after each point; `.close()` (or use as a context manager)."""

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 24,
                 clock: Callable[[], float] = time.monotonic, tty: bool | None = None):
        self.total = max(int(total), 0)
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.clock = clock
        self.start = clock()
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty()) if tty is None else tty
        self._last_len = 0

    def eta_seconds(self) -> float | None:
        """Remaining time at the mean time per point so far; None before the first point."""
        if self.done == 0:
            return None
        per_point = (self.clock() - self.start) / self.done
        return per_point * max(self.total - self.done, 0)

    def line(self, label: str = "") -> str:
        n = len(str(self.total))
        frac = self.done / self.total if self.total else 1.0
        eta = self.eta_seconds()
        eta_s = "ETA --" if eta is None else ("done" if self.done >= self.total else f"ETA {format_duration(eta)}")
        text = f"[{self.done:>{n}}/{self.total}] {frac:4.0%} {eta_s}"
        if self.tty:
            filled = int(round(frac * self.width))
            text = f"|{'#' * filled}{'.' * (self.width - filled)}| " + text
        return f"{text}  {label}".rstrip()

    def update(self, label: str = "", n: int = 1) -> None:
        self.done += n
        text = self.line(label)
        if self.tty:
            pad = " " * max(self._last_len - len(text), 0)
            self.stream.write("\r" + text + pad)
            self._last_len = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._last_len:
            self.stream.write("\n")
            self.stream.flush()
            self._last_len = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
