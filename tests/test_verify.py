"""Verification on numpy arrays: error metric, tolerances, poison (verify-then-time: test_harness.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cutlass_wsp.errors import VerificationError
from cutlass_wsp.gpu.arrays import float32_to_bf16_bits, poison
from cutlass_wsp.gpu.verify import check, layer_rtol, relative_error, tolerance


@pytest.fixture
def ref():
    return np.random.default_rng(0).standard_normal((4, 16, 24))


def test_relative_error_is_frobenius_ratio(ref):
    noise = np.random.default_rng(1).standard_normal(ref.shape)
    out = ref + 1e-3 * noise
    want = np.linalg.norm(out - ref) / np.linalg.norm(ref)
    assert relative_error(out, ref) == pytest.approx(want, rel=1e-12)
    assert relative_error(ref, ref) == 0.0


def test_relative_error_nonfinite_is_inf(ref):
    for bad in (np.nan, np.inf):
        out = ref.copy()
        out[2, 3, 4] = bad
        assert relative_error(out, ref) == math.inf


def test_relative_error_shape_mismatch(ref):
    with pytest.raises(ValueError, match="shapes differ"):
        relative_error(ref[:, :, :5], ref)


def test_check_passes_small_fp16_error(ref):
    out = (ref * (1 + 1e-4)).astype(np.float16)  # fp16 rounding (~3e-4) + a small error
    err = check(out, ref, "fp16", "wsp_dense_fp16_x")
    assert 0 < err < 5e-3


def test_check_fails_large_error_naming_kernel_and_shape(ref):
    out = (ref * 1.3).astype(np.float16)
    with pytest.raises(VerificationError) as e:
        check(out, ref, "fp16", "wsp_dense_fp16_128x128", shape=(16, 512, 6272, 512))
    msg = str(e.value)
    assert msg.startswith("wsp_dense_fp16_128x128: relative error 3.0e-01 > 5e-03 (fp16 tolerance)")
    assert "16x512x6272x512" in msg


def test_check_fails_on_unwritten_poison(ref):
    out = ref.astype(np.float32)
    out[1, :2] = np.nan  # 2 rows of 24 never written
    with pytest.raises(VerificationError, match="48 of 1536 output elements never written"):
        check(out, ref, "fp32", "k")


def test_check_decodes_bf16_bits(ref):
    bits = float32_to_bf16_bits(ref.astype(np.float32))
    assert bits.dtype == np.uint16
    assert check(bits, ref, "bf16", "k") < 2e-2  # bits compared as raw integers would fail badly
    with pytest.raises(VerificationError):
        check(float32_to_bf16_bits((-ref).astype(np.float32)), ref, "bf16", "k")


def test_tolerance_by_dtype_and_k():
    assert tolerance("fp32") == tolerance("fp32", 512) == 1e-5
    assert tolerance("fp16", 4096) == pytest.approx(2 * tolerance("fp16"))
    assert tolerance("bf16") > tolerance("fp16") > tolerance("fp32")


def test_layer_tolerance_is_twice_the_gemm_one_times_the_tile_factor():
    assert layer_rtol("fp16", 4, 256) == pytest.approx(2 * tolerance("fp16", 256))
    assert layer_rtol("fp16", 8, 9 * 512) == pytest.approx(16 * tolerance("fp16", 9 * 512))


def test_poison_patterns():
    f16 = poison(np.zeros(5, np.float16))
    bits = poison(np.zeros(5, np.uint16))
    assert np.isnan(f16).all()
    assert (bits == 0x7FC0).all()
    with pytest.raises(TypeError):
        poison(np.zeros(3, np.int32))
    with pytest.raises(TypeError):
        poison(np.zeros(3, np.float32), "fp16")
