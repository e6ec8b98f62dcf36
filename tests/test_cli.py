"""The command line's shared behaviour: a closed pipe, warnings, option values that start with '-'."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cutlass_wsp.cli import main

SAMPLE = Path(__file__).parent / "data" / "results_sample.jsonl"
ENV = {**os.environ, "PYTHONWARNINGS": ""}


def cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "cutlass_wsp", *argv]


# ------------------------------------------------------------------------------------ closed pipe
PIPED = [("layers", "resnet34"), ("compare", str(SAMPLE), str(SAMPLE)),
         ("sweep", "--dry-run", "--out", "{tmp}/none.jsonl")]


@pytest.mark.parametrize("argv", PIPED, ids=lambda a: a[0])
def test_a_reader_that_is_gone_ends_the_command_quietly(argv, tmp_path):
    """The reader of stdout closed its end before the command wrote (what `| head -1` does once it has
    its line): no BrokenPipeError traceback, the conventional SIGPIPE status 141."""
    argv = [a.format(tmp=tmp_path) for a in argv]
    r, w = os.pipe()
    os.close(r)                                  # nobody will ever read
    try:
        proc = subprocess.run(cli(*argv), stdout=w, stderr=subprocess.PIPE, text=True, env=ENV, cwd=tmp_path,
                              timeout=120)
    finally:
        os.close(w)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr
    assert "Exception ignored" not in proc.stderr


@pytest.mark.parametrize("argv,lines", [(PIPED[0], 4), (PIPED[1], 1), (PIPED[2], 1)], ids=lambda a: str(a))
def test_piped_into_head(argv, lines, tmp_path):
    argv = [a.format(tmp=tmp_path) for a in argv]
    cmd = " ".join(f"'{a}'" for a in cli(*argv)) + f" 2>{tmp_path}/err | head -{lines}"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, env=ENV,
                          cwd=tmp_path, timeout=120)
    err = (tmp_path / "err").read_text()
    assert len(proc.stdout.splitlines()) == lines
    assert proc.returncode in (0, 141) and "Traceback" not in err and "Exception ignored" not in err, err


# --------------------------------------------------------------------------------------- warnings
@pytest.mark.parametrize("command", ["plan", "compare", "plot"])
def test_a_warning_prints_as_one_clean_line(command, tmp_path):
    path = tmp_path / "cut.jsonl"
    text = SAMPLE.read_text()
    path.write_text(text + text.splitlines()[1][:40])          # a sweep killed mid-row
    argv = {"plan": [str(path)], "compare": [str(SAMPLE), str(path)],
            "plot": [str(path), "--out", str(tmp_path / "plots"), "--format", "png"]}[command]
    proc = subprocess.run(cli(command, *argv), capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines == [f"cutlass-wsp {command}: warning: {path}: the last line is cut off (a sweep stopped "
                     "mid-write); it is ignored"]            # a reader promises no removal it will not do
    assert path.read_text().endswith(text.splitlines()[1][:40])


# --------------------------------------------------------------------------- results files as input
@pytest.mark.parametrize("command", ["plan", "compare", "plot"])
def test_a_binary_results_file_is_one_line(command, tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    path.write_bytes(bytes(range(256)) * 4)
    argv = {"plan": [str(path)], "compare": [str(SAMPLE), str(path)],
            "plot": [str(path), "--out", str(tmp_path / "plots")]}[command]
    assert main([command, *argv]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"cutlass-wsp {command}: error: {path} is not a cutlass-wsp results file (it holds "
                                "binary data, not JSON lines) (pass a .jsonl file written by cutlass-wsp sweep)"]


def test_the_not_a_results_file_hint_fits_the_command(tmp_path, capsys):
    other = tmp_path / "other.jsonl"
    other.write_text('{"hello": 1}\n')
    for argv in (["plan", str(other)], ["compare", str(other), str(SAMPLE)], ["plot", str(other)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "not a cutlass-wsp results file" in err and "--out" not in err, err
    assert main(["sweep", "--dry-run", "--net", "resnet18:0", "--pattern", "dense", "--out", str(other)]) == 2
    assert "(give --out a new file, or one written by cutlass-wsp sweep)" in capsys.readouterr().err


# ---------------------------------------------------------------------------- values with a minus
def test_negative_threshold_is_refused_in_one_line_not_by_argparse(capsys):
    assert main(["compare", str(SAMPLE), str(SAMPLE), "--threshold", "-5%"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "usage:" not in err
    assert "--threshold '-5%' is negative" in err and "5% or 0.05" in err


@pytest.mark.parametrize("argv", [["plot", str(SAMPLE), "--ratio", "-70%"], ["plan", str(SAMPLE), "--ratio", "-.5"],
                                  ["sweep", "--dry-run", "--ratio", "-0.5,0.7"]])
def test_a_value_that_starts_with_a_minus_reaches_its_parser(argv, capsys, tmp_path):
    argv = argv + (["--out", str(tmp_path)] if argv[0] == "plot" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "outside 0 < ratio < 1" in err


def test_threshold_help_says_what_a_threshold_may_be(capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "0 or more" in out


def test_an_os_error_is_one_line_not_a_traceback(monkeypatch, capsys):
    from cutlass_wsp.sweep import results

    def denied(self, *a, **kw):
        raise PermissionError(13, "Permission denied", str(self.path))

    monkeypatch.setattr(results.ResultStore, "load", denied)
    assert main(["plan", str(SAMPLE)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"cutlass-wsp plan: error: Permission denied: {SAMPLE} "
                           "(check the path and its permissions)")


# ------------------------------------------------------------------------------------------- help
def _subparsers():
    import argparse

    from cutlass_wsp.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


@pytest.mark.parametrize("command", ["layers", "env", "cache", "bench", "sweep", "plot", "compare", "plan"])
def test_every_option_has_help(command):
    parser = _subparsers()[command]
    bare = [a.option_strings or a.dest for a in parser._actions if not (a.help or "").strip()]
    assert bare == []


def test_bench_help_names_the_choices(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in ("--batch", "--dtype", "fp16, bf16, tf32, fp32", "--pattern", "wsp-r", "--ratio", "0.7 or 70%",
                 "--balance", "spread:S", "--budget-ms"):
        assert text in out


# ------------------------------------------------------------------------------------ a lost CUDA context
_LOST = """
import atexit, sys
import cutlass_wsp.cli as cli
from cutlass_wsp.errors import InputError
from cutlass_wsp.sweep.runner import ContextLost

kind = sys.argv[1]

def run(args):
    if kind == "sticky":
        raise ContextLost("the CUDA context was lost on vgg16/c256: CUDARuntimeError: cudaErrorLaunchFailure: "
                          "unspecified launch failure", "run the same command again: the sweep resumes after this point")
    raise InputError("unknown network 'x'", "use one of vgg16")

atexit.register(lambda: print("TEARDOWN", file=sys.stderr))   # stands for CuPy's finalizers on a dead context
import cutlass_wsp.commands.sweep as sweep
sweep.run = run                                                 # read when the parser is built
sys.argv[1:] = ["sweep"]
cli.entry()
"""


@pytest.mark.parametrize("kind", ["sticky", "plain"])
def test_a_lost_cuda_context_ends_without_the_interpreters_teardown(kind, tmp_path):
    """After a sticky CUDA error (the sweep's ContextLost) the command prints its one line and ends with its status
    before the interpreter's teardown, where CuPy's finalizers fail on the dead context and print tracebacks
    (results/cuda-teardown-probe-h100.log); any other error keeps the normal exit, atexit handlers included."""
    proc = subprocess.run([sys.executable, "-c", _LOST, kind], capture_output=True, text=True, env=ENV, timeout=120)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2
    if kind == "sticky":
        assert len(err) == 1 and err[0].startswith("cutlass-wsp sweep: error: the CUDA context was lost on")
        assert "TEARDOWN" not in proc.stderr
    else:
        assert err == ["cutlass-wsp sweep: error: unknown network 'x' (use one of vgg16)", "TEARDOWN"]


def test_sticky_cuda_errors_are_told_apart():
    from cutlass_wsp.errors import is_sticky

    assert is_sticky("CUDARuntimeError: cudaErrorLaunchFailure: unspecified launch failure")
    assert is_sticky("CUDADriverError: CUDA_ERROR_LAUNCH_FAILED: unspecified launch failure")
    assert is_sticky("cudaErrorIllegalAddress: an illegal memory access was encountered")
    assert not is_sticky("cudaErrorMemoryAllocation: out of memory") and not is_sticky("unknown network 'x'")
