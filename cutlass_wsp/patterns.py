"""The pattern vocabulary, in one place: every pattern a sweep knows, what it prunes and which axes it has.

A *pattern* is what is kept of the weights (and so which GEMM batch a layer leaves behind); an
*implementation* is how that batch (or the whole layer) is run, and comes from the family that serves
it (`cutlass_wsp.families.registry`). `pruning.py`, `sweep/plan.py`, `sweep/measure.py` and
`sweep/plot.py` read this table; nothing else names patterns.

Fields:
  uses_ratio / uses_balance / uses_tile  which sweep axes apply (conv has no Winograd tile: p is None)
  prunes_as   the pruning pattern (`pruning.prune`) whose mask and compact form the pattern runs on:
              itself for the pruning patterns, another one for a variant (wsp-c-fused runs WSP-C's
              pruning with the gather fused; conv runs the unpruned layer)
  unit        the pruning unit (one row of W_i, a column, a filter, ...)
  balances    the balances `pruning.prune` accepts for it
  plot_group  how plots group it: "unpruned", "structured" (the WSP patterns, plotted together),
              "other"
A sweep offers the patterns some family serves (sweep/plan.py); the others are pruning patterns only
(e.g. wsp-rb, until a family serves it).
"""

from __future__ import annotations

from dataclasses import dataclass

BALANCES: tuple[str, ...] = ("balanced", "unbalanced", "spread")   # pruning balances (sweep: spread:S)
PLOT_GROUPS = ("unpruned", "structured", "other")


@dataclass(frozen=True)
class Pattern:
    name: str
    description: str
    uses_ratio: bool
    uses_balance: bool
    prunes_as: str
    unit: str
    balances: tuple[str, ...] = ("balanced",)
    uses_tile: bool = True
    plot_group: str = "other"

    @property
    def is_pruning_pattern(self) -> bool:
        """A pattern of its own in `pruning.prune` (not a variant running another pattern's pruning)."""
        return self.prunes_as == self.name


PATTERNS: dict[str, Pattern] = {p.name: p for p in (
    Pattern("conv", "direct convolution, no Winograd: cuDNN picks its algorithm", False, False,
            prunes_as="dense", unit="weight", uses_tile=False, plot_group="unpruned"),
    Pattern("dense", "unpruned batched GEMM", False, False, prunes_as="dense", unit="weight",
            plot_group="unpruned"),
    Pattern("fp", "filter pruning: the same rows removed in every position", True, False,
            prunes_as="fp", unit="filter"),
    Pattern("wsp-r", "Winograd structured pruning, rows of each W_i", True, True,
            prunes_as="wsp-r", unit="row", balances=BALANCES, plot_group="structured"),
    Pattern("wsp-c", "Winograd structured pruning, columns of each W_i: gather X, then GEMM (two passes)",
            True, True, prunes_as="wsp-c", unit="column", balances=BALANCES, plot_group="structured"),
    Pattern("wsp-c-fused", "WSP-C with the gather of X fused: into the GEMM mainloop (cutlass, "
            "cutlass-padded) or into the Winograd input transform (cutlass-xform)", True, True,
            prunes_as="wsp-c", unit="column", balances=BALANCES, plot_group="structured"),
    Pattern("wwp", "element-wise pruning: sparse × dense", True, False, prunes_as="wwp", unit="weight",
            balances=BALANCES),
    Pattern("bcbp", "block-column pruning: the same count of column vectors in every row tile", True, False,
            prunes_as="bcbp", unit="column segment"),
    Pattern("wsp-rb", "WSP-R balanced per block of filters: the same count of rows kept in every (position, "
            "filter block)", True, False, prunes_as="wsp-rb", unit="row", plot_group="structured"),
)}

CONV = "conv"   # the whole-layer baseline: not a GEMM batch at all

# What `pruning.prune` accepts: the patterns that are their own pruning (dense, fp, wsp-r, wsp-c, wwp, bcbp).
PRUNING_PATTERNS: tuple[str, ...] = tuple(p.name for p in PATTERNS.values() if p.is_pruning_pattern)


def get(name: str) -> Pattern:
    """The pattern called `name` (InputError naming the known ones otherwise)."""
    if name not in PATTERNS:
        from cutlass_wsp.errors import InputError

        raise InputError(f"unknown pattern {name!r}", f"use one of {', '.join(PATTERNS)}")
    return PATTERNS[name]


def in_plot_group(group: str) -> tuple[str, ...]:
    """Names of the patterns plotted as `group` (e.g. "structured": wsp-r, wsp-c, wsp-c-fused)."""
    return tuple(p.name for p in PATTERNS.values() if p.plot_group == group)


def pruning_of(name: str) -> str:
    """The pruning pattern `name` runs on (wsp-c-fused -> wsp-c, conv -> dense)."""
    return get(name).prunes_as
