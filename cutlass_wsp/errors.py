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
