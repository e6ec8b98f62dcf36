"""Measured ceilings of this GPU: device copy bandwidth and dense GEMM rate per dtype.

Roofline floors use these measured numbers, not the datasheet: a kernel is judged against what
this GPU, clocks and driver actually deliver. Measured once per process (per device and dtype).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cutlass_wsp.dtypes import DType
from cutlass_wsp.gpu.arrays import as_dtype
from cutlass_wsp.gpu.timing import Timing, time_gpu
from cutlass_wsp.problem import BatchProblem

COPY_BYTES = 1 << 30   # per buffer; far beyond L2, so the copy streams from and to HBM
GEMM_SIZE = 8192       # M = N = K of the dense GEMM rate

_copy_cache: dict[int, tuple[float, Timing]] = {}
_ceiling_cache: dict[tuple[int, str], "Ceilings"] = {}


@dataclass(frozen=True)
class Ceilings:
    copy_bw_Bps: float        # bytes read + written per second by a device-to-device copy
    gemm_flops: float         # FLOP/s of a GEMM_SIZE^3 cuBLAS GEMM in this dtype (fp32 accumulate)
    dtype: str
    copy_timing: Timing | None = field(default=None, repr=False)
    gemm_timing: Timing | None = field(default=None, repr=False)

    def floor_seconds(self, problem: BatchProblem, dt: DType | str | None = None) -> float:
        return problem.floor_seconds(as_dtype(dt or self.dtype), self.gemm_flops, self.copy_bw_Bps)

    def to_dict(self) -> dict[str, Any]:
        return {"copy_bw_Bps": self.copy_bw_Bps, "gemm_flops": self.gemm_flops, "dtype": self.dtype,
                "copy_median_ms": self.copy_timing.median_ms if self.copy_timing else None,
                "gemm_median_ms": self.gemm_timing.median_ms if self.gemm_timing else None,
                "gemm_size": GEMM_SIZE, "copy_bytes": COPY_BYTES}


def _device_id() -> int:
    import cupy

    return cupy.cuda.Device().id


def measure_copy_bandwidth(nbytes: int = COPY_BYTES) -> tuple[float, Timing]:
    """(bytes/s counting read + write, Timing) of cudaMemcpyAsync device-to-device of `nbytes`."""
    import cupy

    dev = _device_id()
    if nbytes == COPY_BYTES and dev in _copy_cache:
        return _copy_cache[dev]
    rt = cupy.cuda.runtime
    src = cupy.ones(nbytes, dtype=cupy.uint8)
    dst = cupy.zeros(nbytes, dtype=cupy.uint8)
    kind = getattr(rt, "memcpyDeviceToDevice", 3)

    def copy():
        rt.memcpyAsync(dst.data.ptr, src.data.ptr, nbytes, kind, cupy.cuda.get_current_stream().ptr)

    t = time_gpu(copy, warmup=2, min_reps=5, max_reps=30, budget_s=1.0, flush_l2=False, gate=False)
    result = (2 * nbytes / (t.median_ms * 1e-3), t)
    del src, dst
    if nbytes == COPY_BYTES:
        _copy_cache[dev] = result
    return result


def measure_gemm_rate(dt: DType | str, size: int = GEMM_SIZE) -> tuple[float, Timing]:
    """(FLOP/s, Timing) of one size^3 GEMM through the direct cuBLAS call for `dt`."""
    from cutlass_wsp.gpu import arrays
    from cutlass_wsp.gpu.baselines import CublasBatched

    d = as_dtype(dt)
    W = arrays.random((1, size, size), d, seed=1)
    X = arrays.random((1, size, size), d, seed=2)
    Y = arrays.empty((1, size, size), d)
    gemm = CublasBatched(d)
    t = time_gpu(lambda: gemm.run(W, X, Y), warmup=2, min_reps=5, max_reps=30, budget_s=1.0, flush_l2=False)
    del W, X, Y
    return 2.0 * size ** 3 / (t.median_ms * 1e-3), t


def measure_ceilings(dt: DType | str) -> Ceilings:
    """Copy bandwidth and `dt` GEMM rate of the current GPU; measured on first use, then cached."""
    d = as_dtype(dt)
    key = (_device_id(), d.name)
    if key not in _ceiling_cache:
        bw, tc = measure_copy_bandwidth()
        flops, tg = measure_gemm_rate(d)
        _ceiling_cache[key] = Ceilings(bw, flops, d.name, tc, tg)
    return _ceiling_cache[key]
