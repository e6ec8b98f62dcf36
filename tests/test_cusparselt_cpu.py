"""The host side of the cuSPARSELt binding: nothing loads at import, the descriptor arithmetic, the checks.
(The binding itself is untested on a GPU; see cutlass_wsp/gpu/cusparselt.py.)"""

from __future__ import annotations

import subprocess
import sys

import pytest

from cutlass_wsp.errors import GpuUnavailable, InputError, Unsupported
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


def test_missing_library_is_one_line():
    try:
        load_library()
    except GpuUnavailable as e:
        assert "\n" not in str(e) and "nvidia-cusparselt" in e.fix
    except Unsupported:
        pytest.skip("an old cuSPARSELt is installed here")
    else:
        pytest.skip("libcusparseLt is installed here")
