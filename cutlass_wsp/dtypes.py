"""The dtypes the toolkit speaks, by name. One table, so every module agrees on sizes and tolerances."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cutlass_wsp.errors import InputError


@dataclass(frozen=True)
class DType:
    name: str            # user-facing: fp16, bf16, tf32, fp32
    storage: str         # element type in memory (numpy/cupy name; bf16 has no numpy dtype: 'bfloat16')
    itemsize: int        # bytes per element in memory
    cutlass: str         # CUTLASS element type for A/B/D
    compute: str         # accumulator type
    rtol: float          # ||out - ref|| / ||ref|| a correct kernel stays under, vs a float64 reference

    @property
    def alignment(self) -> int:
        """Widest vector access in elements (16 bytes), what TMA and cp.async want."""
        return 16 // self.itemsize


DTYPES: dict[str, DType] = {
    "fp16": DType("fp16", "float16", 2, "cutlass::half_t", "float", 5e-3),
    "bf16": DType("bf16", "bfloat16", 2, "cutlass::bfloat16_t", "float", 2e-2),
    "tf32": DType("tf32", "float32", 4, "float", "float", 5e-3),
    "fp32": DType("fp32", "float32", 4, "float", "float", 1e-5),
}


def get_dtype(name: str) -> DType:
    try:
        return DTYPES[name]
    except KeyError:
        raise InputError(f"unknown dtype {name!r}", f"use one of {', '.join(DTYPES)}") from None


def numpy_storage(dt: DType):
    """numpy dtype used for host-side data of this dtype (bf16 is carried as float32 on the host)."""
    return np.float16 if dt.storage == "float16" else np.float32
