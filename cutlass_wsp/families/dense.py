"""Dense GEMM batch on CuPy arrays: Y[l] = W[l] . X[l] for W[L,M,K], X[L,K,N], Y[L,M,N] (EC2B layout,
N = Npad with zero pad columns in X). Everything is checked before anything is launched."""

from __future__ import annotations

from typing import Any, Callable

from cutlass_wsp.errors import InputError, Unsupported
from cutlass_wsp.gpu.launch import bound_stream_pointer, launch_stream_pointer, sm_count
from cutlass_wsp.kernels.library import KernelLibrary, WspArgs, make_args


def _row_major_strides(name: str, a: Any) -> tuple[int, int]:
    """(batch stride, leading dim) in elements of a 3-D array whose rows are contiguous."""
    item = a.dtype.itemsize
    s0, s1, s2 = (int(s) for s in a.strides)
    if a.shape[2] > 1 and s2 != item:
        raise Unsupported(f"{name} {tuple(a.shape)} has strides {tuple(a.strides)}: its rows are not contiguous",
                          f"pass a row-major array ({name}.copy() or cupy.ascontiguousarray)")
    if s0 % item or s1 % item or s0 < 0 or s1 < 0:
        raise Unsupported(f"{name} strides {tuple(a.strides)} are not non-negative multiples of the element size",
                          f"pass a row-major array ({name}.copy())")
    ld = s1 // item if a.shape[1] > 1 else a.shape[2]
    if ld < a.shape[2]:
        raise Unsupported(f"{name} rows overlap (leading dim {ld} < {a.shape[2]} columns)", f"pass {name}.copy()")
    return s0 // item, ld


class _Launch:
    """One checked launch; holds the arrays so their memory outlives it."""

    __slots__ = ("kernel", "args", "workspace", "stream_ptr", "arrays")

    def __init__(self, kernel: KernelLibrary, args: WspArgs, workspace: Any, stream_ptr: int | None, arrays: tuple):
        self.kernel, self.args, self.workspace, self.stream_ptr, self.arrays = (
            kernel, args, workspace, stream_ptr, arrays)

    def __call__(self) -> None:
        self.kernel.run(self.args, self.workspace, launch_stream_pointer(self.stream_ptr))


class DenseBatch:
    """Runs one compiled dense kernel on CuPy arrays. Reuse it: the workspace is kept between runs."""

    def __init__(self, kernel: KernelLibrary):
        if kernel.desc is None:
            raise InputError(f"kernel {kernel.name} was loaded without its description",
                             "load it with kernels.library.get_kernel(desc)")
        if kernel.desc.family != "dense":
            raise InputError(f"kernel {kernel.name} is a {kernel.desc.family!r} kernel, not 'dense'",
                             "pick a kernel with KernelDesc(family='dense')")
        self.kernel = kernel
        self.desc = kernel.desc
        self._workspace = None

    @classmethod
    def for_problem(cls, problem, dtype: str, arch: str | None = None, cache=None) -> "DenseBatch":
        """Kernel chosen by kernels.manifest.select for a packed EC2B problem (arch from the GPU if None)."""
        from cutlass_wsp.gpu.device import compute_capability
        from cutlass_wsp.kernels.library import get_kernel
        from cutlass_wsp.kernels.manifest import arch_for_device, select

        arch = arch or arch_for_device(compute_capability())
        return cls(get_kernel(select(problem, dtype, arch), cache))

    # ----------------------------------------------------------------------------------- checks
    def arguments(self, W: Any, X: Any, Y: Any) -> WspArgs:
        """Check W, X, Y against each other and this kernel; the ABI arguments for them."""
        from cutlass_wsp.gpu.arrays import storage_dtype

        d = self.desc
        want = storage_dtype(d.dtype)
        for name, a in (("W", W), ("X", X), ("Y", Y)):
            if not hasattr(a, "data") or not hasattr(a.data, "ptr") or not hasattr(a, "device"):
                raise InputError(f"{name} is a {type(a).__name__}, not a CuPy array",
                                 "move it to the GPU with cutlass_wsp.gpu.arrays.from_host")
            if a.ndim != 3:
                raise InputError(f"{name} has shape {tuple(a.shape)}; the EC2B layout is 3-D",
                                 "use W[L, M, K], X[L, K, Npad], Y[L, M, Npad]")
            if a.dtype != want:
                raise InputError(f"{name} holds {a.dtype}, this {d.dtype} kernel reads {want}",
                                 f"convert with cutlass_wsp.gpu.arrays.to_storage(..., '{d.dtype}')")
        L, M, K = (int(s) for s in W.shape)
        N = int(X.shape[2])
        if tuple(X.shape) != (L, K, N) or tuple(Y.shape) != (L, M, N):
            raise InputError(f"shapes W{tuple(W.shape)} X{tuple(X.shape)} Y{tuple(Y.shape)} do not make "
                             "Y[l] = W[l] . X[l]", "use W[L, M, K], X[L, K, N], Y[L, M, N]")
        if min(L, M, N, K) == 0:
            raise InputError(f"empty problem L={L} M={M} N={N} K={K}", "give every extent at least 1")
        devices = {W.device.id, X.device.id, Y.device.id}
        if len(devices) != 1:
            raise InputError(f"W, X, Y live on different GPUs {sorted(devices)}", "put them on one device")
        bA, lda = _row_major_strides("W", W)
        bB, ldb = _row_major_strides("X", X)
        bD, ldd = _row_major_strides("Y", Y)
        if L > 1 and bD < M * ldd:
            raise Unsupported(f"Y's batches overlap (batch stride {bD} < {M}x{ldd})", "pass a fresh Y")
        a = d.alignment
        vec = d.alignment_bytes
        bad = [f"{n}={v}" for n, v in (("N", N), ("K", K), ("lda", lda), ("ldb", ldb), ("ldd", ldd))
               + ((("W batch stride", bA), ("X batch stride", bB), ("Y batch stride", bD)) if L > 1 else ())
               if v % a]
        bad += [f"{n} address {p:#x}" for n, p in (("W", W.data.ptr), ("X", X.data.ptr), ("Y", Y.data.ptr))
                if p % vec]
        if bad:
            raise Unsupported(f"{', '.join(bad)} not a multiple of {a} elements ({vec} bytes), which "
                              f"kernel {self.kernel.name} reads per access",
                              "pad N to Npad (cutlass_wsp.gpu.arrays.pad_columns) or use a kernel with the "
                              "alignment kernels.manifest.select picks for this shape")
        dev = W.device.id
        return make_args(M=M, N=N, K=K, L=L, A=W.data.ptr, B=X.data.ptr, D=Y.data.ptr,
                         lda=lda, ldb=ldb, ldd=ldd, batch_stride_A=bA, batch_stride_B=bB, batch_stride_D=bD,
                         alpha=1.0, beta=0.0, sm_count=sm_count(dev), device_id=dev)

    # ---------------------------------------------------------------------------------- launch
    def prepare(self, W: Any, X: Any, Y: Any, *, stream: Any = None) -> Callable[[], None]:
        """Check once, return a no-argument launcher (what timing loops and CUDA graphs call)."""
        import cupy

        args = self.arguments(W, X, Y)
        self.kernel.check(args)
        need = self.kernel.workspace_size(args)
        workspace = None
        if need:
            if self._workspace is None or self._workspace.nbytes < need:
                with cupy.cuda.Device(args.device_id):
                    self._workspace = cupy.empty(need, dtype=cupy.uint8)
            workspace = self._workspace
        return _Launch(self.kernel, args, workspace, bound_stream_pointer(stream), (W, X, Y))

    def run(self, W: Any, X: Any, Y: Any, *, stream: Any = None) -> Any:
        """Y[l] = W[l] . X[l] on `stream` (default: CuPy's current stream). Returns Y."""
        self.prepare(W, X, Y, stream=stream)()
        return Y
