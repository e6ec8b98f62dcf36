"""Verification on numpy arrays: error metric, tolerances, poison, and verify-before-time."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest

from cutlass_wsp.errors import VerificationError
from cutlass_wsp.gpu.arrays import float32_to_bf16_bits, poison
from cutlass_wsp.gpu.verify import check, relative_error, tolerance, verify_then_time


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


class _Backend:
    has_gate = False

    def __init__(self):
        self.timed = 0

    def activate(self):
        return contextlib.nullcontext()

    def flush_l2(self, rep, mode="dirty"):
        pass

    def gate(self, us):
        pass

    def mark_start(self):
        pass

    def mark_end(self):
        self.timed += 1

    def elapsed_ms(self):
        return 1.0

    def synchronize(self):
        pass


def _kernel(ref, out, factor, cols=None):
    runs = []

    def run():
        runs.append(1)
        if cols is None:
            out[...] = ref * factor
        else:
            out[..., :cols] = ref[..., :cols] * factor
    return run, runs


def test_verify_then_time_refuses_wrong_kernel(ref):
    out = np.zeros(ref.shape, np.float32)
    run, runs = _kernel(ref, out, 2.0)
    be = _Backend()
    with pytest.raises(VerificationError, match="relative error 1.0e\\+00"):
        verify_then_time(run, lambda: ref, out, "fp32", what="bad", backend=be, min_reps=3, max_reps=3)
    assert runs == [1] and be.timed == 0  # ran once to verify, never timed


def test_verify_then_time_poisons_before_running(ref):
    out = ref.astype(np.float32)  # already holds the right answer: only poison can expose the skip
    run, _ = _kernel(ref, out, 1.0, cols=20)
    with pytest.raises(VerificationError, match="never written"):
        verify_then_time(run, lambda: ref, out, "fp32", what="k", backend=_Backend())
    # comparing only the valid columns passes: pad columns are not results
    timing, err = verify_then_time(run, lambda: ref[..., :20], out, "fp32", what="k", cols=20,
                                   backend=_Backend(), min_reps=3, max_reps=3, budget_s=0)
    assert err < 1e-6 and timing.reps == 3 and np.isnan(out[..., 20:]).all()


def test_poison_patterns():
    f16 = poison(np.zeros(5, np.float16))
    bits = poison(np.zeros(5, np.uint16))
    assert np.isnan(f16).all()
    assert (bits == 0x7FC0).all()
    with pytest.raises(TypeError):
        poison(np.zeros(3, np.int32))
    with pytest.raises(TypeError):
        poison(np.zeros(3, np.float32), "fp16")
