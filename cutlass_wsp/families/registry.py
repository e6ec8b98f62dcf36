"""The family registry: every module of `cutlass_wsp/families/` that defines `FAMILY` is a family.

Discovery walks the package (pkgutil), so adding a family is adding its module (and its templates and
tests): no list to edit. Lookups:

    families()                       {name: Family}, ours first (Family.order), then by name
    family(name)                     one Family
    serving(pattern, impl)           the Family that runs a (pattern, implementation) point
    kernel_families()                {KernelDesc.family: KernelFamily} of every family's `kernels`
    kernel_family(name)              one KernelFamily
    implementations(pattern=None)    {impl: description}, or for one pattern {impl: balance rule}
    default_implementations(pattern) the implementations the default sweep runs
    candidates(problem, dtype, arch, family=..., ...)   a kernel family's candidate menu

Two families serving one (pattern, impl), or two kernel families of one name, is a RegistryError at
discovery; so is a `Serves` naming a pattern that `cutlass_wsp.patterns` does not know.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import Any

from cutlass_wsp.errors import InputError, Unsupported
from cutlass_wsp.families.base import LAYER, Family, KernelFamily, Serves

SKIP = ("base", "registry")      # the interface and this module: not families


class RegistryError(RuntimeError):
    """Two families claim one name or one (pattern, impl): a programming error, found at import."""


@functools.lru_cache(maxsize=None)
def _discover() -> tuple[Family, ...]:
    import cutlass_wsp.families as pkg

    found: list[Family] = []
    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name in SKIP or mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"{pkg.__name__}.{mod.name}")
        fam = getattr(module, "FAMILY", None)
        if fam is None:
            continue
        if not isinstance(fam, Family):
            raise RegistryError(f"{module.__name__}.FAMILY is a {type(fam).__name__}, not a families.base.Family")
        found.append(fam)
    _check(found)
    return tuple(sorted(found, key=lambda f: (f.order, f.name)))


def _check(found: list[Family]) -> None:
    from cutlass_wsp.patterns import PATTERNS

    names: dict[str, Family] = {}
    kernels: dict[str, Family] = {}
    points: dict[tuple[str, str], Family] = {}
    for fam in found:
        if not fam.name or fam.name in names:
            raise RegistryError(f"family name {fam.name!r} is empty or taken (by {names.get(fam.name)!r})")
        names[fam.name] = fam
        for k in fam.kernels:
            if not k.name or k.name in kernels:
                raise RegistryError(f"kernel family {k.name!r} of {fam.name} is empty or taken "
                                    f"(by {kernels.get(k.name)!r})")
            kernels[k.name] = fam
        for s in fam.serves:
            if s.pattern not in PATTERNS:
                raise RegistryError(f"family {fam.name} serves unknown pattern {s.pattern!r} "
                                    "(add it to cutlass_wsp/patterns.py)")
            key = (s.pattern, s.impl)
            if key in points:
                raise RegistryError(f"{s.pattern}/{s.impl} is served by both {points[key].name} and {fam.name}")
            points[key] = fam


def families() -> dict[str, Family]:
    return {f.name: f for f in _discover()}


def family(name: str) -> Family:
    fams = families()
    if name not in fams:
        raise InputError(f"unknown family {name!r}", f"use one of {', '.join(fams)}")
    return fams[name]


@functools.lru_cache(maxsize=None)
def _points() -> dict[tuple[str, str], tuple[Family, Serves]]:
    return {(s.pattern, s.impl): (f, s) for f in _discover() for s in f.serves}


def serving(pattern: str, impl: str) -> Family:
    """The family that runs (pattern, impl); Unsupported when none does."""
    found = _points().get((pattern, impl))
    if found is None:
        raise Unsupported(f"no implementation {impl!r} of pattern {pattern!r} in this build",
                          "see `cutlass-wsp sweep --help` for the implementations")
    return found[0]


def serves(pattern: str) -> list[Serves]:
    """Every implementation of `pattern`, in order (ours first)."""
    return [s for f in _discover() for s in f.serves if s.pattern == pattern]


def implementations(pattern: str | None = None) -> dict[str, str]:
    """Without a pattern: {impl: description} of every implementation any family serves. With one:
    {impl: balance rule} of that pattern's implementations, in order."""
    if pattern is not None:
        return {s.impl: s.balance for s in serves(pattern)}
    out: dict[str, str] = {}
    for f in _discover():
        for s in f.serves:
            if s.impl not in out or (not out[s.impl] and s.description):
                out[s.impl] = s.description
    return out


def layer_points() -> frozenset[tuple[str, str]]:
    """(pattern, impl) whose rows time the whole layer (families of scope "layer": cuDNN, the fused layer):
    their median_ms compares with other whole layers, not with GEMM batches."""
    return frozenset((s.pattern, s.impl) for f in _discover() if f.scope == LAYER for s in f.serves)


def default_implementations(pattern: str) -> tuple[str, ...]:
    return tuple(s.impl for s in serves(pattern) if s.default)


def kernel_families() -> dict[str, KernelFamily]:
    return {k.name: k for f in _discover() for k in f.kernels}


def kernel_family(name: str) -> KernelFamily:
    kfs = kernel_families()
    if name not in kfs:
        raise Unsupported(f"no kernel family {name!r}", f"use one of {', '.join(kfs)}")
    return kfs[name]


def tunable() -> dict[str, KernelFamily]:
    """The kernel families the tuner searches (those with a menu and a measurement)."""
    return {n: k for n, k in kernel_families().items() if k.tunable}


def candidates(problem: Any, dtype: str, arch: str, *, family: str = "dense", **kw: Any) -> list:
    """`kernel_family(family).candidates(problem, dtype, arch, **kw)`."""
    return kernel_family(family).candidates(problem, dtype, arch, **kw)


def candidate_union(problems: Any, dtype: str, arch: str, *, family: str = "dense", **kw: Any) -> list:
    """Every description the problems' candidate sets name, each once, in first-seen order."""
    out: dict = {}
    for p in problems:
        out.update(dict.fromkeys(candidates(p, dtype, arch, family=family, **kw)))
    return list(out)


def checks() -> dict[str, Any]:
    """{kernel family: its constraint check}, what a TunedChoices validates a stored choice with."""
    return {n: k.check for n, k in kernel_families().items()}
