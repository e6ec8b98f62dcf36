"""One status vocabulary and one classifier of exceptions, for result rows, tuning trials and tune files.

    ok             verified, then timed
    wrong          ran, but the output failed the check against the reference (VerificationError)
    unsupported    refused before running: this shape, dtype or arch is not served, or the ratio keeps nothing of
                   this layer (Unsupported, UnreachableRatio)
    compile_error  the kernel did not compile (CompileError)
    oom            out of device memory
    error          anything else (a failed load or launch, a CUDA error, a bug): the reason says which

Results files (`sweep/results.py`) have used exactly these since schema version 1. The tuner used to
have its own (`load_error`, `run_error`): a kernel that fails to load is `error` with a reason that
starts "load:", a launch refused by the kernel or the arguments is `unsupported` / `error` as below.
"""

from __future__ import annotations

STATUSES = ("ok", "wrong", "unsupported", "error", "oom", "compile_error")
FINAL_STATUSES = ("ok", "wrong", "unsupported", "compile_error")   # a sweep never measures these again
RETRYABLE_STATUSES = ("error", "oom")                              # measured again with --retry-failed


def reason_of(exc: BaseException, limit: int = 500) -> str:
    """One line: a WspError's own text, else 'TypeName: message'."""
    from cutlass_wsp.errors import WspError

    reason = f"{exc}" if isinstance(exc, WspError) else f"{type(exc).__name__}: {exc}"
    return " ".join(reason.split())[:limit]


def classify(exc: BaseException) -> tuple[str, str]:
    """(status, one-line reason) for an exception raised while preparing, checking or timing a launch."""
    from cutlass_wsp.errors import CompileError, Unsupported, VerificationError

    reason = reason_of(exc)
    if isinstance(exc, VerificationError):
        return "wrong", reason
    if isinstance(exc, CompileError):
        return "compile_error", reason
    if isinstance(exc, Unsupported):
        return "unsupported", reason
    if type(exc).__name__ == "OutOfMemoryError" or "out of memory" in reason.lower():
        return "oom", reason
    return "error", reason
