"""The one verify-then-time path (modelled on Triton's `do_bench`): nothing is timed before it is right.

    measured = bench(launch, outputs=Y, result=lambda: Y[..., :T], reference=ref_fn,
                     check=Check("fp16", "my kernel", K=K), budget_s=0.25)

The caller supplies only what is specific to it: the launch-only callable, the output buffer(s) to
poison, how to read the result, and the reference. The harness owns the rest, in this order:
  1. poison every output (NaN: an element the launch does not write fails the check),
  2. run the launch once and synchronize,
  3. compare the result with the reference (`gpu.verify.check`: relative Frobenius error against the
     dtype's tolerance; raises VerificationError),
  4. only then time the launch (`gpu.timing.time_gpu`: warm-up, L2 flush or rotation, CUDA events,
     median and quartiles) and return the Timing with the relative error.
The sweep (`sweep/measure.py`, whole layers in `sweep/layer_time.py`, cuDNN), the tuner's candidate
measurements (`families/base.py::CandidateMeasure`) and the bench scripts call it; no other module
poisons, checks and times on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from cutlass_wsp.dtypes import DType


@dataclass(frozen=True)
class Check:
    """How a result is compared with its reference (arguments of `gpu.verify.check`)."""

    dt: DType | str
    what: str
    shape: Any = None             # shown in the error message (default: the result's shape)
    K: int | None = None          # reduction length: the tolerance grows past K = 1024
    rtol: float | None = None     # overrides the dtype's tolerance (e.g. a whole Winograd layer)


@dataclass(frozen=True)
class TimingOptions:
    """What `time_gpu` gets after the check (the sweep's defaults: `cutlass-wsp sweep --budget-ms`)."""

    budget_s: float = 0.25
    min_reps: int = 10
    max_reps: int = 200
    warmup: int = 3
    use_graph: bool = False
    flush_l2: bool = True
    extra: dict = field(default_factory=dict)    # any other time_gpu option (flush_mode, rotate, ...)

    def kwargs(self, *, graph: bool | None = None, budget_s: float | None = None) -> dict:
        """time_gpu keyword arguments; `graph` overrides use_graph (False for launches that cannot be
        captured), `budget_s` the budget."""
        kw = dict(warmup=self.warmup, min_reps=self.min_reps, max_reps=self.max_reps,
                  budget_s=self.budget_s if budget_s is None else budget_s, flush_l2=self.flush_l2,
                  use_graph=self.use_graph if graph is None else graph)
        kw.update(self.extra)
        return kw


@dataclass(frozen=True)
class Measured:
    timing: Any                   # gpu.timing.Timing
    rel_error: float


def _as_list(outputs: Any) -> Sequence[Any]:
    if outputs is None:
        return ()
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def _synchronize(arrays: Sequence[Any]) -> None:
    """Wait for the launch when its outputs live on the GPU (host arrays: the CPU tests' fakes)."""
    from cutlass_wsp.gpu.arrays import array_module

    for a in arrays:
        xp = array_module(a)
        if xp.__name__ == "cupy":
            xp.cuda.get_current_stream().synchronize()
            return


def verify(launch: Callable[[], Any], *, outputs: Any, result: Callable[[], Any] | None,
           reference: Any, check: "Check | Sequence[Check]") -> float:
    """Steps 1-3: poison `outputs`, run `launch` once, synchronize, compare `result()` (default: the one
    output) with `reference` (an array or a no-argument callable, evaluated after the run). A result
    in parts (a list, e.g. one per group of a grouped GEMM) is compared part by part with a reference
    list of the same length, each part with its own Check (or one for all); the largest error counts.
    Returns the relative error; raises VerificationError."""
    from cutlass_wsp.gpu import arrays
    from cutlass_wsp.gpu.verify import check as check_result

    outs = _as_list(outputs)
    dt = (check if isinstance(check, Check) else check[0]).dt
    for o in outs:
        arrays.poison(o, dt)
    launch()
    _synchronize(outs)
    if result is None:
        if len(outs) != 1:
            raise ValueError("verify: give result= when there is not exactly one output")
        got = outs[0]
    else:
        got = result()
    ref = reference() if callable(reference) else reference
    if not isinstance(got, (list, tuple)):
        c = check if isinstance(check, Check) else check[0]
        return check_result(got, ref, c.dt, c.what, shape=c.shape, K=c.K, rtol=c.rtol)
    checks = [check] * len(got) if isinstance(check, Check) else list(check)
    if not (len(got) == len(ref) == len(checks)):
        raise ValueError(f"verify: {len(got)} result parts, {len(ref)} reference parts, {len(checks)} checks")
    return max(check_result(g, r, c.dt, c.what, shape=c.shape, K=c.K, rtol=c.rtol)
               for g, r, c in zip(got, ref, checks))


def time_launch(launch: Callable[..., Any], **timing: Any):
    """Step 4 alone, for a launch verified already (e.g. re-timed in another L2 state): time_gpu."""
    from cutlass_wsp.gpu.timing import time_gpu

    return time_gpu(launch, **timing)


def bench(launch: Callable[[], Any], *, outputs: Any, reference: Any, check: "Check | Sequence[Check]",
          result: Callable[[], Any] | None = None, **timing: Any) -> Measured:
    """Verify (steps 1-3), then time (step 4) with `time_gpu(launch, **timing)`."""
    err = verify(launch, outputs=outputs, result=result, reference=reference, check=check)
    return Measured(time_launch(launch, **timing), err)
