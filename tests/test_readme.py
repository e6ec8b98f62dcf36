"""What the README says about the test suite is what the test suite does."""

from __future__ import annotations

import importlib
import re
from collections import Counter
from pathlib import Path

TESTS = Path(__file__).parent
README = TESTS.parent / "README.md"

# Test modules that build real kernels with nvcc through the session's compile cache. Each lists the
# descriptions it compiles in DESCS (a dict or a list).
COMPILING = ("test_compile_kernels", "test_compile_families", "test_gather_b_linkage", "test_fused_family")
_USES_REAL_CACHE = re.compile(r"def \w+\([^)]*\b(kernel_cache|compile_cache_dir)\b")


def _compiled() -> dict[str, str]:
    """name -> arch of every CUTLASS kernel the CPU suite compiles (shared builds counted once)."""
    out = {}
    for name in COMPILING:
        descs = importlib.import_module(name).DESCS
        for desc in (descs.values() if isinstance(descs, dict) else descs):
            out[desc.name] = desc.arch
    return out


def test_the_counted_modules_are_every_module_that_compiles():
    users = {p.stem for p in TESTS.glob("test_*.py") if _USES_REAL_CACHE.search(p.read_text())}
    assert users == set(COMPILING)


def test_readme_states_how_many_cutlass_kernels_the_tests_compile():
    kernels = _compiled()
    per_arch = Counter(kernels.values())
    m = re.search(r"the tests compile (\d+) CUTLASS kernels with nvcc \((\d+) for sm80, (\d+) for sm90",
                  " ".join(README.read_text().split()))
    assert m, "README: say how many CUTLASS kernels the tests compile"
    assert (int(m[1]), int(m[2]), int(m[3])) == (len(kernels), per_arch["sm80"], per_arch["sm90"])
    assert set(per_arch) == {"sm80", "sm90"}
