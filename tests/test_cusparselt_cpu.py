"""The host side of the cuSPARSELt binding: nothing loads at import, the descriptor arithmetic, the checks.
(tests/gpu/test_semi24_gpu.py runs the binding on a GPU.)"""

from __future__ import annotations

import subprocess
import sys

import pytest

from cutlass_wsp.errors import InputError, Unsupported
from cutlass_wsp.gpu.cusparselt import (CUDA_R_16BF, CUDA_R_16F, batch_descriptors, load_library)


def test_import_loads_neither_cupy_nor_the_library():
    code = ("import sys, cutlass_wsp.gpu.cusparselt as m; "
            "print('cupy' in sys.modules, any('cusparseLt' in k for k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_descriptors_of_a_winograd_batch():
    # VGG 512->512@28, p = 4, batch 32: L = 16, M = n = 512, K = c = 512, N = 32*14*14 = 6272
    d = batch_descriptors(16, 512, 512, 6272)
    assert (d.A.rows, d.A.cols, d.A.ld, d.A.batch_stride, d.A.structured) == (512, 512, 512, 512 * 512, True)
    assert (d.B.rows, d.B.cols, d.B.ld, d.B.batch_stride, d.B.structured) == (512, 6272, 6272, 512 * 6272, False)
    assert (d.C.rows, d.C.cols, d.C.ld, d.C.batch_stride) == (512, 6272, 6272, 512 * 6272)
    assert d.value_type == CUDA_R_16F and d.compressed_values == 512 * 256
    e = batch_descriptors(36, 64, 128, 40, dtype="bf16", y_cols=48)
    assert e.value_type == CUDA_R_16BF and (e.C.ld, e.C.batch_stride) == (48, 64 * 48)


def test_checks():
    with pytest.raises(InputError, match="multiple of 4"):
        batch_descriptors(16, 64, 66, 64)
    with pytest.raises(InputError, match="16 bytes"):
        batch_descriptors(16, 64, 64, 37)                                 # X's row is not whole vectors
    with pytest.raises(InputError, match="16 bytes"):
        batch_descriptors(16, 64, 12, 64)                                 # K = 12 halves = 24 bytes
    with pytest.raises(InputError, match="fewer"):
        batch_descriptors(16, 64, 64, 64, y_cols=32)
    with pytest.raises(Unsupported, match="1:2"):
        batch_descriptors(16, 64, 64, 64, dtype="fp32")
    for bad in (0, -1, 2.5, "x"):
        with pytest.raises(InputError):
            batch_descriptors(bad, 64, 64, 64)


def test_missing_library_is_unsupported_in_one_line():
    """A machine without libcusparseLt: the row's status is 'unsupported' (not an error), one line with the fix."""
    try:
        load_library()
    except Unsupported as e:
        assert "\n" not in str(e) and "nvidia-cusparselt" in e.fix
    else:
        pytest.skip("libcusparseLt >= 0.6 is installed here")


def test_every_library_call_has_a_signature():
    """Each cuSPARSELt function the binding calls gets argtypes (int64 extents and size_t sizes at their
    width), and the enum values are those of cusparseLt.h 0.10 (cusparseComputeType 32F = 2, ...)."""
    import ast
    from pathlib import Path

    import cutlass_wsp.gpu.cusparselt as m

    tree = ast.parse(Path(m.__file__).read_text())
    called = {n.args[0].value for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "_call"}
    called |= {"cusparseLtDestroy", "cusparseLtMatDescriptorDestroy", "cusparseLtMatmulPlanDestroy"}
    assert called and called <= set(m.SIGNATURES), called - set(m.SIGNATURES)
    assert len(m.SIGNATURES["cusparseLtMatmul"]) == 11 and len(m.SIGNATURES["cusparseLtStructuredDescriptorInit"]) == 9
    assert (m.CUSPARSE_COMPUTE_32F, m.CUSPARSE_ORDER_ROW, m.CUSPARSELT_MAT_BATCH_STRIDE) == (2, 2, 1)


def test_opaque_structs_are_16_byte_aligned():
    from cutlass_wsp.gpu.cusparselt import OPAQUE_BYTES, _Opaque

    for _ in range(8):
        o = _Opaque()
        assert o.ptr.value % 16 == 0 and OPAQUE_BYTES >= 512


def test_setup_refusals_are_unsupported_and_run_failures_errors():
    from cutlass_wsp.errors import KernelError
    from cutlass_wsp.gpu.cusparselt import error_for

    e = error_for("cusparseLtMatmulPlanInit", 10, "not supported", setup=True)
    assert isinstance(e, Unsupported) and "\n" not in str(e) and "status 10" in str(e)
    assert isinstance(error_for("cusparseLtMatmul", 10, "x", setup=False), KernelError)
    assert isinstance(error_for("cusparseLtInit", 7, "internal", setup=True), KernelError)


class _FakeLib:
    """Stands for libcusparseLt: records each call's name and arguments, returns status 0 (or `fail`)."""

    def __init__(self, fail: dict | None = None):
        self.calls: list[tuple[str, tuple]] = []
        self.fail = fail or {}
        self.wsp_version = "0.10"

    def __getattr__(self, name):
        if not name.startswith("cusparseLt"):
            raise AttributeError(name)

        def call(*args):
            self.calls.append((name, args))
            return self.fail.get(name, 0)
        return call


class _Buf:
    """A device buffer as the binding sees one: shape, a pointer of its own, contiguity."""

    count = 0

    def __init__(self, shape):
        import types

        _Buf.count += 1
        self.shape, self.ndim = tuple(shape), len(shape)
        self.data = types.SimpleNamespace(ptr=0x10000 * _Buf.count)
        self.flags = types.SimpleNamespace(c_contiguous=True)

    def get(self):
        return [0]                                       # PruneCheck's d_valid: 0 = the pattern is 2:4


def _fake_cupy(monkeypatch):
    import types

    stream = types.SimpleNamespace(ptr=0, synchronize=lambda: None)
    cp = types.SimpleNamespace(
        zeros=lambda shape, dtype=None: _Buf(shape if isinstance(shape, tuple) else (shape,)),
        empty=lambda n, dtype=None: _Buf((n,)), int32="int32", uint8="uint8", uint16="uint16",
        cuda=types.SimpleNamespace(get_current_stream=lambda: stream))
    monkeypatch.setitem(sys.modules, "cupy", cp)


def test_the_binding_calls_the_library_in_the_documented_order(monkeypatch):
    """No GPU: a fake library and fake CuPy buffers run CusparseLtBatched's Python, so a slip in it (an
    argument count, an attribute) shows here, not on the device. The order is the documented workflow."""
    import cutlass_wsp.gpu.cusparselt as m

    lib = _FakeLib()
    monkeypatch.setattr(m, "load_library", lambda: lib)
    _fake_cupy(monkeypatch)
    W, X, Y = _Buf((16, 64, 128)), _Buf((16, 128, 256)), _Buf((16, 64, 256))
    b = m.CusparseLtBatched(W, X, Y, dtype="fp16")
    b.run(X, Y)
    b.close()
    names = [n for n, _ in lib.calls]
    assert names[:2] == ["cusparseLtInit", "cusparseLtStructuredDescriptorInit"]
    assert names.count("cusparseLtMatDescSetAttribute") == 6 and names.count("cusparseLtDenseDescriptorInit") == 2
    order = ["cusparseLtMatmulDescriptorInit", "cusparseLtMatmulAlgSelectionInit", "cusparseLtMatmulPlanInit",
             "cusparseLtMatmulGetWorkspace", "cusparseLtSpMMAPruneCheck", "cusparseLtSpMMACompressedSize",
             "cusparseLtSpMMACompress", "cusparseLtMatmul"]
    assert [n for n in names if n in order] == order
    for name, args in lib.calls:                           # every call matches its declared signature
        assert len(args) == len(m.SIGNATURES[name]), name
    _, a = next(c for c in lib.calls if c[0] == "cusparseLtStructuredDescriptorInit")
    assert a[2:] == (64, 128, 128, 16, m.CUDA_R_16F, m.CUSPARSE_ORDER_ROW, m.CUSPARSELT_SPARSITY_50_PERCENT)
    _, mm = next(c for c in lib.calls if c[0] == "cusparseLtMatmul")
    assert mm[7] == Y.data.ptr and mm[6] != Y.data.ptr     # D = Y; C is its own zero buffer
    assert names[-6:] == ["cusparseLtMatmulPlanDestroy", "cusparseLtMatmulAlgSelectionDestroy"] + \
        ["cusparseLtMatDescriptorDestroy"] * 3 + ["cusparseLtDestroy"]           # newest first


def test_a_refused_plan_is_unsupported_and_cleans_up(monkeypatch):
    import cutlass_wsp.gpu.cusparselt as m

    lib = _FakeLib(fail={"cusparseLtMatmulPlanInit": m.CUSPARSE_STATUS_NOT_SUPPORTED})
    monkeypatch.setattr(m, "load_library", lambda: lib)
    _fake_cupy(monkeypatch)
    W, X, Y = _Buf((16, 64, 128)), _Buf((16, 128, 256)), _Buf((16, 64, 256))
    with pytest.raises(Unsupported, match="cusparseLtMatmulPlanInit") as e:
        m.CusparseLtBatched(W, X, Y, dtype="fp16")
    assert "\n" not in str(e.value)
    names = [n for n, _ in lib.calls]
    assert names[-1] == "cusparseLtDestroy" and names.count("cusparseLtMatDescriptorDestroy") == 3
