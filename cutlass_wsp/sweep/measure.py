"""Measure one sweep point on the GPU: the family serving its (pattern, implementation) builds it
(`families/registry.py`), `gpu/harness.py` verifies it against a reference on fresh random data (output
poisoned first) and only then times it.

Weights are He-initialised Winograd-domain weights (so unbalanced pruning is realistically
unbalanced), one set per layer shape; X is drawn fresh for every point. The reference of a GEMM-batch
op multiplies the masked dense weights -- rounded to the point's dtype exactly as the implementation
sees them -- by the same X in fp32, so it checks the compaction, the indices and the kernel together.
A whole-layer op (cuDNN's conv, a fused layer) brings its own reference, and its time is the layer time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cutlass_wsp.dtypes import DType, get_dtype
from cutlass_wsp.errors import Unsupported
from cutlass_wsp.families import registry
from cutlass_wsp.families.base import LAYER, KernelPlan, Op, PointContext
from cutlass_wsp.gpu.harness import TimingOptions
from cutlass_wsp.patterns import pruning_of
from cutlass_wsp.sweep.plan import Point


class Workload:
    """Host-side operands that points share: He-init Winograd weights per layer shape and their pruning
    (seeded, so a point's pruning and its tuning key are the same in every run). No GPU."""

    def __init__(self, seed: int = 0, keep: int = 8):
        self.seed = seed
        self.keep = keep
        self._weights: dict[tuple, np.ndarray] = {}
        self._pruned: dict[tuple, Any] = {}

    def weights(self, point: Point) -> np.ndarray:
        key = (point.c, point.n, point.p)
        if key not in self._weights:
            from cutlass_wsp.weights import he_winograd_weights

            self._weights[key] = he_winograd_weights((point.n, point.c), point.p, seed=self.seed)
        return self._weights[key]

    def pruned(self, point: Point):
        from cutlass_wsp.seed_pruning import prune_point

        pattern = pruning_of(point.pattern)
        balance = point.balance or "balanced"
        spread = 0.0
        if balance.startswith("spread:"):
            spread, balance = float(balance.split(":", 1)[1]), "spread"
        key = (point.c, point.n, point.p, pattern, point.ratio, balance, spread)
        if key not in self._pruned:
            if len(self._pruned) > self.keep:      # keep host memory bounded on big sweeps
                self._pruned.pop(next(iter(self._pruned)))
            self._pruned[key] = prune_point(self.weights(point), pattern, point.ratio or 0.0,
                                            balance=balance, spread=spread, seed=self.seed)
        return self._pruned[key]


def plan(point: Point, workload: Workload, arch: str, *, tuned: Any = None, cache: Any = None) -> KernelPlan | None:
    """Host only: which of our kernels the point launches and its tunable launch (None: none of ours)."""
    fam = registry.serving(point.pattern, point.impl)
    return fam.plan(PointContext(point, arch=arch, workload=workload, cache=cache, tuned=tuned))


def planned_descs(points, workload: Workload, arch: str, *, cache: Any = None, tuned: Any = None) -> list:
    """Host only: the distinct kernels the points launch on `arch` (a point whose plan fails is left out: its own
    measurement reports it)."""
    from cutlass_wsp.errors import WspError

    descs = []
    for pt in points:
        try:
            found = plan(pt, workload, arch, tuned=tuned, cache=cache)
        except WspError:
            continue
        if found is not None:
            descs.extend(found.descs)
    return list(dict.fromkeys(descs))


def compile_points(points, workload: Workload, arch: str, *, cache: Any = None, tuned: Any = None
                   ) -> tuple[int, int]:
    """Host only: build every kernel the points launch on `arch`, all cores at once; a point whose plan fails,
    or a kernel that fails to build, is left for that point's own row. Returns (distinct kernels the points need,
    how many of them were not in the cache)."""
    from cutlass_wsp.errors import WspError
    from cutlass_wsp.kernels.cache import default_cache

    unique = planned_descs(points, workload, arch, cache=cache, tuned=tuned)
    cache = cache or default_cache()
    try:
        missing = [d for d in unique if cache.lookup(d) is None]
    except WspError:       # no toolchain: every point that needs a kernel reports it
        return len(unique), len(unique)
    if missing:
        try:
            cache.compile_many(missing)
        except WspError:
            pass   # each failing point gets its compile_error row when it asks for the kernel
    return len(unique), len(missing)


class Measurer:
    """Holds what points share: weights per layer shape, pruned weights, kernels, ceilings, and this run's
    tuned choices (`tuned`: a kernels.store.TunedChoices, read once by the session)."""

    def __init__(self, timing: TimingOptions | None = None, cache=None, seed: int = 0,
                 layer_time: bool = True, tuned: Any = None):
        from cutlass_wsp.gpu.device import compute_capability, require_gpu
        from cutlass_wsp.kernels.manifest import arch_for_device

        require_gpu()
        self.timing = timing or TimingOptions()
        self.cache = cache
        self.seed = seed
        self.layer_time = layer_time
        self.tuned = tuned
        self.workload = Workload(seed)
        self.arch = arch_for_device(compute_capability())
        self._ceilings: dict[str, Any] = {}
        self._ref_gemm = None

    # ---------------------------------------------------------------------------------- shared
    def ceilings(self, dt: DType):
        from cutlass_wsp.gpu.ceilings import measure_ceilings

        if dt.name not in self._ceilings:
            self._ceilings[dt.name] = measure_ceilings(dt.name)
        return self._ceilings[dt.name]

    def pruned(self, point: Point):
        return self.workload.pruned(point)

    def context(self, point: Point) -> PointContext:
        return PointContext(point, arch=self.arch, workload=self.workload, cache=self.cache, tuned=self.tuned)

    def plan(self, point: Point) -> KernelPlan | None:
        return registry.serving(point.pattern, point.impl).plan(self.context(point))

    def masked_weights32(self, pruned, dt: DType):
        """The masked dense weights rounded to dt, in fp32 on the GPU: [L, n, c]."""
        from cutlass_wsp.gpu import arrays

        return arrays.to_float32(arrays.from_host(pruned.dense_weights().astype(np.float32), dt), dt)

    def gemm_reference(self, W32, X32):
        """fp32 cuBLAS of W32 [L, n, c] and X32 [L, c, Npad]: [L, n, Npad] float32."""
        from cutlass_wsp.gpu import arrays
        from cutlass_wsp.gpu.baselines import CublasBatched

        if self._ref_gemm is None:
            self._ref_gemm = CublasBatched("fp32")
        Y32 = arrays.empty((W32.shape[0], W32.shape[1], X32.shape[2]), "fp32")
        self._ref_gemm.run(W32, X32, Y32)
        return Y32

    def compile_ahead(self, points) -> tuple[int, int]:
        """Build every kernel the points need, all cores at once (compile_points)."""
        return compile_points(points, self.workload, self.arch, cache=self.cache, tuned=self.tuned)

    def _layer_fields(self, point: Point, dt: DType, W32, op: Op, ceil) -> dict:
        """The whole layer around this GEMM batch; a layer the pipeline cannot serve is noted, not fatal."""
        from cutlass_wsp.sweep import layer_time

        ops = layer_time.LayerOperands(X=op.x, Y=op.out, rows=op.rows, launch=op.launch,
                                       channel_map=op.channel_map)
        timing = self.timing
        if timing is not None and timing.use_graph and not op.graphable:   # torch allocating in the launch: no capture
            from dataclasses import replace

            timing = replace(timing, use_graph=False)
        try:
            return layer_time.measure_layer(point, dt, W32, ops, ceil.copy_bw_Bps, timing)
        except Unsupported as e:
            return {"reason": f"layer not timed: {e}"}

    # --------------------------------------------------------------------------------- measure
    def measure(self, point: Point) -> dict:
        ctx = self.context(point)
        op = registry.serving(point.pattern, point.impl).build(ctx)
        try:
            if op.scope == LAYER:
                return self._measure_layer_op(ctx, op)
            return self._measure_gemm_op(ctx, op)
        finally:
            if op.close is not None:
                op.close()

    def _measure_gemm_op(self, ctx: PointContext, op: Op) -> dict:
        from cutlass_wsp.gpu import arrays
        from cutlass_wsp.gpu.harness import Check, bench

        dt, problem, X = ctx.dt, ctx.problem, ctx.X
        if op.x is None:
            op.x = X
        T = problem.N
        W32 = self.masked_weights32(ctx.pruned, dt)

        def reference():
            return self.gemm_reference(W32, arrays.to_float32(X, dt))[..., :T]

        measured = bench(op.launch, outputs=op.out, result=lambda: op.result()[..., :T],
                         reference=op.reference or reference,
                         check=op.check or Check(dt, op.kernel, shape=(problem.L, problem.M, T, problem.K),
                                                 K=problem.K),
                         **self.timing.kwargs(graph=self.timing.use_graph and op.graphable))
        ceil = self.ceilings(dt)
        layer = self._layer_fields(ctx.point, dt, W32, op, ceil) if self.layer_time else {}
        t = measured.timing
        return dict(**layer,
                    L=problem.L, M=problem.M, N=problem.N, K=problem.K, T=problem.N, Npad=ctx.Npad,
                    flops=op.cost.flops, kernel=op.kernel, kernel_config=op.config, tuned=op.tuned,
                    median_ms=t.median_ms, q1_ms=t.q1_ms, q3_ms=t.q3_ms, iqr_ms=t.iqr_ms,
                    min_ms=t.min_ms, reps=t.reps, method=t.method,
                    rel_error=measured.rel_error,
                    floor_ms=op.cost.floor_ms(ceil.gemm_flops, ceil.copy_bw_Bps), **op.fields)

    def _measure_layer_op(self, ctx: PointContext, op: Op) -> dict:
        """A whole layer in one op: verified against its own reference; its time is the layer time."""
        from cutlass_wsp.gpu.harness import bench

        measured = bench(op.launch, outputs=op.out, result=op.result, reference=op.reference, check=op.check,
                         **self.timing.kwargs(graph=self.timing.use_graph and op.graphable))
        ceil = self.ceilings(ctx.dt)
        t, err = measured.timing, measured.rel_error
        return dict(flops=op.cost.flops, kernel=op.kernel, kernel_config=op.config, tuned=op.tuned,
                    median_ms=t.median_ms, q1_ms=t.q1_ms, q3_ms=t.q3_ms, iqr_ms=t.iqr_ms, min_ms=t.min_ms,
                    reps=t.reps, method=t.method, rel_error=err,
                    floor_ms=op.cost.floor_ms(ceil.gemm_flops, ceil.copy_bw_Bps),
                    layer_ms=t.median_ms, layer_q1_ms=t.q1_ms, layer_q3_ms=t.q3_ms, layer_rel_error=err,
                    **op.fields)
