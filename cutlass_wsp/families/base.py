"""The family interface: what one module under `cutlass_wsp/families/` declares (docs/architecture.md,
"Adding a family").

A family module defines a module-level `FAMILY`, an instance of a `Family` subclass, and the registry
(`families/registry.py`) finds it by walking the package: nothing else lists families. A family says

  - which (pattern, implementation) points it serves (`serves`: `Serves` entries; the pattern
    vocabulary is `cutlass_wsp.patterns`),
  - which kernel families it owns (`kernels`: `KernelFamily` objects: the template(s)
    `templates/<name>_<arch>.cu.j2`, the untuned default, the candidate menu and its short form, the
    constraint check, the tune-problem type and the tuner's measurement of one candidate),
  - for a point, which kernels it launches and which of them is tuned under which problem (`plan`:
    host only, no GPU), and
  - how to run a point (`build`: operands, launch, result, cost; optionally its own reference and, for
    a whole-layer op, `scope="layer"`).

Baselines without our kernels (cuBLAS, cuSPARSE, cuDNN) are families with no `kernels` and no `plan`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from cutlass_wsp.errors import InputError, Unsupported
from cutlass_wsp.kernels.candidates import DEFAULT_SM_COUNT, MAX_CANDIDATES, Recipe, menu
from cutlass_wsp.kernels.description import KernelDesc

if TYPE_CHECKING:
    from cutlass_wsp.dtypes import DType
    from cutlass_wsp.gpu.harness import Check

# Which balances an implementation serves: a batched GEMM needs equal shapes in every position, and
# padding a balanced pattern would measure the plain batched kernel again.
ANY, BALANCED_ONLY, UNBALANCED_ONLY = "any", "balanced-only", "unbalanced-only"
BALANCE_RULES = (ANY, BALANCED_ONLY, UNBALANCED_ONLY)

GEMM, LAYER = "gemm", "layer"       # Op.scope


def serves_balance(rule: str, balance: str | None) -> bool:
    """Does an implementation with balance `rule` serve a point of `balance` (None: no balance axis)?"""
    if balance is None or rule == ANY:
        return True
    if rule == BALANCED_ONLY:
        return balance == "balanced"
    return balance != "balanced"


@dataclass(frozen=True)
class Serves:
    """One (pattern, implementation) a family runs."""

    pattern: str
    impl: str
    balance: str = ANY              # ANY / BALANCED_ONLY / UNBALANCED_ONLY
    default: bool = True            # among the pattern's default implementations (the default sweep)
    description: str = ""           # what the implementation is (shown by `cutlass-wsp sweep --help`)
    mode: str | None = None         # the family's own variant for this point (e.g. WSP-R "grouped")

    def __post_init__(self) -> None:
        if self.balance not in BALANCE_RULES:
            raise ValueError(f"Serves({self.pattern}, {self.impl}): balance rule {self.balance!r} is not one of "
                             f"{BALANCE_RULES}")


# ------------------------------------------------------------------------------------- the cost model
@dataclass(frozen=True)
class Cost:
    """FLOPs and fewest bytes of what a point runs: its roofline floor."""

    flops: float
    bytes: float

    def floor_ms(self, flop_rate: float, bandwidth: float) -> float:
        return 1e3 * max(self.flops / flop_rate, self.bytes / bandwidth)


# ------------------------------------------------------------------------------------------ the op
@dataclass
class Op:
    """What `Family.build` returns: a prepared implementation of one point.

    scope "gemm": the Winograd GEMM batch. The sweep checks `result()` (float32 [L, n, >= T], missing
      rows 0) against the masked-dense-weights product with X unless `reference` is given, and, with
      layer time on, wraps the launch in the input and output transforms (`x`, `rows`, `channel_map`
      say how) to time the whole layer.
    scope "layer": a whole layer in one op (cuDNN's conv, a fused Winograd kernel). `reference` and
      `check` are required; its time is the layer time, no transforms are added around it.
    """

    launch: Callable[[], None]                # launch only (timing loops and CUDA graphs call it)
    out: Any                                  # buffer(s) poisoned before the checked run
    result: Callable[[], Any]                 # the result to compare with the reference
    kernel: str                               # the row's kernel field
    cost: Cost
    config: dict | None = None                # the row's kernel_config
    fields: dict = field(default_factory=dict)  # more row fields (kept_m, kept_k, nnz, layout, ...)
    close: Callable[[], None] | None = None
    x: Any = None                             # the input launch reads (gemm: X, default the point's X; layer: NHWC)
    rows: Any = None                          # gemm, compact output: kept filter per row of `out`, -1 = pad
    channel_map: Any = None                   # gemm, compact x (WSP-C xform): the input transform's map
    reference: Callable[[], Any] | None = None  # own reference (required for scope "layer")
    check: "Check | None" = None              # own comparison settings (required for scope "layer")
    scope: str = GEMM
    graphable: bool = True                    # False: never timed as a CUDA graph (e.g. cuDNN via torch)
    tuned: bool | None = None                 # the row's `tuned`: None when nothing in it is tunable

    def __post_init__(self) -> None:
        if self.scope not in (GEMM, LAYER):
            raise ValueError(f"Op.scope {self.scope!r} is not {GEMM!r} or {LAYER!r}")
        if self.scope == LAYER and (self.reference is None or self.check is None):
            raise ValueError("a whole-layer Op brings its own reference and check")


# ---------------------------------------------------------------------------------------- a point
class PointContext:
    """What a family gets for one point: the point, its dtype and kernel arch, the compile cache, the
    tuned choices of this run (`TunedChoices`, a snapshot: no file is read through it) and, built on
    first use, the layer's GEMM batch (`problem`), its pruning (`pruned`, host) and a fresh random
    device X[L, c, Npad] with zero pad columns (`X`, GPU). `plan` may use only the host ones."""

    def __init__(self, point: Any, *, arch: str, workload: Any, cache: Any = None, tuned: Any = None):
        from cutlass_wsp.dtypes import get_dtype

        self.point = point
        self.dt: "DType" = get_dtype(point.dtype)
        self.arch = arch
        self.cache = cache
        self.tuned = tuned
        self.workload = workload

    @property
    def seed(self) -> int:
        return int(getattr(self.workload, "seed", 0))

    @functools.cached_property
    def problem(self):
        """The dense GEMM batch of the layer (N = T); Unsupported for a point without one (conv)."""
        return self.point.problem()

    @functools.cached_property
    def pruned(self):
        """The point's `pruning.Pruned` (dense: ratio 0), shared by points of one layer shape."""
        return self.workload.pruned(self.point)

    @functools.cached_property
    def Npad(self) -> int:
        from cutlass_wsp.gpu.arrays import npad

        return npad(self.problem.N, self.dt)

    @functools.cached_property
    def X(self):
        """Fresh random X[L, c, Npad] on the GPU (storage dtype, pad columns 0)."""
        from cutlass_wsp.gpu import arrays

        pr = self.problem
        return arrays.padded_x(pr.L, pr.K, pr.N, self.dt)

    def choose(self, kernel: str, problem: Any, default: KernelDesc) -> tuple[KernelDesc, bool]:
        """(description, tuned): the tuned kernel of family `kernel` for `problem` when this run's
        choices have one, else `default`."""
        return choose_kernel(self.tuned, kernel, problem, self.dt.name, self.arch, lambda: default)


def choose_kernel(tuned: Any, kernel: str, problem: Any, dtype: str, arch: str,
                  default: Callable[[], KernelDesc]) -> tuple[KernelDesc, bool]:
    """(description, tuned?): the run's tuned choice (`tuned`: a kernels.store.TunedChoices, or None) of
    kernel family `kernel` for `problem`, else `default()`. What every family's kernel choice goes
    through; no file is read (the choices are a snapshot)."""
    found = tuned.lookup(kernel, problem, dtype, arch) if tuned is not None else None
    return (found, True) if found is not None else (default(), False)


def instance_kernel(fam: Any, desc: KernelDesc | None, tuned: Any) -> tuple[KernelDesc, bool]:
    """(kernel, tuned?) of a host family object (WspR, WspC, ...): `desc` when given (its `_check_desc`),
    else the run's tuned choice for its `tune_problem`, else its `_default_desc()`."""
    if desc is not None:
        return fam._check_desc(desc), False
    return choose_kernel(tuned, *fam.tune_problem, fam.dtype, fam.arch, fam._default_desc)


@dataclass(frozen=True)
class KernelPlan:
    """Which of our kernels a point launches (host-side answer of `Family.plan`)."""

    descs: tuple[KernelDesc, ...]             # every kernel it launches: compiled ahead of measuring
    kernel: str | None = None                 # the tunable launch's kernel family (None: none tunable)
    problem: Any = None                       # ... and its problem as the kernel sees it (the tune key)
    tuned: bool | None = None                 # the tunable launch runs a tuned kernel


# --------------------------------------------------------------------------------------- families
class Family:
    """Base of every family (module-level `FAMILY = MyFamily()`).

    name         unique, e.g. "dense", "wsp_r", "cublas"
    order        where its implementations come in a pattern's list (ours 0, baselines 100): the first
                 default implementation is what `cutlass-wsp bench` runs when none is named
    kernels      the kernel families this module owns (their templates are templates/<name>_<arch>.cu.j2)
    serves       the (pattern, implementation) points it runs
    """

    name: str = ""
    description: str = ""
    order: int = 0
    kernels: tuple["KernelFamily", ...] = ()
    serves: tuple[Serves, ...] = ()
    scope: str = GEMM      # what a row's median_ms times: the GEMM batch, or the whole layer (Op.scope)

    def serving(self, point: Any) -> Serves:
        """The `Serves` entry of a point's (pattern, impl)."""
        for s in self.serves:
            if (s.pattern, s.impl) == (point.pattern, point.impl):
                return s
        raise Unsupported(f"family {self.name} does not serve {point.pattern}/{point.impl}",
                          "ask the registry which family serves it (families.registry.serving)")

    def plan(self, ctx: PointContext) -> KernelPlan | None:
        """Host only: the kernels the point launches and its tunable launch; None for no kernel of ours."""
        return None

    def build(self, ctx: PointContext) -> Op:
        """Device: operands, launch, result and cost of the point (GPU)."""
        raise NotImplementedError(f"family {self.name} has no builder")

    def __repr__(self) -> str:
        return f"<family {self.name}>"


class PrunedFamily(Family):
    """A family whose points run one of our host objects with the families' life cycle (docs/families.md):
    construct on the host (checks, layout, kernel choice from this run's tuned choices), `setup()`,
    `output()`, `prepare(x, Y)`, `to_dense_output(Y)`, `kernel_descs`, `tune_problem` (or None) and
    `tuned`. Subclasses give `instance(ctx)` and `cost(ctx)`; `compact_rows`: the output holds only the
    kept filters' rows (FP, WSP-R: the row's kept_m, and the output transform's row map)."""

    compact_rows = False

    def instance(self, ctx: PointContext) -> Any:
        raise NotImplementedError

    def cost(self, ctx: PointContext) -> Cost:
        raise NotImplementedError

    def plan(self, ctx: PointContext) -> KernelPlan:
        fam = self.instance(ctx)
        found = getattr(fam, "tune_problem", None)
        kernel, problem = found if found is not None else (None, None)
        return KernelPlan(unique(fam.kernel_descs), kernel, problem, getattr(fam, "tuned", None) if kernel else None)

    def build(self, ctx: PointContext) -> Op:
        from cutlass_wsp.gpu import arrays

        fam = self.instance(ctx).setup(ctx.cache)
        x, channel_map = gemm_input(fam, ctx.X)
        Y = fam.output()
        pd = ctx.pruned
        kept = [int(k) for k in pd.kept_per_position]
        rows = self.compact_rows
        fields = dict(kept_m=kept if rows else None, kept_k=None if rows else kept,
                      nnz=int(pd.mask.sum()), kept_fraction=float(pd.mask.mean()))
        found = getattr(fam, "tune_problem", None)
        return Op(fam.prepare(x, Y), Y, lambda: arrays.to_float32(fam.to_dense_output(Y), ctx.dt),
                  names(fam.kernel_descs), self.cost(ctx),
                  {"mode": getattr(fam, "mode", None), "kernels": [kernel_config(d) for d in fam.kernel_descs]},
                  fields, rows=getattr(fam, "row_index", None) if rows else None, x=x, channel_map=channel_map,
                  tuned=getattr(fam, "tuned", None) if found is not None else None)


def gemm_input(fam: Any, X: Any) -> tuple[Any, Any]:
    """(the X a family's launch reads, the input transform's channel map or None). WSP-C xform reads the
    compact Xc the transform would write: gathered here from the point's X, outside the timed launch,
    so that the reference (masked dense weights times X) checks exactly X's kept rows."""
    if getattr(fam, "mode", None) != "xform":
        return X, None
    return fam.compact_input(X), fam.channel_map()


def kernel_config(desc: KernelDesc) -> dict:
    """A description as a row's kernel_config."""
    import dataclasses

    return dict(dataclasses.asdict(desc))


class KernelFamily:
    """A kernel family: one `KernelDesc.family` value and its templates `templates/<name>_<arch>.cu.j2`.

    Subclasses give the untuned `default`, the candidate menu (`recipes`, adapted to the default by
    `adapt`, filtered by `allows`), the `short` menu the budgeted default tune uses, the constraint
    `check` beyond `KernelDesc.validate`, the tune-problem type and `measure`, the tuner's GPU
    measurement of one candidate. `kernels/search.py` tunes anything with this shape (it imports no
    family)."""

    name: str = ""
    archs: tuple[str, ...] = ("sm90", "sm80")
    problem_type: type = object
    limit: int = MAX_CANDIDATES                # at most this many candidates per problem
    # The short menu (the budgeted tune of `sweep` and `bench`): per GPU kernel arch, for fp16/bf16, the
    # recipes that won on the H100 runs (results/tune-*-h100.jsonl), most wins first. An arch or dtype
    # without one tunes the first `short_limit` candidates of the full menu.
    short_recipes: dict[str, tuple[Recipe, ...]] = {}
    short_limit: int = 4                       # at most this many candidates per problem in the short menu
    tunable: bool = True
    # The sweep point (pattern, impl, balance) whose launch bench/tune_families.py tunes this kernel family
    # on (None: not there; the dense kernel has bench/tune_dense.py).
    bench_point: tuple[str, str, str] | None = None

    # ------------------------------------------------------------------------------ to override
    def default(self, problem: Any, dtype: str, arch: str) -> KernelDesc:
        raise NotImplementedError

    def recipes(self, problem: Any, dtype: str, arch: str, base: KernelDesc, sm_count: int) -> list[Recipe]:
        return []

    def adapt(self, recipe: Recipe, base: KernelDesc) -> KernelDesc | None:
        from cutlass_wsp.kernels.candidates import adapt

        return adapt(recipe, base)

    def allows(self, desc: KernelDesc, problem: Any) -> bool:
        return True

    def check(self, desc: KernelDesc) -> KernelDesc:
        """What the templates can build (raises Unsupported): validate() plus the family's own limits."""
        return desc.validate()

    def measure(self, dtype: str, cache: Any) -> Callable[[Any, KernelDesc, float], Any]:
        """The tuner's GPU measurement of one candidate: (problem, desc, budget_s) -> search.Trial."""
        raise Unsupported(f"no tuning measurement for kernel family {self.name!r}", "tune another family")

    # ------------------------------------------------------------------------------ the menus
    def check_problem(self, problem: Any) -> None:
        if not isinstance(problem, self.problem_type):
            want = self.problem_type.__name__
            raise InputError(f"a {self.name} tuning problem is a {want}, got {type(problem).__name__}",
                             f"pass {want}(...) (cutlass_wsp.problem) for family {self.name!r}")

    def candidates(self, problem: Any, dtype: str, arch: str, *, sm_count: int = DEFAULT_SM_COUNT,
                   limit: int | None = None, short: bool = False) -> list[KernelDesc]:
        """Descriptions to time for `problem` as the kernel sees it, the default first, deterministic
        order, each valid and allowed by the shape. `short`: only the default and the short menu's
        recipes (at most `short_limit`), what the budgeted tune of `sweep` / `bench` compiles."""
        self.check_problem(problem)
        limit = self.limit if limit is None else min(limit, self.limit)
        if limit < 1:
            raise Unsupported(f"candidate limit {limit}", "keep at least 1 candidate (the default)")
        base = self.default(problem, dtype, arch)
        full = menu(base, self.recipes(problem, dtype, arch, base, sm_count), lambda r: self.adapt(r, base),
                    lambda d: self.allows(d, problem), self.check, limit)
        if not short:
            return full
        recipes = self.short_recipes.get(arch) if dtype != "tf32" else None
        if recipes is None:
            return full[: self.short_limit]
        allowed = set(full)
        picked = [d for d in (self.adapt(r, base) for r in recipes) if d is not None and d in allowed and d != base]
        return [base, *dict.fromkeys(picked)][: self.short_limit]

    def __repr__(self) -> str:
        return f"<kernel family {self.name}>"


def explicit_warp(desc: KernelDesc | None) -> KernelDesc | None:
    """sm80: warp (0,0,0) and the 2x2 tile it stands for are one kernel (one name): write it out, so
    duplicates compare equal."""
    return None if desc is None else replace(desc, warp=desc.warp_shape())


def unique(descs: Iterable[KernelDesc]) -> tuple[KernelDesc, ...]:
    return tuple(dict.fromkeys(descs))


def names(descs: Sequence[KernelDesc]) -> str:
    return " + ".join(sorted({d.name for d in descs}))


# ------------------------------------------------------------------------- the tuner's measurement
class CandidateMeasure:
    """The tuner's measurement of one candidate (`KernelFamily.measure` returns one): load the built
    kernel, fresh random operands per call, then `gpu/harness.py` (poison, one checked run against an
    fp32 cuBLAS reference of exactly the stored operands, then `time_gpu` with an L2 flush between
    repetitions). Subclasses implement `__call__(problem, desc, budget_s) -> search.Trial` with `run`."""

    def __init__(self, dtype: str, cache: Any, *, warmup: int = 3, min_reps: int = 10, max_reps: int = 2000):
        from cutlass_wsp.gpu.device import require_gpu

        require_gpu()
        self.dtype = dtype
        self.cache = cache
        self.timing = dict(warmup=warmup, min_reps=min_reps, max_reps=max_reps)
        self._ref_gemm = None

    def load(self, desc: KernelDesc):
        """The kernel library (built already: a cache hit, then dlopen). A library that does not load is
        a KernelError whose reason starts 'load:' (status error)."""
        from cutlass_wsp.errors import CompileError, KernelError, WspError
        from cutlass_wsp.kernels.library import get_kernel

        try:
            return get_kernel(desc, self.cache)
        except CompileError:
            raise
        except WspError as e:
            raise KernelError(f"load: {e.problem}", e.fix) from None

    def reference(self, W, X):
        """fp32 cuBLAS of exactly the stored W [L, M, K] and X [L, K, N]: [L, M, N] float32."""
        from cutlass_wsp.gpu import arrays
        from cutlass_wsp.gpu.baselines import CublasBatched

        if self._ref_gemm is None:
            self._ref_gemm = CublasBatched("fp32")
        W32 = arrays.to_float32(W, self.dtype)
        X32 = arrays.to_float32(X, self.dtype)
        Y32 = arrays.empty((W.shape[0], W.shape[1], X.shape[2]), "fp32")
        self._ref_gemm.run(W32, X32, Y32)
        return Y32

    def run(self, desc: KernelDesc, launch: Callable[[], None], *, outputs: Any, reference: Any,
            check: Any, budget_s: float, result: Callable[[], Any] | None = None):
        """harness.bench, as a Trial."""
        from cutlass_wsp.gpu.harness import bench
        from cutlass_wsp.kernels.search import Trial

        m = bench(launch, outputs=outputs, result=result, reference=reference, check=check,
                  budget_s=budget_s, flush_l2=True, **self.timing)
        t = m.timing
        return Trial(desc, "ok", median_ms=t.median_ms, iqr_ms=t.iqr_ms, reps=t.reps, rel_error=m.rel_error)
