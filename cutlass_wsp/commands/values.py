"""Values the commands read from their options, parsed in one place so every command accepts the same
spellings and refuses the rest with the same line."""

from __future__ import annotations

import math

RATIO_FIX = "write the fraction pruned as 0.7 or 70%"


def parse_ratio(text: str, option: str = "--ratio") -> float:
    """A pruning ratio: '0.7' or '70%' -> 0.7. It must lie in 0 < ratio < 1 (the sweep's ratio axis:
    ratio 0 is the dense point); anything else is an InputError naming `option`."""
    from cutlass_wsp.errors import InputError

    s = str(text).strip()
    percent = s.endswith("%")
    try:
        value = float(s[:-1].strip()) / 100 if percent else float(s)
    except ValueError:
        raise InputError(f"{option} {text!r} is not a number", RATIO_FIX) from None
    if not (math.isfinite(value) and 0 < value < 1):
        raise InputError(f"{option} {text!r} is outside 0 < ratio < 1", RATIO_FIX)
    return value


def parse_ratios(text: str, option: str = "--ratio") -> tuple[float, ...]:
    """A comma list of ratios, each as parse_ratio reads it."""
    return tuple(parse_ratio(s.strip(), option) for s in str(text).split(",") if s.strip())


def parse_fraction(text: str, option: str) -> float:
    """A weight in [0, 1]: '0.3' or '30%' -> 0.3 (both ends allowed, unlike a ratio); anything else is
    an InputError naming `option`."""
    from cutlass_wsp.errors import InputError

    s = str(text).strip()
    percent = s.endswith("%")
    fix = "write a number from 0 to 1, e.g. 0.5 or 50%"
    try:
        value = float(s[:-1].strip()) / 100 if percent else float(s)
    except ValueError:
        raise InputError(f"{option} {text!r} is not a number", fix) from None
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise InputError(f"{option} {text!r} is outside 0..1", fix)
    return value
