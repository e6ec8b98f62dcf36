"""The package's import graph: no cycles, and `kernels/` never imports `families/`.

Every module of cutlass_wsp is parsed with `ast` (nothing is imported), and every import of a
cutlass_wsp module is collected: at module level and inside functions (lazy imports), except those
under `if TYPE_CHECKING:` (never executed). The checks are strict for both kinds:
  - no cycle in the graph of module-level imports (a cycle there breaks or half-initialises a module
    depending on which one is imported first);
  - no cycle in the graph of ALL imports, lazy ones included (a lazy cycle works at runtime but means
    two modules each need the other: one job split over two places, the layering the issue asks for);
  - no import, module-level or lazy, from cutlass_wsp.kernels to cutlass_wsp.families (the kernel layer
    builds and tunes anything with the KernelFamily shape; the families plug into it, not the reverse).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "cutlass_wsp"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module an import names: itself, else the longest known prefix (a name imported from it)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports_of(module: str) -> tuple[set[str], set[str]]:
    """(module-level imports, lazy imports) of cutlass_wsp modules by `module`."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    top: set[str] = set()
    lazy: set[str] = set()
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]

    def targets(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] or [base]
        found = []
        for n in names:
            if n == "cutlass_wsp" or n.startswith("cutlass_wsp."):
                r = _resolve(n)
                if r is not None and r != module:
                    found.append(r)
        return found

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit_stmt(sub, in_function)
                continue
            visit_stmt(child, in_function)

    def visit_stmt(child: ast.AST, in_function: bool) -> None:
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            (lazy if in_function else top).update(targets(child))
        visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return top, lazy


GRAPH = {m: imports_of(m) for m in MODULES}


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := dfs(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state and (found := dfs(n)):
            return found
    return None


def test_the_walk_sees_the_package():
    assert {"cutlass_wsp.kernels.cache", "cutlass_wsp.families.registry", "cutlass_wsp.sweep.measure"} <= set(MODULES)
    top, lazy = GRAPH["cutlass_wsp.sweep.measure"]
    assert "cutlass_wsp.families.registry" in top
    assert "cutlass_wsp.gpu.harness" in lazy


def test_no_cycle_among_module_level_imports():
    cycle = _cycle({m: top for m, (top, _) in GRAPH.items()})
    assert cycle is None, "module-level import cycle: " + " -> ".join(cycle)


def test_no_cycle_even_counting_lazy_imports():
    cycle = _cycle({m: top | lazy for m, (top, lazy) in GRAPH.items()})
    assert cycle is None, "import cycle (lazy imports included): " + " -> ".join(cycle)


def test_kernels_import_nothing_from_families():
    bad = sorted(f"{m} -> {t}" for m, (top, lazy) in GRAPH.items() if m.startswith("cutlass_wsp.kernels")
                 for t in top | lazy if t.startswith("cutlass_wsp.families"))
    assert not bad, "kernels/ imports families/: " + ", ".join(bad)


@pytest.mark.parametrize("edges, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"a"}}, ["a", "a"]),
])
def test_the_cycle_finder_finds_cycles(edges, cycle):
    assert _cycle(edges) == cycle


def test_the_walk_counts_lazy_and_skips_type_checking(tmp_path, monkeypatch):
    src = tmp_path / "cutlass_wsp" / "fake.py"
    src.parent.mkdir()
    src.write_text("from typing import TYPE_CHECKING\n"
                   "from cutlass_wsp.kernels import cache\n"
                   "if TYPE_CHECKING:\n    from cutlass_wsp.families import base\n"
                   "def f():\n    from cutlass_wsp.families.registry import serving\n")
    monkeypatch.setitem(MODULES, "cutlass_wsp.fake", src)
    top, lazy = imports_of("cutlass_wsp.fake")
    assert top == {"cutlass_wsp.kernels.cache"}
    assert lazy == {"cutlass_wsp.families.registry"}
