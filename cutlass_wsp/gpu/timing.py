"""Time a GPU launch with CUDA events: warm-up, repetitions until a budget, median and IQR.

Each repetition is one `fn` launch (or one replay of a captured CUDA graph of `graph_batch` launches)
between two CUDA events. Between repetitions, outside the timed region, either L2 is flushed (a buffer
of twice its size is read, so the timed launch starts with a cold and clean L2: "clean"; or written,
so it also pays to write back the flush's dirty lines: "dirty"), or the inputs rotate through
caller-supplied argument sets.
A short spin kernel (the "gate") holds the GPU before the start event while the host enqueues the
launch, so the time is the GPU's, not Python's launch overhead; a repetition whose enqueue outlasted
the gate is flagged (`launch_gap_risk`). See docs/measurement.md.

The loop talks to the GPU only through a small backend object, so the CPU tests drive it with a
fake clock and fake events; `CudaBackend` is the real one (cupy imported inside).
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from cutlass_wsp.errors import InputError


@dataclass(frozen=True)
class Timing:
    """Per-launch times of one measurement, in milliseconds."""

    median_ms: float
    q1_ms: float
    q3_ms: float
    iqr_ms: float
    min_ms: float
    mean_ms: float
    reps: int
    samples_ms: list[float] = field(repr=False)
    method: str = ""
    host_enqueue_ms: float | None = None   # median host time to enqueue one timed repetition
    launch_gap_risk: bool = False           # an enqueue outlasted the gate: a sample may hold launch gaps

    def to_dict(self, *, samples: bool = True) -> dict[str, Any]:
        d = asdict(self)
        if not samples:
            d.pop("samples_ms")
        return d


def summarize(samples_ms: Sequence[float], method: str = "", *, host_enqueue_ms: float | None = None,
              launch_gap_risk: bool = False) -> Timing:
    """Median, quartiles (numpy's linear interpolation), IQR, min and mean of per-launch times."""
    s = np.asarray(list(samples_ms), dtype=np.float64)
    if s.size == 0:
        raise ValueError("summarize: no samples")
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError(f"summarize: samples must be finite and >= 0, got {s.tolist()[:8]}")
    q1, med, q3 = np.percentile(s, [25, 50, 75])
    return Timing(median_ms=float(med), q1_ms=float(q1), q3_ms=float(q3), iqr_ms=float(q3 - q1),
                  min_ms=float(s.min()), mean_ms=float(s.mean()), reps=int(s.size),
                  samples_ms=[float(x) for x in s], method=method,
                  host_enqueue_ms=host_enqueue_ms, launch_gap_risk=launch_gap_risk)


# --- the real backend -------------------------------------------------------------------------------

_GATE_SRC = r"""
extern "C" __global__ void wsp_gate_spin(unsigned long long ns) {
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do {
        __nanosleep(256);
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    } while (t - t0 < ns);
}
"""
# Reads every 16-byte word of the flush buffer through L2 (ld.global.cg); the xor keeps the loads alive
# and the store is practically never taken, so the sweep leaves L2 holding clean lines only.
_SWEEP_SRC = r"""
extern "C" __global__ void wsp_l2_sweep(const uint4* __restrict__ p, unsigned long long n, unsigned int* sink) {
    unsigned int acc = 0;
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        const uint4 v = __ldcg(p + i);
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (acc == 0x9e3779b9u) sink[0] = acc;
}
"""
FLUSH_MODES = ("clean", "dirty")
FLUSH_MODE = "clean"           # what time_gpu's flush does unless told (docs/measurement.md, "Cold L2")
FLUSH_ENV = "CUTLASS_WSP_L2_FLUSH"   # overrides FLUSH_MODE for a whole run (A/B of the two states)
_flush_buffers: dict[int, "_FlushBuffer"] = {}


@dataclass(frozen=True)
class _FlushBuffer:
    """Per device, made once: 2x L2 of 16-byte words, the sweep's 4-byte sink and its grid."""

    words: Any
    sink: Any
    grid: int
    sweep: Any

    @property
    def n_words(self) -> int:
        return self.words.nbytes // 16

    @classmethod
    def allocate(cls, dev: int) -> "_FlushBuffer":
        import cupy as cp

        words = cp.zeros(-(-2 * l2_bytes(dev) // 16) * 16, dtype=cp.uint8)
        sms = int(cp.cuda.runtime.deviceGetAttribute(cp.cuda.runtime.cudaDevAttrMultiProcessorCount, dev))
        return cls(words, cp.zeros(1, dtype=cp.uint32), 4 * sms, cp.RawKernel(_SWEEP_SRC, "wsp_l2_sweep"))

_gate_kernel: list[Any] = []   # [RawKernel] once compiled; [None] if it could not be


def l2_bytes(device_id: int | None = None) -> int:
    import cupy

    rt = cupy.cuda.runtime
    dev = cupy.cuda.Device().id if device_id is None else device_id
    return int(rt.deviceGetAttribute(rt.cudaDevAttrL2CacheSize, dev))


def _gate():
    if not _gate_kernel:
        import cupy

        try:
            k = cupy.RawKernel(_GATE_SRC, "wsp_gate_spin")
            k.compile()
            _gate_kernel.append(k)
        except Exception as e:  # NVRTC missing or refused: time without the gate, and say so
            warnings.warn(f"timing gate kernel unavailable ({type(e).__name__}: {e}); "
                          "short launches may include host launch overhead")
            _gate_kernel.append(None)
    return _gate_kernel[0]


class CudaBackend:
    """Events, L2 flush, gate and graph capture on one stream (the current one, or a fresh
    non-blocking stream when capturing, since the legacy default stream cannot be captured)."""

    def __init__(self, *, for_graph: bool = False, stream=None):
        import cupy

        self._cp = cupy
        if stream is None:
            if for_graph:
                # A non-blocking stream does not wait for the caller's stream: let inputs finish first.
                cupy.cuda.get_current_stream().synchronize()
                stream = cupy.cuda.Stream(non_blocking=True)
            else:
                stream = cupy.cuda.get_current_stream()
        self.stream = stream
        self._start = cupy.cuda.Event()
        self._end = cupy.cuda.Event()
        self.has_gate = _gate() is not None

    def activate(self):
        """Context in which `fn` runs: makes our stream current, so cupy/cuBLAS/kernels launch on it."""
        return self.stream

    def flush_l2(self, rep: int, mode: str = "clean") -> None:
        cp = self._cp
        dev = cp.cuda.Device().id
        if dev not in _flush_buffers:
            _flush_buffers[dev] = _FlushBuffer.allocate(dev)
        fb = _flush_buffers[dev]
        if mode == "clean":
            # Reading evicts the timed buffers (their dirty lines are written back now, untimed) and
            # leaves only clean lines: the next launch pays for its own traffic and nothing else.
            with self.stream:
                fb.sweep((fb.grid,), (512,), (fb.words, np.uint64(fb.n_words), fb.sink))
            return
        # A different byte each time, so no write can be skipped as a no-op.
        cp.cuda.runtime.memsetAsync(fb.words.data.ptr, 1 + rep % 255, fb.words.nbytes, self.stream.ptr)

    def gate(self, us: float) -> None:
        k = _gate()
        if k is not None and us > 0:
            with self.stream:
                k((1,), (1,), (np.uint64(int(us * 1000)),))

    def mark_start(self) -> None:
        self._start.record(self.stream)

    def mark_end(self) -> None:
        self._end.record(self.stream)

    def elapsed_ms(self) -> float:
        self._end.synchronize()
        return float(self._cp.cuda.get_elapsed_time(self._start, self._end))

    def capture(self, body: Callable[[], None]) -> Callable[[], None]:
        """Capture `body` into a CUDA graph; return a function that replays it on our stream."""
        s = self.stream
        with s:
            s.begin_capture()
            try:
                body()
            except BaseException as e:
                with contextlib.suppress(Exception):
                    s.end_capture()
                if isinstance(e, NotImplementedError):   # e.g. CuPy's cuBLAS wrappers refuse capture
                    from cutlass_wsp.errors import Unsupported

                    raise Unsupported(f"this launch cannot be captured into a CUDA graph ({e})",
                                      "time it without --graph") from None
                raise
            graph = s.end_capture()
        graph.upload(s)
        return lambda: graph.launch(s)

    def synchronize(self) -> None:
        self.stream.synchronize()


# --- the loop ---------------------------------------------------------------------------------------

def run_reps(launch: Callable[[int], float], *, warmup: int, min_reps: int, max_reps: int,
             budget_s: float, clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Call `launch(i)` (returns one sample) `warmup` times, discarded, then until `budget_s` of wall
    time has passed and at least `min_reps` samples exist, never more than `max_reps`."""
    for i in range(warmup):
        launch(i)
    samples: list[float] = []
    t0 = clock()
    while len(samples) < max_reps:
        if len(samples) >= min_reps and clock() - t0 >= budget_s:
            break
        samples.append(launch(warmup + len(samples)))
    return samples


def _check_args(warmup, min_reps, max_reps, budget_s, graph_batch, rotate):
    if warmup < 0 or min_reps < 1 or max_reps < min_reps or budget_s < 0 or graph_batch < 1:
        raise InputError(
            f"bad timing settings warmup={warmup} min_reps={min_reps} max_reps={max_reps} "
            f"budget_s={budget_s} graph_batch={graph_batch}",
            "use warmup >= 0, 1 <= min_reps <= max_reps, budget_s >= 0, graph_batch >= 1")
    if rotate is not None and len(rotate) == 0:
        raise InputError("rotate is an empty list of argument sets", "pass at least one tuple of arguments, or None")


def time_gpu(fn: Callable[..., Any], *, warmup: int = 3, min_reps: int = 10, max_reps: int = 500,
             budget_s: float = 0.5, flush_l2: bool = True, rotate: Sequence[Sequence[Any]] | None = None,
             use_graph: bool = False, graph_batch: int = 20, gate: bool = True, flush_mode: str | None = None,
             backend=None, clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Median time of one `fn` launch on the GPU, with quartiles.

    fn: launches work on cupy's current stream and returns without synchronizing or allocating.
        Called as fn() or, with `rotate`, as fn(*rotate[i % len(rotate)]).
    flush_l2: sweep 2x the L2 size between repetitions (ignored when `rotate` is given: rotation over
        enough data to exceed L2 keeps inputs cold instead).
    flush_mode: "clean" reads the flush buffer (L2 left cold and clean), "dirty" writes it (the launch
        also writes back up to an L2 of someone else's dirty lines); None = $CUTLASS_WSP_L2_FLUSH, else
        the module's FLUSH_MODE.
    use_graph: capture `graph_batch` launches into a CUDA graph and time its replays (the sample is
        replay time / graph_batch): for launch-bound shapes. A flush then only precedes each replay,
        so only the first launch in it starts cold; rotation is captured into the graph.
    gate: hold the GPU with a spin kernel before the start event for twice the host enqueue time seen
        during warm-up, so Python launch overhead is not timed.
    """
    _check_args(warmup, min_reps, max_reps, budget_s, graph_batch, rotate)
    mode = flush_mode if flush_mode is not None else (os.environ.get(FLUSH_ENV) or FLUSH_MODE)
    if mode not in FLUSH_MODES:
        raise InputError(f"unknown L2 flush mode {mode!r}" + ("" if flush_mode else f" (from ${FLUSH_ENV})"),
                         f"use one of {', '.join(FLUSH_MODES)}")
    be = backend if backend is not None else CudaBackend(for_graph=use_graph)
    sets = [tuple(a) for a in rotate] if rotate is not None else [()]
    do_flush = flush_l2 and rotate is None

    def call(k: int) -> None:
        fn(*sets[k % len(sets)])

    with be.activate():
        # Eager warm-up in every mode: libraries initialise lazily, which graph capture does not allow.
        for k in range(max(warmup, 1)):
            call(k)
        be.synchronize()
        if use_graph:
            replay = be.capture(lambda: [call(k) for k in range(graph_batch)])
            launch_one: Callable[[int], None] = lambda i: replay()
            per_sample = graph_batch
        else:
            launch_one = call
            per_sample = 1

        gate_us = 0.0
        enqueue_ms: list[float] = []

        def rep(i: int) -> float:
            if do_flush:
                be.flush_l2(i, mode)
            if gate_us > 0:
                be.gate(gate_us)
            h0 = clock()
            be.mark_start()
            launch_one(i)
            be.mark_end()
            enqueue_ms.append((clock() - h0) * 1e3)
            return be.elapsed_ms() / per_sample

        if gate and getattr(be, "has_gate", True):
            # Two ungated repetitions measure the host enqueue time; the gate holds the GPU for
            # twice that plus 20 us (at most 10 ms), so the start event waits for the whole launch.
            rep(0)
            rep(1)
            gate_us = min(2e3 * max(enqueue_ms) + 20.0, 10_000.0)
            enqueue_ms.clear()
        samples = run_reps(rep, warmup=1 if use_graph else 0, min_reps=min_reps, max_reps=max_reps,
                           budget_s=budget_s, clock=clock)
        be.synchronize()

    # Drop enqueue times of warm-up calls inside run_reps (recorded before the first sample).
    enqueue_ms = enqueue_ms[len(enqueue_ms) - len(samples):]
    method = f"graph{graph_batch}" if use_graph else "events"
    method += ("+l2flush" if mode == "dirty" else "+l2clean") if do_flush else (f"+rotate{len(sets)}" if rotate is not None else "+warm")
    if gate_us > 0:
        method += "+gate"
    gap = gate_us > 0 and any(h > gate_us / 1e3 for h in enqueue_ms)
    host = float(np.median(enqueue_ms)) if enqueue_ms else None
    return summarize(samples, method, host_enqueue_ms=host, launch_gap_risk=gap)

