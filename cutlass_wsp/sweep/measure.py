"""Measure one sweep point on the GPU: build its operands, verify the implementation's output against
an fp32 cuBLAS reference on fresh random data (output poisoned first), then time it.

Weights are He-initialised Winograd-domain weights (so unbalanced pruning is realistically
unbalanced), one set per layer shape; X is drawn fresh for every point. The reference multiplies the
masked dense weights -- rounded to the point's dtype exactly as the implementation sees them -- by the
same X in fp32, so it checks the compaction, the indices and the kernel together.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cutlass_wsp.dtypes import DType, get_dtype
from cutlass_wsp.errors import Unsupported
from cutlass_wsp.sweep import costs
from cutlass_wsp.sweep.plan import Point
from cutlass_wsp.sweep.runner import TimingOptions


@dataclass
class Op:
    """A prepared implementation: `launch` only launches (timing loops and graphs call it)."""

    launch: Callable[[], None]
    out: Any                                  # buffer(s) poisoned before the checked run
    dense_out: Callable[[], Any]              # float32 [L, n, >=T] view of the result (missing rows 0)
    kernel: str
    cost: costs.Cost
    config: dict | None = None
    fields: dict = field(default_factory=dict)  # kept_m, kept_k, nnz, ...
    close: Callable[[], None] | None = None
    x: Any = None                             # the X buffer launch reads (default: Inputs.X)
    rows: np.ndarray | None = None            # compact output: kept filter per row of `out`, -1 = pad
    channel_map: Any = None                   # compact x (WSP-C xform): the input transform's ChannelMap


@dataclass
class Inputs:
    """What a builder gets: the point, its pruned weights and the device-side operands."""

    point: Point
    dt: DType
    problem: Any                              # BatchProblem (N = T)
    pruned: Any                               # cutlass_wsp.pruning.Pruned (dense: ratio 0)
    X: Any                                    # device [L, c, Npad] in storage dtype, pad columns 0
    Npad: int
    arch: str
    cache: Any                                # KernelCache or None (default)


Builder = Callable[[Inputs], Op]
BUILDERS: dict[tuple[str, str], Builder] = {}


def builder(pattern: str, *impls: str):
    def deco(fn: Builder) -> Builder:
        for impl in impls:
            BUILDERS[(pattern, impl)] = fn
        return fn
    return deco


class Measurer:
    """Holds what points share: weights per layer shape, pruned weights, kernels, ceilings."""

    def __init__(self, timing: TimingOptions | None = None, cache=None, seed: int = 0,
                 layer_time: bool = True, tune: bool = False, tune_budget_s: float = 1.0):
        from cutlass_wsp.gpu.device import compute_capability, require_gpu
        from cutlass_wsp.kernels.manifest import arch_for_device

        require_gpu()
        self.timing = timing or TimingOptions()
        self.cache = cache
        self.seed = seed
        self.layer_time = layer_time
        self.tune = tune
        self.tune_budget_s = tune_budget_s
        self.arch = arch_for_device(compute_capability())
        self._weights: dict[tuple, np.ndarray] = {}
        self._pruned: dict[tuple, Any] = {}
        self._ceilings: dict[str, Any] = {}
        self._ref_gemm = None

    # ---------------------------------------------------------------------------------- shared
    def ceilings(self, dt: DType):
        from cutlass_wsp.gpu.ceilings import measure_ceilings

        if dt.name not in self._ceilings:
            self._ceilings[dt.name] = measure_ceilings(dt.name)
        return self._ceilings[dt.name]

    def weights(self, point: Point) -> np.ndarray:
        key = (point.c, point.n, point.p)
        if key not in self._weights:
            from cutlass_wsp.weights import he_winograd_weights

            self._weights[key] = he_winograd_weights((point.n, point.c), point.p, seed=self.seed)
        return self._weights[key]

    def pruned(self, point: Point):
        from cutlass_wsp.pruning import prune

        pattern = {"wsp-c-fused": "wsp-c", "conv": "dense"}.get(point.pattern, point.pattern)
        balance = point.balance or "balanced"
        spread = 0.0
        if balance.startswith("spread:"):
            spread, balance = float(balance.split(":", 1)[1]), "spread"
        key = (point.c, point.n, point.p, pattern, point.ratio, balance, spread)
        if key not in self._pruned:
            if len(self._pruned) > 8:      # keep host memory bounded on big sweeps
                self._pruned.pop(next(iter(self._pruned)))
            self._pruned[key] = prune(self.weights(point), pattern, point.ratio or 0.0,
                                      balance=balance, spread=spread, seed=self.seed)
        return self._pruned[key]

    def reference(self, pruned, X32, dt: DType):
        """(W32, Y32): the masked dense weights rounded to dt, in fp32, and their fp32 cuBLAS product
        with X: [L, n, Npad] float32."""
        from cutlass_wsp.gpu import arrays
        from cutlass_wsp.gpu.baselines import CublasBatched

        if self._ref_gemm is None:
            self._ref_gemm = CublasBatched("fp32")
        W32 = arrays.to_float32(arrays.from_host(pruned.dense_weights().astype(np.float32), dt), dt)
        Y32 = arrays.empty((W32.shape[0], W32.shape[1], X32.shape[2]), "fp32")
        self._ref_gemm.run(W32, X32, Y32)
        return W32, Y32

    def compile_ahead(self, points) -> None:
        """Build every kernel the points need, all cores at once; a failure is left for its points' rows.
        With `tune`, search the kernel configs of every shape first: the dense batches, the gather_b
        launches of fused WSP-C and the grouped launches of unbalanced WSP-R, all candidates compiled
        in one parallel build (winners go to the tuning cache, which the builders read)."""
        from cutlass_wsp.errors import WspError
        from cutlass_wsp.kernels.cache import default_cache

        if self.tune:
            from cutlass_wsp.kernels.tuning import tune_by_family

            requests: dict[tuple[str, str], dict] = {}
            for pt in points:
                found = self._tune_problem_of(pt)
                if found is not None:
                    family, problem = found
                    requests.setdefault((family, pt.dtype), {})[problem] = None
            if requests:
                tune_by_family({key: list(problems) for key, problems in requests.items()}, self.arch,
                               cache=self.cache or default_cache(), budget_s=self.tune_budget_s,
                               progress=lambda msg: print(f"tune: {msg}", file=sys.stderr))

        descs = []
        for pt in points:
            fn = DESCS.get((pt.pattern, pt.impl))
            if fn is None and (pt.pattern, pt.impl) in BUILDERS and BUILDERS[(pt.pattern, pt.impl)] is _pruned_cutlass:
                fn = _family_descs(self)
            if fn is None:
                continue
            try:
                descs.extend(fn(pt, self.arch))
            except WspError:
                pass   # the point's own measurement reports it
        if descs:
            cache = self.cache or default_cache()
            try:
                cache.compile_many(dict.fromkeys(descs))
            except WspError:
                pass   # each failing point gets its compile_error row when it asks for the kernel

    def _tune_problem_of(self, pt: Point):
        """(family, problem) of the point's tunable CUTLASS kernel: ('dense', BatchProblem) for dense,
        FP, WSP-R batched/padded and WSP-C two-pass and xform; ('gather_b', GatherTuneProblem) for
        fused WSP-C; ('wsp_r_grouped', GroupedTuneProblem) for WSP-R grouped. None for points that
        run none of them (cuBLAS, cuSPARSE, BCBP's row-tile gather)."""
        from cutlass_wsp.errors import WspError
        from cutlass_wsp.gpu.arrays import npad

        if (pt.pattern, pt.impl) == ("dense", "cutlass"):
            return "dense", _dense_kernel_problem(pt)
        if BUILDERS.get((pt.pattern, pt.impl)) is not _pruned_cutlass:
            return None
        try:
            fam = _family(pt, self.pruned(pt), npad(pt.problem().N, pt.dtype), self.arch)
        except WspError:
            return None
        return getattr(fam, "tune_problem", None)

    def _dense_problem_of(self, pt: Point):
        """The problem a point's dense CUTLASS kernel runs, or None for points that run no dense kernel."""
        found = self._tune_problem_of(pt)
        return found[1] if found is not None and found[0] == "dense" else None

    def _layer_fields(self, point: Point, dt: DType, W32, op: Op, ceil) -> dict:
        """The whole layer around this GEMM batch; a layer the pipeline cannot serve is noted, not fatal."""
        from cutlass_wsp.sweep import layer_time

        ops = layer_time.LayerOperands(X=op.x, Y=op.out, rows=op.rows, launch=op.launch,
                                       channel_map=op.channel_map)
        try:
            return layer_time.measure_layer(point, dt, W32, ops, ceil.copy_bw_Bps, self.timing)
        except Unsupported as e:
            return {"reason": f"layer not timed: {e}"}

    # --------------------------------------------------------------------------------- measure
    def measure(self, point: Point) -> dict:
        import cupy

        from cutlass_wsp.gpu import arrays
        from cutlass_wsp.gpu.timing import time_gpu
        from cutlass_wsp.gpu.verify import check

        if point.pattern == "conv":
            from cutlass_wsp.sweep.layer_time import measure_conv

            dt = get_dtype(point.dtype)
            return measure_conv(point, dt, self.ceilings(dt), self.timing, seed=self.seed)
        build = BUILDERS.get((point.pattern, point.impl))
        if build is None:
            raise Unsupported(f"no implementation {point.impl!r} of pattern {point.pattern!r} in this build",
                              "see `cutlass-wsp sweep --help` for the implementations")
        dt = get_dtype(point.dtype)
        problem = point.problem()
        pruned = self.pruned(point)
        Npad = arrays.npad(problem.N, dt)
        X = arrays.padded_x(problem.L, problem.K, problem.N, dt)   # fresh random data every point
        inputs = Inputs(point, dt, problem, pruned, X, Npad, self.arch, self.cache)
        op = build(inputs)
        if op.x is None:
            op.x = X
        try:
            W32, ref = self.reference(pruned, arrays.to_float32(X, dt), dt)
            T = problem.N
            arrays.poison(op.out, dt) if not isinstance(op.out, (list, tuple)) else [arrays.poison(o, dt) for o in op.out]
            op.launch()
            cupy.cuda.get_current_stream().synchronize()
            got = op.dense_out()[..., :T]
            err = check(got, ref[..., :T], dt, op.kernel, shape=(problem.L, problem.M, T, problem.K),
                        K=problem.K)
            del ref, got
            t = self.timing
            timing = time_gpu(op.launch, warmup=t.warmup, min_reps=t.min_reps, max_reps=t.max_reps,
                              budget_s=t.budget_s, use_graph=t.use_graph)
            ceil = self.ceilings(dt)
            layer = self._layer_fields(point, dt, W32, op, ceil) if self.layer_time else {}
        finally:
            if op.close is not None:
                op.close()
        floor_ms = op.cost.floor_ms(ceil.gemm_flops, ceil.copy_bw_Bps)
        return dict(**layer,
            L=problem.L, M=problem.M, N=problem.N, K=problem.K, T=problem.N, Npad=Npad,
            flops=op.cost.flops, kernel=op.kernel, kernel_config=op.config,
            median_ms=timing.median_ms, q1_ms=timing.q1_ms, q3_ms=timing.q3_ms, iqr_ms=timing.iqr_ms,
            min_ms=timing.min_ms, reps=timing.reps, method=timing.method,
            rel_error=err, floor_ms=floor_ms, **op.fields)


# ------------------------------------------------------------------------------------ builders
def _dense_fields(inp: Inputs) -> dict:
    pr = inp.problem
    return dict(nnz=pr.L * pr.M * pr.K, kept_fraction=1.0)


def _y(inp: Inputs, M: int):
    from cutlass_wsp.gpu import arrays

    return arrays.empty((inp.problem.L, M, inp.Npad), inp.dt)


def _as_dense(Y, dt):
    from cutlass_wsp.gpu import arrays

    return lambda: arrays.to_float32(Y, dt)


def _kernel_config(desc) -> dict:
    import dataclasses

    return {k: v for k, v in dataclasses.asdict(desc).items()}


@builder("dense", "cutlass")
def _dense_cutlass(inp: Inputs) -> Op:
    from cutlass_wsp.families.dense import DenseBatch
    from cutlass_wsp.gpu import arrays

    import cupy

    pr = inp.problem
    w, X, K = inp.pruned.weights.astype(np.float32), inp.X, pr.K
    Kpad = -(-K // inp.dt.alignment) * inp.dt.alignment
    if Kpad != K:   # e.g. the first layer (c = 3): zero channels so every access is 16 bytes wide
        w = np.concatenate([w, np.zeros((pr.L, pr.M, Kpad - K), np.float32)], axis=2)
        X = cupy.concatenate([inp.X, cupy.zeros((pr.L, Kpad - K, inp.Npad), inp.X.dtype)], axis=1)
    from cutlass_wsp.kernels.library import get_kernel
    from cutlass_wsp.kernels.tuning import tuned_or_default

    W = arrays.from_host(w, inp.dt)
    Y = _y(inp, pr.M)
    desc = tuned_or_default(type(pr)(pr.L, pr.M, inp.Npad, Kpad), inp.dt.name, inp.arch, inp.cache)
    op = DenseBatch(get_kernel(desc, inp.cache))
    return Op(op.prepare(W, X, Y), Y, _as_dense(Y, inp.dt), op.kernel.name,
              costs.dense_cost(pr, inp.dt), {**_kernel_config(op.desc), "K_padded": Kpad},
              _dense_fields(inp), x=X)


@builder("dense", "cublas")
def _dense_cublas(inp: Inputs) -> Op:
    from cutlass_wsp.gpu import arrays
    from cutlass_wsp.gpu.baselines import CublasBatched

    pr = inp.problem
    W = arrays.from_host(inp.pruned.weights.astype(np.float32), inp.dt)
    Y = _y(inp, pr.M)
    cb = CublasBatched(inp.dt)
    return Op(lambda: cb.run(W, inp.X, Y), Y, _as_dense(Y, inp.dt), "cublasGemmStridedBatchedEx",
              costs.dense_cost(pr, inp.dt), {"compute": "32F_FAST_TF32" if inp.dt.name == "tf32" else "32F"},
              _dense_fields(inp))


@builder("fp", "cublas")
@builder("wsp-r", "cublas")
def _rows_cublas(inp: Inputs) -> Op:
    """cuBLAS on the compacted weights W_i[rows_i] (balanced: one M for every position)."""
    from cutlass_wsp.families.wsp_r import scatter_rows
    from cutlass_wsp.gpu import arrays
    from cutlass_wsp.gpu.baselines import CublasBatched

    pr, pd = inp.problem, inp.pruned
    Wc = arrays.from_host(pd.stacked_weights().astype(np.float32), inp.dt)
    rows = pd.stacked_indices()
    Yc = _y(inp, Wc.shape[1])
    cb = CublasBatched(inp.dt)
    kept = pd.kept_per_position
    return Op(lambda: cb.run(Wc, inp.X, Yc), Yc,
              lambda: arrays.to_float32(scatter_rows(Yc, rows.astype(np.int32), pr.M), inp.dt),
              "cublasGemmStridedBatchedEx", costs.rows_cost(pr, inp.dt, kept), {"output": "compact rows"},
              dict(kept_m=[int(k) for k in kept], nnz=int(pd.mask.sum()),
                   kept_fraction=float(pd.mask.mean())), rows=rows.astype(np.int32))


@builder("wsp-c", "cublas")
def _cols_cublas(inp: Inputs) -> Op:
    """The paper's two passes with cuBLAS as the GEMM: gather X_i's kept rows, then one strided batch."""
    import cupy

    from cutlass_wsp.families.gather import Launches, RowGather
    from cutlass_wsp.families.wsp_c import column_layout
    from cutlass_wsp.gpu import arrays
    from cutlass_wsp.gpu.baselines import CublasBatched

    pr, pd = inp.problem, inp.pruned
    lay = column_layout(pd)
    K = lay.K(inp.dt.alignment)
    Wc = arrays.from_host(np.ascontiguousarray(lay.padded_weights(K)), inp.dt)
    index = cupy.asarray(np.ascontiguousarray(lay.global_index(K).reshape(-1)))
    Xg = arrays.empty((pr.L, K, inp.Npad), inp.dt)
    Y = _y(inp, pr.M)
    cb = CublasBatched(inp.dt)
    gather = RowGather().prepare(inp.X, Xg, index)
    launch = Launches([gather, lambda: cb.run(Wc, Xg, Y)], (inp.X, Y))
    return Op(launch, Y, _as_dense(Y, inp.dt), "row gather + cublasGemmStridedBatchedEx",
              costs.cols_cost(pr, inp.dt, pd.kept_per_position), {"K_padded": K},
              dict(kept_k=[int(k) for k in pd.kept_per_position], nnz=int(pd.mask.sum()),
                   kept_fraction=float(pd.mask.mean())))


@builder("wwp", "cusparse-per-position", "cusparse-block-diag")
def _wwp_cusparse(inp: Inputs) -> Op:
    from cutlass_wsp.gpu.baselines import CusparseCsr

    pr, pd = inp.problem, inp.pruned
    mode = "per_position" if inp.point.impl.endswith("per-position") else "block_diag"
    Y = _y(inp, pr.M)
    sp = CusparseCsr(inp.dt, pd.csr, cols=pr.K, mode=mode)
    nnz = int(pd.mask.sum())
    return Op(lambda: sp.run(inp.X, Y), Y, _as_dense(Y, inp.dt), f"cusparseSpMM CSR_ALG2 {mode}",
              costs.csr_cost(pr, inp.dt, nnz), {"mode": mode, "alg": "CUSPARSE_SPMM_CSR_ALG2"},
              dict(nnz=nnz, kept_fraction=float(pd.mask.mean())),
              close=sp.close)


# ------------------------------------------------------------------------------ our pruned kernels
# (pattern, impl) -> the family object for a point: constructed on the host (checks, layout, kernel
# choice), so the same function also names the kernels to compile ahead.
def _family(point: Point, pruned, Npad: int, arch: str):
    from cutlass_wsp.families.bcbp import Bcbp
    from cutlass_wsp.families.fp import Fp
    from cutlass_wsp.families.wsp_c import WspC
    from cutlass_wsp.families.wsp_r import WspR

    pat, impl, dt = point.pattern, point.impl, point.dtype
    if pat == "fp":
        return Fp(pruned, dt, Npad, arch=arch)
    if pat == "bcbp":
        return Bcbp(pruned, dt, Npad, arch=arch)
    if pat == "wsp-r":
        mode = {"cutlass": "batched", "cutlass-padded": "padded", "cutlass-grouped": "grouped"}[impl]
        return WspR(pruned, dt, Npad, arch=arch, mode=mode)
    if pat in ("wsp-c", "wsp-c-fused"):
        if impl == "cutlass-grouped":
            raise Unsupported("no grouped WSP-C kernel: unequal c_i run padded to max c_i",
                              "use --impl wsp-c=cutlass-padded")
        if impl == "cutlass-xform":    # the gather fused into the input transform: a dense GEMM on Xc
            return WspC(pruned, dt, Npad, arch=arch, mode="xform")
        return WspC(pruned, dt, Npad, arch=arch, mode="fused" if pat == "wsp-c-fused" else "two_pass")
    raise Unsupported(f"no CUTLASS family for pattern {pat!r}", "see docs/families.md")


def _family_cost(point: Point, inp: Inputs) -> costs.Cost:
    pd, pr, dt = inp.pruned, inp.problem, inp.dt
    if point.pattern in ("fp", "wsp-r"):
        return costs.rows_cost(pr, dt, pd.kept_per_position)
    if point.pattern == "bcbp":
        return costs.block_cols_cost(pr, dt, pd.tile_cols)
    return costs.cols_cost(pr, dt, pd.kept_per_position)


@builder("fp", "cutlass")
@builder("bcbp", "cutlass")
@builder("wsp-r", "cutlass", "cutlass-padded", "cutlass-grouped")
@builder("wsp-c", "cutlass", "cutlass-padded", "cutlass-grouped")
@builder("wsp-c-fused", "cutlass", "cutlass-padded", "cutlass-grouped", "cutlass-xform")
def _pruned_cutlass(inp: Inputs) -> Op:
    from cutlass_wsp.gpu import arrays

    fam = _family(inp.point, inp.pruned, inp.Npad, inp.arch).setup(inp.cache)
    x, channel_map = _gemm_input(fam, inp.X)
    Y = fam.output()
    pd = inp.pruned
    kept = [int(k) for k in pd.kept_per_position]
    rows = inp.point.pattern in ("fp", "wsp-r")
    fields = dict(kept_m=kept if rows else None, kept_k=None if rows else kept,
                  nnz=int(pd.mask.sum()), kept_fraction=float(pd.mask.mean()))
    names = sorted({d.name for d in fam.kernel_descs})
    return Op(fam.prepare(x, Y), Y, lambda: arrays.to_float32(fam.to_dense_output(Y), inp.dt),
              " + ".join(names), _family_cost(inp.point, inp),
              {"mode": getattr(fam, "mode", None), "kernels": [_kernel_config(d) for d in fam.kernel_descs]},
              fields, rows=getattr(fam, "row_index", None) if rows else None, x=x, channel_map=channel_map)


def _gemm_input(fam, X) -> tuple[Any, Any]:
    """(the X a family's launch reads, the input transform's channel map or None). WSP-C xform reads the
    compact Xc the transform would write: gathered here from the point's X, outside the timed launch,
    so that the reference (masked dense weights times X) checks exactly X's kept rows."""
    if getattr(fam, "mode", None) != "xform":
        return X, None
    return fam.compact_input(X), fam.channel_map()


# ------------------------------------------------------------------------------ compile ahead
# (pattern, impl) -> fn(Inputs-free point data) -> kernel descriptions the builder will ask for, so a
# sweep compiles everything it needs in parallel before measuring (the cache skips what it has).
KernelDescs = Callable[[Point, str], list]
DESCS: dict[tuple[str, str], KernelDescs] = {}


def _dense_descs(point: Point, arch: str) -> list:
    from cutlass_wsp.kernels.tuning import tuned_or_default

    return [tuned_or_default(_dense_kernel_problem(point), point.dtype, arch)]


def _dense_kernel_problem(point: Point):
    """The dense GEMM batch as the kernel runs it: N padded to 16 bytes, K to the alignment."""
    from cutlass_wsp.dtypes import get_dtype
    from cutlass_wsp.gpu.arrays import npad

    pr = point.problem()
    a = get_dtype(point.dtype).alignment
    return type(pr)(pr.L, pr.M, npad(pr.N, point.dtype), -(-pr.K // a) * a)


DESCS[("dense", "cutlass")] = _dense_descs


def _family_descs(measurer: "Measurer"):
    def descs(point: Point, arch: str) -> list:
        from cutlass_wsp.gpu.arrays import npad

        fam = _family(point, measurer.pruned(point), npad(point.problem().N, point.dtype), arch)
        return list(fam.kernel_descs)
    return descs
