"""Storage types and conversions, on numpy (the same functions run on cupy arrays on the GPU)."""

from __future__ import annotations

import numpy as np
import pytest

from cutlass_wsp.dtypes import get_dtype
from cutlass_wsp.errors import InputError
from cutlass_wsp.gpu.arrays import (bf16_bits_to_float32, float32_to_bf16_bits, npad, storage_dtype,
                                    to_float32, to_storage)
from cutlass_wsp.problem import BatchProblem


def test_storage_dtypes():
    assert storage_dtype("fp16") == np.float16
    assert storage_dtype(get_dtype("bf16")) == np.uint16
    assert storage_dtype("tf32") == storage_dtype("fp32") == np.float32
    with pytest.raises(InputError):
        storage_dtype("fp8")


def _f32(bits: int) -> np.float32:
    return np.array([bits], np.uint32).view(np.float32)[0]


@pytest.mark.parametrize("f32_bits, bf16_bits", [
    (0x3F800000, 0x3F80),   # 1.0 exact
    (0x3F808000, 0x3F80),   # halfway, low kept bit 0: stays (ties to even)
    (0x3F818000, 0x3F82),   # halfway, low kept bit 1: rounds up to even
    (0x3F808001, 0x3F81),   # just above halfway: up
    (0x3F807FFF, 0x3F80),   # just below halfway: down
    (0xBF818000, 0xBF82),   # sign does not change the rule
    (0x7F7FFFFF, 0x7F80),   # largest float32 rounds to +inf in bf16
    (0x7F800000, 0x7F80),   # +inf
])
def test_bf16_round_to_nearest_even(f32_bits, bf16_bits):
    got = float32_to_bf16_bits(np.array([_f32(f32_bits)]))
    assert got.dtype == np.uint16 and int(got[0]) == bf16_bits


def test_bf16_nan_stays_nan_and_roundtrip():
    x = np.random.default_rng(3).standard_normal(1000).astype(np.float32)
    x[7] = np.nan
    back = bf16_bits_to_float32(float32_to_bf16_bits(x))
    assert np.isnan(back[7])
    ok = ~np.isnan(x)
    # relative rounding error at most half an ulp of an 8-bit significand
    assert np.max(np.abs(back[ok] - x[ok]) / np.abs(x[ok])) <= 2.0 ** -8
    # bf16 values survive a second round trip unchanged
    assert np.array_equal(float32_to_bf16_bits(back), float32_to_bf16_bits(x))


def test_to_storage_and_back_per_dtype():
    x = np.linspace(-3, 3, 11)
    for name, err in (("fp16", 1e-3), ("bf16", 1e-2), ("fp32", 1e-7), ("tf32", 1e-7)):
        s = to_storage(x, name)
        assert s.dtype == storage_dtype(name)
        back = to_float32(s, name)
        assert back.dtype == np.float32
        assert np.allclose(back, x, rtol=err, atol=0)


def test_npad_matches_batch_problem():
    for name in ("fp16", "bf16", "tf32", "fp32"):
        dt = get_dtype(name)
        for T in (1, 49, 56, 6272, 25089):
            assert npad(T, dt) == BatchProblem(16, 8, T, 8).npad(dt)
    assert npad(49, "fp16") == 56 and npad(49, "fp32") == 52
