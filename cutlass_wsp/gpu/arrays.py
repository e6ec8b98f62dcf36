"""Device arrays in the toolkit's dtypes: storage types, host <-> device, poison, random inputs, padding.

bf16 is stored as raw uint16 bits on every CuPy version. CuPy 14 knows a bfloat16 dtype only when
the optional ml_dtypes package is installed and CuPy 13 never does, so one representation keeps the
kernels, the baselines and the references agreeing everywhere. Conversions round to nearest even.

Every conversion helper takes numpy or CuPy arrays and returns the same kind (`get_array_module`),
so the CPU tests exercise the same code the GPU runs. CuPy is imported inside the functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cutlass_wsp.dtypes import DType, get_dtype
from cutlass_wsp.problem import round_up

BF16_NAN_BITS = 0x7FC0  # quiet NaN in bf16


def as_dtype(dt: DType | str) -> DType:
    """Accept a DType or its name ('fp16', 'bf16', 'tf32', 'fp32')."""
    return dt if isinstance(dt, DType) else get_dtype(dt)


def storage_dtype(dt: DType | str) -> np.dtype:
    """Element type of device buffers: float16, uint16 (bf16 bits) or float32 (tf32, fp32)."""
    d = as_dtype(dt)
    return np.dtype({"float16": np.float16, "bfloat16": np.uint16, "float32": np.float32}[d.storage])


def is_bf16_bits(dt: DType | str) -> bool:
    return as_dtype(dt).storage == "bfloat16"


def array_module(a: Any):
    """numpy for numpy arrays, cupy for cupy arrays (cupy imported only if installed)."""
    try:
        import cupy
    except ImportError:
        return np
    return cupy.get_array_module(a)


def float32_to_bf16_bits(a):
    """float32 (numpy or cupy) -> uint16 bf16 bits, round to nearest even; NaN stays NaN."""
    xp = array_module(a)
    f = xp.ascontiguousarray(a, dtype=xp.float32)
    bits = f.view(xp.uint32)
    # Add 0x7FFF plus the lowest kept bit: ties go to the even neighbour. Overflow rounds to inf.
    rounded = (bits + (xp.uint32(0x7FFF) + ((bits >> xp.uint32(16)) & xp.uint32(1)))) >> xp.uint32(16)
    out = rounded.astype(xp.uint16)
    return xp.where(xp.isnan(f), xp.uint16(BF16_NAN_BITS), out)


def bf16_bits_to_float32(bits):
    """uint16 bf16 bits (numpy or cupy) -> float32, exact."""
    xp = array_module(bits)
    return (xp.ascontiguousarray(bits, dtype=xp.uint16).astype(xp.uint32) << xp.uint32(16)).view(xp.float32)


def to_storage(a, dt: DType | str):
    """Real values (numpy or cupy, any float type) -> storage array of `dt` in the same module."""
    xp = array_module(a)
    if is_bf16_bits(dt):
        return float32_to_bf16_bits(a)
    return xp.ascontiguousarray(a, dtype=storage_dtype(dt))


def to_float32(a, dt: DType | str):
    """Storage array of `dt` -> float32 values in the same module (no copy for fp32/tf32 float32 input)."""
    xp = array_module(a)
    if is_bf16_bits(dt):
        return bf16_bits_to_float32(a)
    return a if a.dtype == xp.float32 else a.astype(xp.float32)


def to_host_float32(a, dt: DType | str) -> np.ndarray:
    """Storage array (cupy or numpy) -> numpy float32."""
    f = to_float32(a, dt)
    if array_module(f) is np:
        return np.asarray(f)
    import cupy

    return cupy.asnumpy(f)


def from_host(a: np.ndarray, dt: DType | str):
    """numpy values -> contiguous cupy storage array of `dt` (rounded on the host, then copied once)."""
    import cupy

    return cupy.asarray(to_storage(np.asarray(a), dt))


def empty(shape, dt: DType | str):
    import cupy

    return cupy.empty(shape, dtype=storage_dtype(dt))


def zeros(shape, dt: DType | str):
    import cupy

    return cupy.zeros(shape, dtype=storage_dtype(dt))


def poison(a, dt: DType | str | None = None):
    """Fill every element with NaN so an element a kernel never wrote is caught by verification.
    Works in place on numpy or cupy arrays; returns `a`."""
    if dt is not None and np.dtype(a.dtype) != storage_dtype(dt):
        raise TypeError(f"poison: array dtype {a.dtype} is not the storage of {as_dtype(dt).name}")
    if a.dtype == np.uint16:
        a.fill(BF16_NAN_BITS)
    elif np.dtype(a.dtype).kind == "f":
        a.fill(np.nan)
    else:
        raise TypeError(f"poison: {a.dtype} has no NaN; expected a float or bf16-bits array")
    return a


def fresh_seed() -> int:
    """A seed from OS entropy, so inputs differ between calls unless a seed is given."""
    return int(np.random.default_rng().integers(2**63 - 1))


def random(shape, dt: DType | str, *, seed: int | None = None, rng=None, scale: float = 1.0):
    """Normal(0, scale) values in storage of `dt`, generated on the GPU. A new seed per call unless
    `seed` or a `cupy.random.Generator` (`rng`) is given."""
    import cupy

    if rng is None:
        rng = cupy.random.default_rng(fresh_seed() if seed is None else seed)
    values = rng.standard_normal(tuple(shape), dtype=cupy.float32)
    if scale != 1.0:
        values *= cupy.float32(scale)
    return to_storage(values, dt)


# --- EC2B padding: X[L, K, Npad], Y[L, M, Npad]; Npad is T rounded up to 16 bytes -------------------

def npad(T: int, dt: DType | str) -> int:
    """Padded column count, as BatchProblem.npad."""
    return round_up(T, as_dtype(dt).alignment)


def pad_columns(a, dt: DType | str, Npad: int | None = None):
    """[..., T] values or storage (numpy or cupy) -> cupy storage [..., Npad] with zero pad columns."""
    import cupy

    T = a.shape[-1]
    Npad = npad(T, dt) if Npad is None else Npad
    if Npad < T:
        raise ValueError(f"pad_columns: Npad {Npad} < T {T}")
    # An array already in storage type is taken as storage (bf16: uint16 bits); anything else as values.
    if a.dtype == storage_dtype(dt):
        src = cupy.asarray(a)
    else:
        src = from_host(a, dt) if array_module(a) is np else to_storage(a, dt)
    out = zeros(a.shape[:-1] + (Npad,), dt)
    out[..., :T] = src
    return out


def padded_x(L: int, K: int, T: int, dt: DType | str, *, seed: int | None = None, rng=None):
    """Random EC2B input X[L, K, Npad] (cupy storage), columns T..Npad-1 zero."""
    x = zeros((L, K, npad(T, dt)), dt)
    x[..., :T] = random((L, K, T), dt, seed=seed, rng=rng)
    return x


def unpad(a, T: int):
    """View of the first T columns of a padded [..., Npad] array."""
    return a[..., :T]
