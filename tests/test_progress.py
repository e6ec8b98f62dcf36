"""Progress bar: one line per point off a terminal, \\r redraws on one, ETA from the mean point time."""

from __future__ import annotations

import io

from cutlass_wsp.sweep.progress import Progress, format_duration


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_not_a_tty_prints_a_line_per_point_with_eta():
    out, clock = io.StringIO(), Clock()
    p = Progress(4, stream=out, clock=clock)
    assert not p.tty
    clock.t += 10
    p.update("vgg16/a")
    clock.t += 10
    p.update("vgg16/b")
    lines = out.getvalue().splitlines()
    assert lines == ["[1/4]  25% ETA 30s  vgg16/a", "[2/4]  50% ETA 20s  vgg16/b"]
    assert "\r" not in out.getvalue()


def test_tty_redraws_one_line_and_ends_with_newline():
    out, clock = io.StringIO(), Clock()
    with Progress(2, stream=out, clock=clock, tty=True, width=4) as p:
        clock.t += 90
        p.update("a long label")
        p.update("b")
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    first, second = text.split("\r")[1:]
    assert first.startswith("|##..| [1/2]  50% ETA 1m30s  a long label")
    assert second.startswith("|####| [2/2] 100% done  b")
    assert len(second.rstrip("\n")) == len(first)   # padded over the longer previous line


def test_format_duration():
    assert [format_duration(s) for s in (5, 65, 3725)] == ["5s", "1m05s", "1h02m"]
