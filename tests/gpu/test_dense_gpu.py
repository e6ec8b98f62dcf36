"""Dense kernels on the GPU: every dtype x arch x VGG-16/ResNet-18 3x3 layer shape x p in (4, 6) x batch
in (32, 1), against a float32 reference, with poisoned outputs so an unwritten element fails."""

from __future__ import annotations

import os

import pytest

from cutlass_wsp.dtypes import DTYPES
from cutlass_wsp.errors import InputError, KernelError, Unsupported
from cutlass_wsp.problem import BatchProblem, round_up
from cutlass_wsp.winograd import tile_grid

# (c, n, H): the unique 3x3 stride-1 layer shapes of VGG-16 and ResNet-18 on 224x224 inputs
LAYERS = [(64, 64, 224), (64, 128, 112), (128, 128, 112), (128, 256, 56), (256, 256, 56), (256, 512, 28),
          (512, 512, 28), (512, 512, 14), (64, 64, 56), (128, 128, 28), (256, 256, 14), (512, 512, 7)]
DTYPE_NAMES = ("fp16", "bf16", "tf32")
ARCHS = ("sm90", "sm80")
TILES = (4, 6)
BATCHES = (32, 1)


def problem_for(c: int, n: int, H: int, p: int, batch: int, dtype: str) -> tuple[BatchProblem, int]:
    """The padded EC2B problem (N = Npad) and the true tile count T."""
    th, tw = tile_grid(H, H, p - 2)
    T = batch * th * tw
    return BatchProblem(L=p * p, M=n, N=round_up(T, DTYPES[dtype].alignment), K=c), T


def _descs():
    from cutlass_wsp.kernels.manifest import select

    return {(dt, arch, c, n, H, p, b): select(problem_for(c, n, H, p, b, dt)[0], dt, arch)
            for dt in DTYPE_NAMES for arch in ARCHS for c, n, H in LAYERS for p in TILES for b in BATCHES}


@pytest.fixture(scope="module")
def device_cc():
    from cutlass_wsp.gpu.device import compute_capability

    return compute_capability()


@pytest.fixture(scope="module")
def kernels(compile_cache_dir, device_cc):
    """Every kernel the cases need, compiled up front in parallel, then loaded (one per description)."""
    from cutlass_wsp.kernels.cache import KernelCache
    from cutlass_wsp.kernels.library import get_kernel

    cache = KernelCache(compile_cache_dir)
    descs = _descs()
    runnable = {d for d in descs.values() if d.arch == "sm80" or device_cc == 90}
    cache.compile_many(sorted(runnable, key=lambda d: d.name), jobs=os.cpu_count())
    libs = {d: get_kernel(d, cache) for d in runnable}
    return {key: libs.get(d) for key, d in descs.items()}


@pytest.fixture(autouse=True)
def free_gpu_memory():
    yield
    import cupy

    cupy.get_default_memory_pool().free_all_blocks()


def _inputs(problem: BatchProblem, T: int, dtype: str, seed: int):
    """W[L,M,K], X[L,K,Npad] with zero pad columns, Y poisoned (cupy storage arrays)."""
    import cupy

    from cutlass_wsp.gpu import arrays

    rng = cupy.random.default_rng(seed)
    W = arrays.random((problem.L, problem.M, problem.K), dtype, rng=rng)
    X = arrays.padded_x(problem.L, problem.K, T, dtype, rng=rng)
    Y = arrays.poison(arrays.empty((problem.L, problem.M, problem.N), dtype), dtype)
    return W, X, Y


def _check(W, X, Y, T: int, dtype: str, what: str) -> None:
    """Y[..., :T] matches a float32 reference within the dtype's tolerance; every element written;
    the pad columns (X's zero columns) came out zero."""
    import cupy

    from cutlass_wsp.gpu import arrays
    from cutlass_wsp.gpu.verify import count_nonfinite, relative_error

    Yf = arrays.to_float32(Y, dtype)
    bad = count_nonfinite(Yf)
    assert bad == 0, f"{what}: {bad} of {Yf.size} outputs not written (still NaN) or not finite"
    ref = cupy.matmul(arrays.to_float32(W, dtype), arrays.to_float32(X[..., :T], dtype))
    err = relative_error(Yf[..., :T], ref)
    assert err <= DTYPES[dtype].rtol, f"{what}: relative error {err:.3g} > {DTYPES[dtype].rtol}"
    if Y.shape[-1] > T:
        assert not bool(cupy.any(Yf[..., T:])), f"{what}: pad columns are not zero"


CASES = [(dt, arch, c, n, H, p, b) for dt in DTYPE_NAMES for arch in ARCHS for c, n, H in LAYERS
         for p in TILES for b in BATCHES]


@pytest.mark.parametrize("case", CASES, ids=[f"{dt}-{a}-c{c}n{n}H{H}-p{p}-b{b}" for dt, a, c, n, H, p, b in CASES])
def test_dense_layer_shapes(case, kernels, device_cc):
    from cutlass_wsp.families.dense import DenseBatch

    dtype, arch, c, n, H, p, batch = case
    kernel = kernels[case]
    if kernel is None:
        pytest.skip(f"{arch} kernels need an sm_90 GPU (this one is sm_{device_cc})")
    problem, T = problem_for(c, n, H, p, batch, dtype)
    W, X, Y = _inputs(problem, T, dtype, seed=hash(case) & 0xFFFF)
    DenseBatch(kernel).run(W, X, Y)
    _check(W, X, Y, T, dtype, f"{kernel.name} on {problem} (T={T})")


# ---------------------------------------------------------------------------------- host-side paths
def _kernel(kernels, dtype, arch, device_cc):
    k = kernels[(dtype, arch) + (512, 512, 14, 4, 32)]
    if k is None:
        pytest.skip(f"{arch} kernels need an sm_90 GPU (this one is sm_{device_cc})")
    return k


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_strided_views_use_the_leading_dims(kernels, device_cc, dtype, arch):
    """Row-pruned weights as a view W[:, :m, :] and output Y[:, :m, :]: lda/ldd and batch strides are
    not the packed ones, and the rows past m must stay untouched."""
    import cupy

    from cutlass_wsp.families.dense import DenseBatch
    from cutlass_wsp.gpu import arrays

    kernel = _kernel(kernels, dtype, arch, device_cc)
    problem, T = problem_for(256, 512, 14, 4, 8, dtype)
    W, X, Y = _inputs(problem, T, dtype, seed=7)
    m = 136
    DenseBatch(kernel).run(W[:, :m, :], X, Y[:, :m, :])
    _check(W[:, :m, :], X, Y[:, :m, :], T, dtype, f"{kernel.name} on a row view")
    rest = arrays.to_float32(Y[:, m:, :], dtype)
    assert bool(cupy.all(cupy.isnan(rest))), "rows outside the view were written"


@pytest.mark.parametrize("arch", ARCHS)
def test_repeat_launches_follow_new_arguments(kernels, device_cc, arch):
    """The library reuses its initialized operator for identical arguments: a repeat must still write,
    and new pointers must not be served by the stale operator."""
    import cupy

    from cutlass_wsp.families.dense import DenseBatch
    from cutlass_wsp.gpu import arrays

    kernel = _kernel(kernels, "fp16", arch, device_cc)
    problem, T = problem_for(128, 128, 28, 4, 4, "fp16")
    dense = DenseBatch(kernel)
    W, X, Y = _inputs(problem, T, "fp16", seed=1)
    dense.run(W, X, Y)
    arrays.poison(Y, "fp16")
    dense.run(W, X, Y)                                   # identical arguments: fast path
    _check(W, X, Y, T, "fp16", "repeat launch")
    W2, X2, Y2 = _inputs(problem, T, "fp16", seed=2)
    cupy.cuda.get_current_stream().synchronize()   # inputs and poison are written on the current stream
    stream = cupy.cuda.Stream(non_blocking=True)
    dense.run(W2, X2, Y2, stream=stream)
    stream.synchronize()
    _check(W2, X2, Y2, T, "fp16", "new arrays on another stream")


@pytest.mark.parametrize("arch", ARCHS)
def test_bad_inputs_are_refused_before_launch(kernels, device_cc, arch):
    import cupy

    from cutlass_wsp.families.dense import DenseBatch
    from cutlass_wsp.gpu import arrays

    kernel = _kernel(kernels, "fp16", arch, device_cc)
    dense = DenseBatch(kernel)
    problem, T = problem_for(64, 64, 7, 4, 1, "fp16")
    W, X, Y = _inputs(problem, T, "fp16", seed=3)
    with pytest.raises(InputError, match="holds float32"):
        dense.run(W, X, cupy.zeros(Y.shape, cupy.float32))
    with pytest.raises(InputError, match="do not make"):
        dense.run(W, X[:, :-1, :], Y)
    with pytest.raises(InputError, match="not a CuPy array"):
        dense.run(cupy.asnumpy(W), X, Y)
    with pytest.raises(Unsupported, match="rows are not contiguous"):
        dense.run(W, X[:, :, ::2], Y[:, :, ::2])
    odd = T if T % 8 else T + 1                          # an unpadded width: not a multiple of 8
    Xo = arrays.zeros((problem.L, problem.K, odd), "fp16")
    Yo = arrays.poison(arrays.empty((problem.L, problem.M, odd), "fp16"), "fp16")
    with pytest.raises(Unsupported, match="multiple of 8"):
        dense.run(W, Xo, Yo)
    assert bool(cupy.all(cupy.isnan(arrays.to_float32(Yo, "fp16")))), "a refused problem was launched"


def test_kernel_refusal_is_a_kernel_error(kernels, device_cc):
    """What DenseBatch lets through, the library's can_implement still checks (here: lda < K)."""
    from cutlass_wsp.kernels.library import make_args

    kernel = _kernel(kernels, "fp16", "sm80", device_cc)
    with pytest.raises(KernelError, match="kErrorInvalidProblem"):
        kernel.run(make_args(M=64, N=64, K=64, L=1, A=0x10000, B=0x10000, D=0x10000, lda=32, ldb=64, ldd=64))
