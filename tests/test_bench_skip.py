"""The GPU regression benchmarks (bench/) on a machine without a GPU: every benchmark is skipped with the
GPU reason, none errors; and the plumbing that puts GPU times into pytest-benchmark, run for real with
a fake timing (no GPU needed)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cutlass_wsp.gpu.device import gpu_status

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
BENCHMARKS = {"test_dense_cutlass", "test_dense_cublas", "test_wsp_r_balanced_cutlass",
              "test_wsp_c_balanced[two_pass]", "test_wsp_c_balanced[fused]", "test_wwp_cusparse"}


def _pytest(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def _bench_module():
    spec = importlib.util.spec_from_file_location("gpu_bench_under_test", BENCH / "gpu_bench.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_benchmark_skips_with_the_gpu_reason(tmp_path):
    ok, why = gpu_status()
    if ok:
        pytest.skip(f"a GPU is present ({why}): the benchmarks run instead of skipping")
    report = tmp_path / "bench.xml"
    res = _pytest(["bench", "-q", f"--junitxml={report}"], ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    cases = ET.parse(report).getroot().iter("testcase")
    outcomes = {}
    for case in cases:
        children = [c for c in case if c.tag in ("skipped", "failure", "error")]
        assert len(children) == 1, ET.tostring(case, encoding="unicode")
        outcomes[case.get("name")] = (children[0].tag, children[0].get("message", ""))
    assert set(outcomes) == BENCHMARKS
    for name, (tag, message) in outcomes.items():
        assert tag == "skipped", (name, tag, message)
        assert message == f"GPU benchmark: {why}", (name, message)


def test_default_pytest_run_does_not_collect_bench():
    # other modules' collection errors are not this test's business: list what is collected anyway
    res = _pytest(["--collect-only", "-q", "--continue-on-collection-errors"], ROOT)
    assert "tests/test_bench_skip.py::" in res.stdout, res.stdout[-2000:] + res.stderr[-2000:]
    assert "bench/" not in res.stdout


CONFTEST = '''
import sys
sys.path.insert(0, {bench!r})
import pytest
from gpu_bench import use_gpu_clock

def pytest_collection_modifyitems(config, items):
    for item in items:
        use_gpu_clock(item)
'''

TEST = '''
import pytest
from types import SimpleNamespace
from gpu_bench import record

pytestmark = pytest.mark.benchmark(group="layer-x")
SAMPLES = {samples!r}

def test_fed(benchmark):
    timing = SimpleNamespace(samples_ms=SAMPLES, method="events+l2flush+gate", reps=len(SAMPLES),
                             median_ms=sorted(SAMPLES)[len(SAMPLES) // 2], q1_ms=None, q3_ms=None,
                             min_ms=min(SAMPLES), host_enqueue_ms=0.01, launch_gap_risk=False)
    record(benchmark, timing, {{"key": "k"}})

def test_cpu_clock_is_refused(benchmark):
    benchmark._timer = __import__("time").perf_counter
    timing = SimpleNamespace(samples_ms=[1.0])
    with pytest.raises(RuntimeError, match="not gpu_event_clock"):
        record(benchmark, timing)
'''


def test_recorded_stats_are_the_gpu_samples(tmp_path):
    """A real pytest-benchmark session: the saved stats are the GPU samples (ms -> s), not host time."""
    samples = [0.104, 0.101, 0.099, 0.250, 0.100, 0.102, 0.098]   # one slow outlier, as events see them
    (tmp_path / "conftest.py").write_text(CONFTEST.format(bench=str(BENCH)))
    (tmp_path / "test_fed.py").write_text(TEST.format(samples=samples))
    out = tmp_path / "bench.json"
    res = _pytest(["-q", f"--benchmark-json={out}", "--rootdir", str(tmp_path)], tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    doc = json.loads(out.read_text())
    (bench,) = [b for b in doc["benchmarks"] if b["name"] == "test_fed"]
    stats = bench["stats"]
    s = sorted(x / 1e3 for x in samples)
    assert stats["rounds"] == len(samples) and stats["iterations"] == 1
    assert stats["min"] == pytest.approx(s[0]) and stats["max"] == pytest.approx(s[-1])
    assert stats["median"] == pytest.approx(s[len(s) // 2])
    assert stats["mean"] == pytest.approx(sum(s) / len(s))
    assert bench["group"] == "layer-x"                         # the test's own marker is kept
    assert bench["options"]["timer"].endswith("gpu_event_clock")
    assert bench["extra_info"]["key"] == "k" and bench["extra_info"]["method"] == "events+l2flush+gate"


def test_machine_info_names_the_gpu_and_versions():
    mod = _bench_module()
    info = mod.machine_info()
    assert set(info) == set(mod.MACHINE_FIELDS)
    ok, why = gpu_status()
    if ok:
        assert info["name"] and info["driver"] and info["gpu_error"] is None
    else:
        assert info["name"] is None and info["gpu_error"] == why
    import cutlass_wsp

    assert info["cutlass_wsp"] == cutlass_wsp.__version__
    assert "sm_clock_mhz" not in info       # clocks change between runs: kept out of machine_info


def test_replay_rounds_moves_the_clock_by_each_sample():
    mod = _bench_module()
    rounds, step = mod.replay_rounds([2.0, 0.5])
    t0 = mod.gpu_event_clock()
    step()
    t1 = mod.gpu_event_clock()
    step()
    assert rounds == 2 and t1 - t0 == pytest.approx(2e-3) and mod.gpu_event_clock() - t1 == pytest.approx(5e-4)
    with pytest.raises(ValueError, match="no GPU samples"):
        mod.replay_rounds([])
