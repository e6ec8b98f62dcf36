"""DenseBatch's checks and ABI arguments on the CPU: numpy arrays dressed as CuPy arrays (data.ptr,
device.id), the gcc-built fake kernel library, and no GPU."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from cutlass_wsp.errors import InputError, Unsupported
from cutlass_wsp.families import dense
from cutlass_wsp.families.dense import DenseBatch
from cutlass_wsp.kernels.description import default_desc
from cutlass_wsp.kernels.library import KernelLibrary, get_kernel

from test_library import gcc_cache  # noqa: F401  (fixture)


class FakeDeviceArray:
    """The attributes DenseBatch reads from a cupy.ndarray, backed by host memory."""

    def __init__(self, a: np.ndarray, device: int = 0):
        self._a = a
        self.shape, self.strides, self.dtype, self.ndim, self.nbytes = a.shape, a.strides, a.dtype, a.ndim, a.nbytes
        self.data = SimpleNamespace(ptr=a.ctypes.data)
        self.device = SimpleNamespace(id=device)

    def __getitem__(self, key):
        return FakeDeviceArray(self._a[key], self.device.id)


@pytest.fixture
def batch(gcc_cache, monkeypatch):  # noqa: F811
    monkeypatch.setattr(dense, "sm_count", lambda device_id: 132)
    return DenseBatch(get_kernel(default_desc("dense", "fp16", "sm80"), gcc_cache))


def arrays(L=4, M=64, K=32, N=48, dtype=np.float16):
    return (FakeDeviceArray(np.zeros((L, M, K), dtype)), FakeDeviceArray(np.zeros((L, K, N), dtype)),
            FakeDeviceArray(np.zeros((L, M, N), dtype)))


def test_packed_arguments(batch):
    W, X, Y = arrays()
    a = batch.arguments(W, X, Y)
    assert (a.M, a.N, a.K, a.L) == (64, 48, 32, 4)
    assert (a.lda, a.ldb, a.ldd) == (32, 48, 48)
    assert (a.batch_stride_A, a.batch_stride_B, a.batch_stride_D) == (64 * 32, 32 * 48, 64 * 48)
    assert (a.A, a.B, a.D) == (W.data.ptr, X.data.ptr, Y.data.ptr)
    assert (a.alpha, a.beta, a.sm_count, a.device_id) == (1.0, 0.0, 132, 0)
    assert batch.kernel.can_implement(a)


def test_row_views_keep_the_parent_strides(batch):
    W, X, Y = arrays(M=64)
    a = batch.arguments(W[:, :24, :], X, Y[:, :24, :])
    assert a.M == 24 and a.lda == 32 and a.ldd == 48
    assert a.batch_stride_A == 64 * 32 and a.batch_stride_D == 64 * 48


def test_column_views_have_a_wider_leading_dim(batch):
    W, X, Y = arrays(N=64)
    a = batch.arguments(W, X[:, :, :40], Y[:, :, :40])
    assert a.N == 40 and a.ldb == 64 and a.ldd == 64


@pytest.mark.parametrize("make,error,match", [
    (lambda W, X, Y: (W, X, FakeDeviceArray(np.zeros(Y.shape, np.float32))), InputError, "holds float32"),
    (lambda W, X, Y: (W[0], X, Y), InputError, "3-D"),
    (lambda W, X, Y: (W, X[:, :16, :], Y), InputError, "do not make"),
    (lambda W, X, Y: (W, X, FakeDeviceArray(np.zeros(Y.shape, np.float16), device=1)), InputError,
     "different GPUs"),
    (lambda W, X, Y: (W, X[:, :, ::2], Y[:, :, ::2]), Unsupported, "rows are not contiguous"),
    (lambda W, X, Y: (W, X[:, :, :44], Y[:, :, :44]), Unsupported, "N=44"),
    (lambda W, X, Y: (W, X[:, :, 2:42], Y[:, :, 2:42]), Unsupported, "X address"),
    (lambda W, X, Y: (W, X, Y[:, :, ::-1]), Unsupported, "rows are not contiguous"),
    (lambda W, X, Y: (np.zeros(W.shape, np.float16), X, Y), InputError, "not a CuPy array"),
])
def test_refusals_name_the_problem(batch, make, error, match):
    with pytest.raises(error, match=match) as info:
        batch.arguments(*make(*arrays()))
    assert info.value.fix


def test_overlapping_output_batches_are_refused(batch):
    W, X, _ = arrays(L=2)
    base = np.zeros((64, 48), np.float16)
    Y = FakeDeviceArray(np.lib.stride_tricks.as_strided(base, (2, 64, 48), (0, 96, 2)))
    with pytest.raises(Unsupported, match="overlap"):
        batch.arguments(W, X, Y)


def test_kernel_without_a_dense_description_is_refused(gcc_cache):  # noqa: F811
    so = gcc_cache.get(default_desc("dense", "fp16", "sm80"))
    with pytest.raises(InputError, match="without its description"):
        DenseBatch(KernelLibrary(so))
    with pytest.raises(InputError, match="not 'dense'"):
        DenseBatch(KernelLibrary(so, desc=default_desc("wsp_c_gather", "fp16", "sm80")))
