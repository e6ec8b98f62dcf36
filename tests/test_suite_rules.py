"""Rules the test suite keeps: a test asserts something. Numbers printed for a person to read belong in
a bench/ script, not in a test that passes whatever it measured."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).parent


def _prints_and_asserts_nothing(fn: ast.FunctionDef) -> bool:
    nodes = list(ast.walk(fn))
    prints = any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print" for n in nodes)
    asserts = any(isinstance(n, ast.Assert) for n in nodes)
    expects = any(isinstance(n, ast.Attribute) and n.attr in ("raises", "warns", "fail") for n in nodes)
    return prints and not asserts and not expects


def test_no_test_only_prints():
    offenders = []
    for path in sorted(TESTS.rglob("test_*.py")):
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, ast.FunctionDef) and fn.name.startswith("test") and _prints_and_asserts_nothing(fn):
                offenders.append(f"{path.relative_to(TESTS)}:{fn.lineno} {fn.name}")
    assert offenders == [], "these tests print and assert nothing: assert something or move them to bench/"


def test_the_smoke_timings_script_loads_and_needs_a_gpu(capsys):
    from bench_scripts import load_bench_script

    from cutlass_wsp.gpu.device import gpu_status

    smoke = load_bench_script("smoke_times")
    assert callable(smoke.cudnn_lines) and callable(smoke.transform_lines)
    if gpu_status()[0]:
        pytest.skip("a GPU is here: `python bench/smoke_times.py` would time for real")
    assert smoke.main() == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("smoke_times: ")
