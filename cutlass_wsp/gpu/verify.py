"""Is a kernel's output right? Relative Frobenius error in float64 against a reference, dtype tolerances,
poisoned outputs so unwritten elements fail. `gpu/harness.py` runs these checks before any timing.

Works on numpy or cupy arrays (cupy is imported only when a cupy array is seen), so the checks
themselves are tested on the CPU.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cutlass_wsp.dtypes import DType
from cutlass_wsp.errors import VerificationError
from cutlass_wsp.gpu.arrays import array_module, as_dtype, storage_dtype, to_float32


def tolerance(dt: DType | str, K: int | None = None) -> float:
    """Largest relative error a correct kernel shows for `dt`. Grows as sqrt(K / 1024) past K = 1024,
    since fp32 accumulation error grows with the reduction length (random-sign rounding)."""
    d = as_dtype(dt)
    grow = math.sqrt(K / 1024) if K is not None and K > 1024 else 1.0
    return d.rtol * grow


# Winograd in low precision loses accuracy as p grows (docs/winograd.md: fp16 F(6,3) 7e-3 against
# direct conv): a whole layer's check allows that much on top of the GEMM tolerance.
_P_FACTOR = {4: 1.0, 6: 2.0, 8: 8.0}


def layer_rtol(dt: DType | str, p: int, K: int) -> float:
    """Tolerance of a whole Winograd layer of tile p (or a conv checked against one) with reduction K."""
    return 2.0 * tolerance(dt, K) * _P_FACTOR[p]


def _values(a, dt: DType | str | None):
    """Float values of `a`: bf16 bits are decoded when `a` is in bf16 storage."""
    if dt is not None and np.dtype(a.dtype) == storage_dtype(dt) and as_dtype(dt).storage == "bfloat16":
        return to_float32(a, dt)
    return a


def _same_module(out, ref):
    """Both on the GPU if either is: the reference is moved, never the (large) output."""
    xo, xr = array_module(out), array_module(ref)
    if xo is xr:
        return out, ref, xo
    import cupy

    return cupy.asarray(out), cupy.asarray(ref), cupy


def count_nonfinite(a) -> int:
    xp = array_module(a)
    return int(xp.count_nonzero(~xp.isfinite(a)))


def relative_error(out, ref) -> float:
    """||out - ref||_F / ||ref||_F computed in float64, slice by slice along the first axis to bound
    memory. Any NaN or inf in `out` gives inf. A zero reference gives ||out||_F."""
    if tuple(out.shape) != tuple(ref.shape):
        raise ValueError(f"relative_error: shapes differ, out {tuple(out.shape)} vs ref {tuple(ref.shape)}")
    out, ref, xp = _same_module(out, ref)
    if count_nonfinite(out):
        return math.inf
    num = den = 0.0
    slices = range(out.shape[0]) if out.ndim >= 2 else [slice(None)]
    for i in slices:
        o = out[i].astype(xp.float64)
        r = ref[i].astype(xp.float64)
        num += float(xp.sum((o - r) ** 2))
        den += float(xp.sum(r * r))
    if den == 0.0:
        return math.sqrt(num)
    return math.sqrt(num / den)


def check(out, ref, dt: DType | str, what: str, *, shape: Any = None, K: int | None = None,
          rtol: float | None = None) -> float:
    """Raise VerificationError if `out` has unwritten (NaN) or non-finite elements or its relative
    error against `ref` exceeds the tolerance of `dt`. `out` may be in storage type (bf16 bits are
    decoded). Returns the relative error."""
    d = as_dtype(dt)
    vals = _values(out, d)
    shape_s = "x".join(map(str, shape)) if isinstance(shape, (tuple, list)) else (shape or "x".join(map(str, out.shape)))
    xp = array_module(vals)
    n_nan = int(xp.count_nonzero(xp.isnan(vals)))
    if n_nan:
        raise VerificationError(
            f"{what}: {n_nan} of {vals.size} output elements never written (NaN from poison) on shape {shape_s}",
            "the kernel skips part of the output for this shape; it is reported wrong and not timed")
    bad = count_nonfinite(vals)
    if bad:
        raise VerificationError(f"{what}: {bad} output elements are inf on shape {shape_s}",
                                "the kernel overflows or reads garbage for this shape; it is not timed")
    tol = tolerance(d, K) if rtol is None else rtol
    err = relative_error(vals, ref)
    if not err <= tol:
        raise VerificationError(
            f"{what}: relative error {err:.1e} > {tol:.0e} ({d.name} tolerance) on shape {shape_s}",
            "the kernel's output is wrong for this shape; it is reported wrong and not timed")
    return err
