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
  fixed_ratio the one ratio the pattern has (2:4 removes exactly half): its points take it whatever the
              sweep's ratios are, so they sit beside the other patterns at that ratio
  built_by    the module that builds its pruning when `pruning.prune` does not (the seeds' methods start
              from spatial filters or another mask, or have their own compact form); `seed_pruning.py`
              dispatches on it. None: `pruning.prune`.
A sweep offers the patterns some family serves (sweep/plan.py); the others are pruning patterns only
(e.g. wsp-cb: the fused kernel runs it on request, no sweep family serves it yet).
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
    fixed_ratio: float | None = None
    built_by: str | None = None

    @property
    def is_pruning_pattern(self) -> bool:
        """A pattern of its own in `pruning.prune` (not a variant running another pattern's pruning, nor
        one built outside it)."""
        return self.prunes_as == self.name and self.built_by is None


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
    Pattern("wsp-cb", "WSP-C balanced in blocks of 16 input channels (the fused kernel's chunk): the same count "
            "of blocks kept in every position", True, False, prunes_as="wsp-cb", unit="column block",
            plot_group="structured"),
    # The seeds' methods and the vendor's structured sparsity (issue 14; docs/pruning.md names the sources).
    Pattern("2:4", "2:4 semi-structured: 2 of every 4 weights along c kept in each W_i (exactly 50%), "
            "sparse tensor cores through cuSPARSELt", True, False, prunes_as="2:4", unit="weight",
            fixed_ratio=0.5, built_by="semi_structured"),
    Pattern("spatial-winograd", "spatial-Winograd masks (seed 003): structured spatial pruning carried into "
            "the Winograd domain, then importance-weighted Winograd pruning; element-sparse, run as CSR",
            True, False, prunes_as="spatial-winograd", unit="weight", built_by="spatial_winograd"),
    Pattern("hybrid", "dense blocks + CSR remainder (seed 004) of the spatial-Winograd masks, remainder "
            "re-pruned: the blocks as one gather GEMM, the remainder through cuSPARSE, one point",
            True, False, prunes_as="hybrid", unit="weight", built_by="dense_blocks"),
)}

CONV = "conv"   # the whole-layer baseline: not a GEMM batch at all

# What `pruning.prune` accepts: the patterns that are their own pruning (dense, fp, wsp-r, wsp-c, wwp, bcbp).
PRUNING_PATTERNS: tuple[str, ...] = tuple(p.name for p in PATTERNS.values() if p.is_pruning_pattern)
# What `seed_pruning.prune_point` builds outside `pruning.prune` (2:4, spatial-winograd, hybrid).
BUILT_PATTERNS: tuple[str, ...] = tuple(p.name for p in PATTERNS.values() if p.built_by is not None)


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
