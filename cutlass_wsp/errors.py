"""Errors a user can act on. Each names the problem and the fix; the CLI prints it as one line."""


class WspError(Exception):
    """Base: a problem the user can fix. `str(err)` is 'problem: fix' on one line."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} ({fix})" if fix else problem)


class InputError(WspError):
    """Bad user input: unknown layer/network, ratio out of range, malformed file, wrong shape."""


class Unsupported(WspError):
    """A valid request this build/GPU cannot serve: dtype, arch, shape, pattern."""


class UnreachableRatio(InputError, Unsupported):
    """A ratio in [0, 1) that this layer's shape cannot realise (it would keep no row, column or block of a W_i).
    To a caller it is bad input for this layer (InputError); to a sweep it is final, not a failure to retry: its
    row is `unsupported` (status.classify), so `--retry-failed` does not measure it again."""


class GpuUnavailable(WspError):
    """No CUDA GPU, driver or CuPy: GPU commands stop here with one line."""


class ToolchainError(WspError):
    """nvcc or the CUTLASS headers are missing."""


class CompileError(WspError):
    """nvcc failed. Carries the generated source path and the compiler log."""

    def __init__(self, problem: str, fix: str | None = None, *, source_path=None, log: str = ""):
        super().__init__(problem, fix)
        self.source_path = source_path
        self.log = log


class KernelError(WspError):
    """A kernel refused the problem (can_implement) or failed to launch."""


class VerificationError(WspError):
    """A kernel's output did not match the reference: it is reported wrong and never timed."""


class Busy(WspError):
    """Another process holds the lock of a file this command must write (cutlass_wsp/storage.py)."""

    def __init__(self, problem: str, fix: str | None = None, *, path=None, holder_pid: int | None = None):
        super().__init__(problem, fix)
        self.path = path
        self.holder_pid = holder_pid


# CUDA errors after which the process's context is unusable (a sticky error): every later launch fails too, and at
# exit CuPy's finalizers (module unloads, the memory pool) fail on it and print tracebacks ("Exception ignored in
# ... Module.__dealloc__", "Error in sys.excepthook"; results/cuda-teardown-probe-h100.log).
STICKY_CUDA_ERRORS = ("cudaErrorIllegalAddress", "cudaErrorLaunchFailure", "cudaErrorIllegalInstruction",
                      "cudaErrorMisalignedAddress", "cudaErrorHardwareStackError", "cudaErrorAssert",
                      "CUDA_ERROR_LAUNCH_FAILED", "CUDA_ERROR_ILLEGAL_ADDRESS", "illegal memory access",
                      "misaligned address", "unspecified launch failure")


def is_sticky(text: str) -> bool:
    """Whether an error's text names a sticky CUDA error."""
    return any(s in text for s in STICKY_CUDA_ERRORS)


def exit_now(status: int) -> None:
    """End the process with `status` once its streams are flushed, without the interpreter's teardown: after a sticky
    CUDA error that teardown only adds the finalizers' tracebacks to the one line already printed."""
    import os
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)
