"""How long a point takes, roughly, so that a sweep over several GPUs starts the long points first
(longest-processing-time-first: the last points to finish are short ones, and no GPU idles while
another finishes a long point at the end).

The estimate is a size proxy, c · n · H · W · batch: the dense layer's multiply-adds ÷ 9. Every point
is timed for the same budget (`--budget-ms`), so what differs between points is the rest of their
wall time: drawing and pruning the weights on the host, copying operands, the reference product that
verifies the output, the warm-up and, for a long kernel, the repetitions the minimum count forces. All
of these grow with the layer's size and batch. The pattern, ratio and dtype are left out: they change a
point's kernel time, not its setup, and kernel time is what the fixed budget caps.
"""

from __future__ import annotations

from collections.abc import Iterable


def point_cost(point) -> int:
    """The size proxy c·n·H·W·batch of a sweep point (anything with those attributes)."""
    return point.c * point.n * point.H * point.W * point.batch


def longest_first(points: Iterable) -> list:
    """The points, the largest estimate first; points of equal estimate keep their order."""
    return sorted(points, key=point_cost, reverse=True)
