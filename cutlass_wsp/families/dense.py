"""The dense family: the batched GEMM Y[l] = W[l] . X[l] for W[L,M,K], X[L,K,N], Y[L,M,N] (EC2B layout,
N = Npad with zero pad columns in X), and the `dense` kernel family that FP, WSP-R batched/padded and
WSP-C two-pass/xform run too.

Declares: the `dense` kernel family (templates/dense_sm90.cu.j2, dense_sm80.cu.j2; default
`manifest.select`; the candidate menu below; BatchProblem; `DenseMeasure`), the sweep's
(dense, cutlass) point, and `dense_cost`, the dense GEMM batch's floor. `DenseBatch` runs one compiled
kernel on CuPy arrays; everything is checked before anything is launched.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from cutlass_wsp.errors import InputError, Unsupported
from cutlass_wsp.families.base import (CandidateMeasure, Cost, Family, KernelFamily, KernelPlan, Op, PointContext,
                                       Serves, kernel_config)
from cutlass_wsp.gpu.launch import bound_stream_pointer, launch_stream_pointer, sm_count
from cutlass_wsp.kernels.candidates import (FEW_WAVES, Recipe, fitted_tile_n, shape_allows, tile_m_choices,
                                            waves)
from cutlass_wsp.kernels.description import KernelDesc
from cutlass_wsp.kernels.library import KernelLibrary, WspArgs, make_args
from cutlass_wsp.problem import BatchProblem


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


# ---------------------------------------------------------------------------------------------
# The kernel family: default, menu, measurement
# ---------------------------------------------------------------------------------------------

def _sm90_recipes(problem: BatchProblem, dtype: str, sm_count: int) -> list[Recipe]:
    """fp16/bf16 menu, pruned by the H100 batch-32 run (docs/tuning.md, "Pruned"): ping-pong won 15 of
    24 shapes, so it gets the new variants (2x1 clusters, tile K 128, narrow tiles); the no-smem
    epilogue, the non-persistent kernel, stream-K/split-K, 256x64 and the 2x1 clusters of 128x256 and
    256x128 never won and are gone."""
    if dtype == "tf32":
        return _sm90_tf32_recipes(problem)
    M, K = problem.M, problem.K
    pp = "tma_ws_pingpong"
    out: list[Recipe] = []
    tms = tile_m_choices(M)
    for tm in tms:
        if tm == 64:
            out += [Recipe((64, 128, 64), pp), Recipe((64, 256, 64), pp)]
            if M > 64:     # two 64-row CTAs share each X tile through TMA multicast: X read once
                out += [Recipe((64, 128, 64), pp, cluster=(2, 1, 1)), Recipe((64, 256, 64), pp, cluster=(2, 1, 1))]
            if K % 128 == 0:
                out += [Recipe((64, 128, 128), pp)]
        elif tm == 128:
            out += [Recipe((128, 128, 64)), Recipe((128, 256, 64)), Recipe((128, 128, 64), pp)]
            if K % 128 == 0:   # half the k-blocks (and their barrier round trips) per tile
                out += [Recipe((128, 128, 128), pp)]
            if M > 128:
                out += [Recipe((128, 128, 64), pp, cluster=(2, 1, 1)), Recipe((128, 128, 64), cluster=(2, 1, 1))]
                # 2x2: each W tile multicast to the 2 N-neighbours and each X tile to the 2 M-neighbours,
                # halving the L2->SM bytes of the K = 256..512 shapes, which re-read both operands.
                out += [Recipe((128, 128, 64), cluster=(2, 2, 1)), Recipe((128, 128, 64), pp, cluster=(2, 2, 1))]
        else:  # 256
            out += [Recipe((256, 128, 64)), Recipe((256, 128, 64), cluster=(1, 2, 1))]
            if M > 256:
                out += [Recipe((256, 128, 64), cluster=(2, 2, 1))]
    # Few waves: a tile N that splits N evenly and fills the last wave better than 128 does (the tile
    # count of a small layer is fixed by its shape; cuBLAS's fixed tile menu cannot fit it).
    for tm in tms:     # the widest fitted tiles hold too many accumulators; validate() drops them
        tn = fitted_tile_n(problem, tm, sm_count)
        if tn is not None:
            out += [Recipe((tm, tn, 64), "tma_ws_cooperative" if tm >= 128 else pp)]
    # Few tiles (the small late layers): narrower tiles put more CTAs in flight; ping-pong hides each
    # tile's epilogue behind the other warp group's mainloop, and a 1x2 cluster multicasts the W tile
    # (A, the big operand when N is small) to both N-neighbours.
    tm = tms[0]
    if waves(problem, (tm, 128, 64), sm_count) < FEW_WAVES and tm >= 128:
        out += [Recipe((128, 64, 64)), Recipe((128, 64, 64), pp), Recipe((64, 128, 64), pp),
                Recipe((128, 64, 64), pp, cluster=(1, 2, 1))]
    return out


def _sm90_tf32_recipes(problem: BatchProblem) -> list[Recipe]:
    """tf32 swaps A and B inside CUTLASS (docs/kernels.md): cooperative needs our tile N >= 128 and the
    epilogue is the transposed one; tile K 32 (128 bytes)."""
    out: list[Recipe] = []
    for tm in tile_m_choices(problem.M):
        out += [Recipe((tm, 128, 32)), Recipe((tm, 256, 32)),
                Recipe((tm, 128, 32), "tma_ws_pingpong"), Recipe((tm, 64, 32), "tma_ws_pingpong")]
        if tm == 64:
            out += [Recipe((tm, 128, 32), "tma_ws")]
        if problem.M > tm:
            out += [Recipe((tm, 128, 32), cluster=(2, 1, 1))]
    return out


def _sm80_recipes(problem: BatchProblem, dtype: str, sm_count: int) -> list[Recipe]:
    k = 32 if dtype != "tf32" else 16        # 64-byte K slices; 128-byte slices below
    k2 = 2 * k
    out: list[Recipe] = []
    for tm in tile_m_choices(problem.M):
        if tm == 256:
            out += [Recipe((256, 128, k), warp=(64, 64, k))]
        elif tm == 128:
            out += [Recipe((128, 128, k)), Recipe((128, 256, k), warp=(64, 64, k)),
                    Recipe((128, 128, k2), warp=(64, 64, k2)), Recipe((128, 64, k))]
        else:
            out += [Recipe((64, 128, k)), Recipe((64, 256, k), warp=(64, 64, k)), Recipe((64, 64, k)),
                    Recipe((64, 128, k), stages=6), Recipe((64, 128, k2), warp=(32, 64, k2))]
    if waves(problem, (tile_m_choices(problem.M)[0], 128, k), sm_count) < FEW_WAVES:
        out += [Recipe((tile_m_choices(problem.M)[0], 64, k))]
    return out


PP = "tma_ws_pingpong"


class DenseKernel(KernelFamily):
    """`dense`: CUTLASS 3.x TMA/wgmma (sm90) or 2.x mma.sync (sm80) batched GEMM; docs/tuning.md."""

    name = "dense"
    archs = ("sm90", "sm80")
    problem_type = BatchProblem
    # H100 batch-32 winners (results/tune-dense-h100.jsonl: 24 shapes), most wins first
    short_recipes = {"sm90": (
        Recipe((128, 128, 64), PP), Recipe((64, 128, 64), PP), Recipe((128, 128, 64), PP, cluster=(2, 1, 1)),
        Recipe((64, 256, 64), PP, cluster=(2, 1, 1)), Recipe((64, 128, 64), PP, cluster=(2, 1, 1)),
        Recipe((64, 256, 64), PP), Recipe((128, 256, 64)), Recipe((128, 128, 64), PP, cluster=(2, 2, 1)))}
    short_limit = 5

    def default(self, problem: BatchProblem, dtype: str, arch: str) -> KernelDesc:
        from cutlass_wsp.kernels.manifest import select

        return select(problem, dtype, arch, family=self.name)

    def recipes(self, problem, dtype, arch, base, sm_count):
        if base.arch == "sm90":
            return _sm90_recipes(problem, dtype, sm_count)
        return _sm80_recipes(problem, dtype, sm_count)

    def allows(self, desc: KernelDesc, problem: BatchProblem) -> bool:
        return shape_allows(desc, problem)

    def measure(self, dtype: str, cache: Any) -> "DenseMeasure":
        return DenseMeasure(dtype, cache)


class DenseMeasure(CandidateMeasure):
    """The dense batch: fresh random W and X, a poisoned Y, one run checked against fp32 cuBLAS with
    the dtype's tolerance, then `time_gpu` with an L2 flush between repetitions."""

    def __call__(self, problem: BatchProblem, desc: KernelDesc, budget_s: float):
        from cutlass_wsp.gpu import arrays
        from cutlass_wsp.gpu.harness import Check

        L, M, N, K = problem.L, problem.M, problem.N, problem.K
        lib = self.load(desc)
        W = arrays.random((L, M, K), self.dtype)       # fresh values for every candidate
        X = arrays.random((L, K, N), self.dtype)
        Y = arrays.empty((L, M, N), self.dtype)
        launch = DenseBatch(lib).prepare(W, X, Y)
        return self.run(desc, launch, outputs=Y, reference=lambda: self.reference(W, X),
                        check=Check(self.dtype, desc.name, shape=(L, M, N, K), K=K), budget_s=budget_s)


DENSE_KERNEL = DenseKernel()


# ---------------------------------------------------------------------------------------------
# The sweep: (dense, cutlass), and the dense floor
# ---------------------------------------------------------------------------------------------

def dense_cost(problem: BatchProblem, dt) -> Cost:
    """The unpruned GEMM batch: W, X read once, Y written once."""
    return Cost(problem.flops(), problem.bytes_moved(dt))


def dense_fields(problem: BatchProblem) -> dict:
    return dict(nnz=problem.L * problem.M * problem.K, kept_fraction=1.0)


def kernel_problem(point: Any) -> BatchProblem:
    """The dense GEMM batch of a point as the kernel runs it: N padded to 16 bytes, K to the alignment
    (the first layer's c = 3 gets zero channels)."""
    from cutlass_wsp.dtypes import get_dtype
    from cutlass_wsp.gpu.arrays import npad

    pr = point.problem()
    a = get_dtype(point.dtype).alignment
    return BatchProblem(pr.L, pr.M, npad(pr.N, point.dtype), -(-pr.K // a) * a)


class DenseFamily(Family):
    name = "dense"
    description = "the unpruned Winograd GEMM batch on our CUTLASS kernel"
    kernels = (DENSE_KERNEL,)
    serves = (Serves("dense", "cutlass", description="CUTLASS batched GEMM: one shape for all p² positions"),)

    def plan(self, ctx: PointContext) -> KernelPlan:
        problem = kernel_problem(ctx.point)
        desc, tuned = ctx.choose(DENSE_KERNEL.name, problem, DENSE_KERNEL.default(problem, ctx.dt.name, ctx.arch))
        return KernelPlan((desc,), DENSE_KERNEL.name, problem, tuned)

    def build(self, ctx: PointContext) -> Op:
        import cupy

        from cutlass_wsp.gpu import arrays
        from cutlass_wsp.kernels.library import get_kernel

        plan = self.plan(ctx)
        pr, dt = ctx.problem, ctx.dt
        w, X, K = ctx.pruned.weights.astype(np.float32), ctx.X, pr.K
        Kpad = plan.problem.K
        if Kpad != K:   # e.g. the first layer (c = 3): zero channels so every access is 16 bytes wide
            w = np.concatenate([w, np.zeros((pr.L, pr.M, Kpad - K), np.float32)], axis=2)
            X = cupy.concatenate([ctx.X, cupy.zeros((pr.L, Kpad - K, ctx.Npad), ctx.X.dtype)], axis=1)
        W = arrays.from_host(w, dt)
        Y = arrays.empty((pr.L, pr.M, ctx.Npad), dt)
        op = DenseBatch(get_kernel(plan.descs[0], ctx.cache))
        return Op(op.prepare(W, X, Y), Y, lambda: arrays.to_float32(Y, dt), op.kernel.name, dense_cost(pr, dt),
                  {**kernel_config(op.desc), "K_padded": Kpad}, dense_fields(pr), x=X, tuned=plan.tuned)


FAMILY = DenseFamily()
