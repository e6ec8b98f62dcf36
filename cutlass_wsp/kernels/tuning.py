"""Per-shape kernel search for the dense GEMM batch and the pruned families' kernels (gather_b for fused
WSP-C, wsp_r_grouped for unbalanced WSP-R), and the tuning cache that remembers the winners.

tune_many(problems, family=...) / tune_by_family({(family, dtype): problems}) compile the union of every
problem's candidates (kernels/candidates.py) once, in parallel; then, per problem and candidate: fresh
random operands, a NaN-poisoned output, one run, a check against an fp32 cuBLAS reference, and only
then a timing (CUDA events, L2 flushed between runs). A candidate that does not compile, load, run or
verify is recorded and never wins. The few fastest are timed once more, back to back, and the best of
that round wins (so one lucky first timing cannot).

The winner goes into `<compile cache root>/tuning.json`, keyed by GPU name, family, dtype, arch, the
problem as the kernel sees it (L, M, N, K with N = Npad; gather_b adds c, grouped a digest of the
per-group rows) and the nvcc and CUTLASS versions; `best_desc` / `tuned_or_default` read it back. The
file is replaced atomically (temp file + os.replace, under a lock file for read-modify-write); a
corrupt or foreign file reads as empty. See docs/tuning.md.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import math
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence, Union

from cutlass_wsp.errors import (InputError, KernelError, ToolchainError, Unsupported, VerificationError,
                                WspError)
from cutlass_wsp.kernels.candidates import (DEFAULT_SM_COUNT, GATHER_FAMILY, GROUPED_FAMILY, MAX_CANDIDATES,
                                            candidates, check_problem)
from cutlass_wsp.kernels.description import KernelDesc
from cutlass_wsp.kernels.manifest import select
from cutlass_wsp.problem import BatchProblem, GatherTuneProblem, GroupedTuneProblem

if TYPE_CHECKING:
    from cutlass_wsp.kernels.cache import KernelCache
    from cutlass_wsp.kernels.toolchain import Toolchain

STORE_NAME = "tuning.json"
STORE_FORMAT = 1
DEFAULT_BUDGET_S = 4.0          # timing seconds per problem, shared by its candidates
FIRST_ROUND_SHARE = 0.7         # of the budget; the rest re-times the `confirm` fastest
STATUSES = ("ok", "wrong", "compile_error", "load_error", "run_error", "error")

TuneProblem = Union[BatchProblem, GatherTuneProblem, GroupedTuneProblem]
"""What one family's kernel runs: dense BatchProblem, gather_b GatherTuneProblem, grouped GroupedTuneProblem."""


class TuningWarning(UserWarning):
    """The tuning cache file could not be read (corrupt, foreign): it was treated as empty."""


# ------------------------------------------------------------------------------------ results
@dataclass
class Trial:
    """One candidate measured once: `ok` (verified, then timed) or why not."""

    desc: KernelDesc
    status: str
    median_ms: float | None = None
    iqr_ms: float | None = None
    reps: int = 0
    rel_error: float | None = None
    error: str | None = None
    round: int = 0                        # 0 = every candidate; 1.. = re-timing of the fastest

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"trial status {self.status!r} is not one of {STATUSES}")
        if self.status == "ok" and (self.median_ms is None or not math.isfinite(self.median_ms)):
            raise ValueError(f"an ok trial of {self.desc.name} needs a finite median_ms")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.desc.name, "status": self.status, "median_ms": self.median_ms,
                "iqr_ms": self.iqr_ms, "reps": self.reps, "rel_error": self.rel_error, "error": self.error,
                "round": self.round}


@dataclass
class TuneResult:
    """The search over one problem: every trial, the default's time and the winner (None: none verified)."""

    problem: TuneProblem
    dtype: str
    arch: str
    default: KernelDesc
    best: KernelDesc | None
    best_ms: float | None
    default_ms: float | None
    trials: list[Trial] = field(default_factory=list)
    key: str | None = None                # tuning-cache key (None when no GPU name was known)
    recorded: bool = False                # written to the tuning cache
    family: str = "dense"

    @property
    def speedup_vs_default(self) -> float | None:
        if self.best_ms and self.default_ms:
            return self.default_ms / self.best_ms
        return None

    @property
    def chosen(self) -> KernelDesc:
        """What to run: the winner, else the default."""
        return self.best or self.default

    def to_dict(self) -> dict[str, Any]:
        p = self.problem
        shape = dict(p.key_fields(), **({"Ms": list(p.Ms)} if isinstance(p, GroupedTuneProblem) else {}))
        return {"family": self.family, **shape, "dtype": self.dtype, "arch": self.arch,
                "key": self.key, "default": self.default.name, "default_ms": self.default_ms,
                "best": self.best.name if self.best else None, "best_ms": self.best_ms,
                "best_desc": self.best.as_dict() if self.best else None,
                "speedup_vs_default": self.speedup_vs_default, "recorded": self.recorded,
                "trials": [t.to_dict() for t in self.trials]}


# ------------------------------------------------------------------------------------- the key
def key_fields(problem: TuneProblem, dtype: str, arch: str, *, gpu_name: str, toolchain: "Toolchain",
               family: str = "dense") -> dict[str, Any]:
    """What a tuned choice depends on: the GPU, the kernel family/dtype/arch, the exact problem (L, M, N,
    K; gather_b adds c, grouped 'Ms', a digest of the per-group rows), and the compiler and CUTLASS
    that built the kernels. `arch` is the GPU's kernel arch (gather_b kernels are sm80 code on sm90)."""
    check_problem(problem, family)
    return {"gpu": gpu_name, "family": family, "dtype": dtype, "arch": arch, **problem.key_fields(),
            "cutlass": toolchain.cutlass_version, "nvcc": toolchain.nvcc_version}


def tuning_key(problem: TuneProblem, dtype: str, arch: str, *, gpu_name: str, toolchain: "Toolchain",
               family: str = "dense") -> str:
    """e.g. 'gpu=NVIDIA H100 80GB HBM3|family=dense|dtype=fp16|arch=sm90|L=16|M=512|N=6272|K=512|cutlass=4.2.0|nvcc=13.0.88';
    gather_b: '...|K=160|c=512|...', wsp_r_grouped: '...|K=512|Ms=<12 hex digits>|...'."""
    fields = key_fields(problem, dtype, arch, gpu_name=gpu_name, toolchain=toolchain, family=family)
    return "|".join(f"{k}={v}" for k, v in fields.items())


@functools.lru_cache(maxsize=None)
def _gpu_name(device_id: int) -> str:
    import cupy

    name = cupy.cuda.runtime.getDeviceProperties(device_id)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def current_gpu_name() -> str | None:
    """Name of the current CUDA device, or None without a usable GPU."""
    from cutlass_wsp.gpu.device import gpu_status

    if not gpu_status()[0]:
        return None
    import cupy

    return _gpu_name(cupy.cuda.Device().id)


def current_sm_count() -> int | None:
    from cutlass_wsp.gpu.device import gpu_status

    if not gpu_status()[0]:
        return None
    import cupy

    return int(cupy.cuda.Device().attributes["MultiProcessorCount"])


# ----------------------------------------------------------------------------------- the store
class TuningStore:
    """The tuning cache: one JSON file {"format": 1, "entries": {key: entry}}. Writes replace the whole
    file atomically under an exclusive lock on `<file>.lock`, so concurrent tuners never lose each
    other's entries and a reader never sees half a file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser().resolve()
        self._parsed: tuple[tuple[int, int], dict[str, dict]] | None = None

    @classmethod
    def beside(cls, cache: "KernelCache") -> "TuningStore":
        """`tuning.json` in the compile cache's root (kernels and the choices among them live together)."""
        return cls(cache.root / STORE_NAME)

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def entries(self) -> dict[str, dict]:
        """Every entry; {} for a missing, unreadable or corrupt file (with a TuningWarning for the last)."""
        try:
            st = self.path.stat()
        except OSError:
            return {}
        sig = (st.st_mtime_ns, st.st_size)
        if self._parsed is not None and self._parsed[0] == sig:
            return dict(self._parsed[1])
        entries = self._read()
        self._parsed = (sig, entries)
        return dict(entries)

    def _read(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            warnings.warn(f"tuning cache {self.path} is unreadable ({type(e).__name__}); treated as empty",
                          TuningWarning, stacklevel=3)
            return {}
        if (not isinstance(data, dict) or data.get("format") != STORE_FORMAT
                or not isinstance(data.get("entries"), dict)):
            warnings.warn(f"tuning cache {self.path} is not a format-{STORE_FORMAT} tuning file; treated as "
                          "empty", TuningWarning, stacklevel=3)
            return {}
        return {k: v for k, v in data["entries"].items() if isinstance(k, str) and isinstance(v, dict)}

    def get(self, key: str) -> dict | None:
        return self.entries().get(key)

    def put(self, key: str, entry: dict) -> None:
        """Add or replace one entry (read, merge, atomic write, all under the lock)."""
        with self._locked():
            self._parsed = None
            entries = self.entries()
            entries[key] = entry
            self._write(entries)

    def remove(self, key: str) -> bool:
        with self._locked():
            self._parsed = None
            entries = self.entries()
            if entries.pop(key, None) is None:
                return False
            self._write(entries)
            return True

    def _write(self, entries: dict[str, dict]) -> None:
        text = json.dumps({"format": STORE_FORMAT, "entries": entries}, indent=1, sort_keys=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._parsed = None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:        # not POSIX: the atomic replace still keeps the file whole
            yield
            return
        with open(self.lock_path, "a") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


_stores: dict[Path, TuningStore] = {}


def _store_for(cache: "KernelCache | None", store: TuningStore | None) -> TuningStore:
    """The given store, else the one beside the cache (one object per file, so its parse is reused)."""
    if store is not None:
        return store
    path = (_cache_or_default(cache).root / STORE_NAME).resolve()
    if path not in _stores:
        _stores[path] = TuningStore(path)
    return _stores[path]


def _cache_or_default(cache: "KernelCache | None") -> "KernelCache":
    from cutlass_wsp.kernels.cache import default_cache

    return cache or default_cache()


# ------------------------------------------------------------------------------------- reading
def best_desc(problem: TuneProblem, dtype: str, arch: str, *, cache: "KernelCache | None" = None,
              store: TuningStore | None = None, gpu_name: str | None = None,
              family: str = "dense") -> KernelDesc | None:
    """The tuned kernel of `family` for this problem on this GPU with this toolchain, or None (not
    tuned, no GPU, no toolchain, or an entry this version cannot build)."""
    check_problem(problem, family)
    cache = _cache_or_default(cache)
    gpu_name = gpu_name or current_gpu_name()
    if gpu_name is None:
        return None
    try:
        key = tuning_key(problem, dtype, arch, gpu_name=gpu_name, toolchain=cache.toolchain, family=family)
    except ToolchainError:
        return None
    entry = _store_for(cache, store).get(key)
    if entry is None:
        return None
    try:
        desc = _buildable(KernelDesc.from_dict(entry["desc"]), family)
    except (KeyError, TypeError, ValueError, WspError):
        return None
    if (desc.family, desc.dtype) != (family, dtype):
        return None
    return desc


def _buildable(desc: KernelDesc, family: str) -> KernelDesc:
    """validate(), plus what the grouped templates add (check_grouped_desc)."""
    desc.validate()
    if family == GROUPED_FAMILY:
        from cutlass_wsp.families.wsp_r import check_grouped_desc

        check_grouped_desc(desc)
    return desc


def tuned_or_default(problem: BatchProblem, dtype: str, arch: str, cache: "KernelCache | None" = None, *,
                     store: TuningStore | None = None, gpu_name: str | None = None) -> KernelDesc:
    """The tuned dense kernel when the tuning cache has one for this GPU and toolchain, else
    `manifest.select`'s default. `problem` is what the kernel runs (N = Npad, K padded)."""
    return best_desc(problem, dtype, arch, cache=cache, store=store, gpu_name=gpu_name) or select(
        problem, dtype, arch)


# ----------------------------------------------------------------------------------- compiling
def _failure_summary(cache: "KernelCache", desc: KernelDesc) -> str | None:
    """First error of the kept nvcc log of a failed build (the cache names it <name>-<key16>.log)."""
    from cutlass_wsp.kernels.cache import describe_compile_error

    stem = f"{desc.name}-{cache.key(desc)[:16]}"
    log = cache.failed_dir / f"{stem}.log"
    try:
        text = log.read_text()
    except OSError:
        return None
    return describe_compile_error(text, cache.failed_dir / f"{stem}.cu").splitlines()[0][:500]


def compile_candidates(descs: Sequence[KernelDesc], cache: "KernelCache", *, jobs: int | None = None
                       ) -> tuple[dict[KernelDesc, Path], dict[KernelDesc, str]]:
    """Build every description (`jobs` nvcc at a time); ({desc: library}, {desc: why it failed}).
    A failed build does not stop the others; a missing toolchain does (nothing could build)."""
    unique = list(dict.fromkeys(descs))
    try:
        return dict(zip(unique, cache.compile_many(unique, jobs=jobs))), {}
    except ToolchainError:
        raise
    except WspError as first:
        built: dict[KernelDesc, Path] = {}
        failed: dict[KernelDesc, str] = {}
        for d in unique:
            path = cache.lookup(d)
            if path is not None:
                built[d] = path
            else:
                failed[d] = _failure_summary(cache, d) or first.problem.splitlines()[0]
        return built, failed


# ----------------------------------------------------------------------------------- measuring
Measure = Callable[[Any, KernelDesc, float], Trial]
"""measure(problem, desc, budget_s) -> Trial: verify on fresh data, then time (or raise)."""


class GpuMeasureBase:
    """What every family's measurement shares: load the built kernel, an fp32 cuBLAS reference of the
    exact stored operands, and verify-then-time (one checked run, then `time_gpu` with an L2 flush
    between repetitions). Subclasses build fresh random operands and a NaN-poisoned output per call."""

    family = ""

    def __init__(self, dtype: str, cache: "KernelCache", *, warmup: int = 3, min_reps: int = 10,
                 max_reps: int = 2000):
        from cutlass_wsp.gpu.device import require_gpu

        require_gpu()
        self.dtype = dtype
        self.cache = cache
        self.timing = dict(warmup=warmup, min_reps=min_reps, max_reps=max_reps)
        self._ref_gemm = None

    def load(self, desc: KernelDesc):
        """The kernel library (built already: a cache hit, then dlopen), or a load_error Trial."""
        from cutlass_wsp.kernels.library import get_kernel

        try:
            return get_kernel(desc, self.cache)
        except WspError as e:
            return Trial(desc, "load_error", error=str(e))

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

    def verify_then_time(self, desc: KernelDesc, launch: Callable[[], None], verify: Callable[[], float],
                         budget_s: float) -> Trial:
        """Run once, `verify()` the output (raises VerificationError; returns the relative error), and
        only then time `launch`."""
        import cupy

        from cutlass_wsp.gpu.timing import time_gpu

        launch()
        cupy.cuda.get_current_stream().synchronize()
        err = verify()
        t = time_gpu(launch, budget_s=budget_s, flush_l2=True, **self.timing)
        return Trial(desc, "ok", median_ms=t.median_ms, iqr_ms=t.iqr_ms, reps=t.reps, rel_error=err)


class GpuMeasure(GpuMeasureBase):
    """The dense batch: fresh random W and X, NaN-poisoned Y, one run checked against fp32 cuBLAS with
    the dtype's tolerance, then `time_gpu` with an L2 flush between repetitions."""

    family = "dense"

    def __call__(self, problem: BatchProblem, desc: KernelDesc, budget_s: float) -> Trial:
        from cutlass_wsp.families.dense import DenseBatch
        from cutlass_wsp.gpu import arrays
        from cutlass_wsp.gpu.verify import check

        L, M, N, K = problem.L, problem.M, problem.N, problem.K
        lib = self.load(desc)
        if isinstance(lib, Trial):
            return lib
        W = arrays.random((L, M, K), self.dtype)       # fresh values for every candidate
        X = arrays.random((L, K, N), self.dtype)
        Y = arrays.poison(arrays.empty((L, M, N), self.dtype), self.dtype)
        launch = DenseBatch(lib).prepare(W, X, Y)

        def verify() -> float:
            return check(Y, self.reference(W, X), self.dtype, desc.name, shape=(L, M, N, K), K=K)

        return self.verify_then_time(desc, launch, verify, budget_s)


class GatherMeasure(GpuMeasureBase):
    """Fused WSP-C (gather_b): per position one sorted random choice of K of the c rows of X_i (global
    rows i*c + column, as ColumnLayout.global_index), fresh random A[L, M, K] and X[L, c, N], a
    NaN-poisoned D; the reference is fp32 cuBLAS of A times the gathered rows of X."""

    family = GATHER_FAMILY

    def __call__(self, problem: GatherTuneProblem, desc: KernelDesc, budget_s: float) -> Trial:
        import cupy
        import numpy as np

        from cutlass_wsp.families.gather import GatherGemm, GatherProblem, random_global_index
        from cutlass_wsp.gpu import arrays
        from cutlass_wsp.gpu.verify import check

        L, M, N, K, c = problem.L, problem.M, problem.N, problem.K, problem.c
        lib = self.load(desc)
        if isinstance(lib, Trial):
            return lib
        index = cupy.asarray(random_global_index(L, c, K, np.random.default_rng()).reshape(-1))
        A = arrays.random((L, M, K), self.dtype)
        X = arrays.random((L, c, N), self.dtype)
        D = arrays.poison(arrays.empty((L, M, N), self.dtype), self.dtype)
        gemm = GatherGemm(lib, GatherProblem(L, M, N, K, a_batch_stride=M * K, d_batch_stride=M * N), A, index,
                          x_rows=L * c)
        launch = gemm.prepare(X, D)

        def verify() -> float:
            Xg = X.reshape(L * c, N)[index].reshape(L, K, N)          # the rows the kernel gathers
            return check(D, self.reference(A, Xg), self.dtype, desc.name, shape=(L, M, N, K), K=K)

        return self.verify_then_time(desc, launch, verify, budget_s)


class GroupedMeasure(GpuMeasureBase):
    """Unbalanced WSP-R (grouped): fresh random packed weights A[sum M_i, K] and X[L, K, N], a
    NaN-poisoned compact D[L, max M_i, N]; each group's M_i rows are checked against fp32 cuBLAS of
    A_i . X_i (its pad rows are never written and not compared)."""

    family = GROUPED_FAMILY

    def __call__(self, problem: GroupedTuneProblem, desc: KernelDesc, budget_s: float) -> Trial:
        from cutlass_wsp.families.wsp_r import GroupedRows
        from cutlass_wsp.gpu import arrays
        from cutlass_wsp.gpu.verify import check

        Ms, L, M, N, K = problem.Ms, problem.L, problem.M, problem.N, problem.K
        lib = self.load(desc)
        if isinstance(lib, Trial):
            return lib
        A = arrays.random((sum(Ms), K), self.dtype)
        X = arrays.random((L, K, N), self.dtype)
        D = arrays.poison(arrays.empty((L, M, N), self.dtype), self.dtype)
        grouped = GroupedRows(lib, Ms, K=K, N=N, weights=A)
        launch = grouped.prepare(X, D)

        def verify() -> float:
            W = arrays.zeros((L, M, K), self.dtype)                  # A's groups, zero pad rows
            for i, (start, m) in enumerate(zip(grouped.offsets, Ms)):
                W[i, :m] = A[start:start + m]
            ref = self.reference(W, X)
            return max(check(D[i:i + 1, :m], ref[i:i + 1, :m], self.dtype, f"{desc.name} group {i}",
                             shape=(m, N, K), K=K) for i, m in enumerate(Ms))

        return self.verify_then_time(desc, launch, verify, budget_s)


MEASURES: dict[str, type[GpuMeasureBase]] = {m.family: m for m in (GpuMeasure, GatherMeasure, GroupedMeasure)}


def default_measure(family: str, dtype: str, cache: "KernelCache") -> Measure:
    """The GPU measurement of `family` (needs a GPU)."""
    if family not in MEASURES:
        raise Unsupported(f"no tuning measurement for family {family!r}", f"tune one of {', '.join(MEASURES)}")
    return MEASURES[family](dtype, cache)


def _measure_safely(measure: Measure, problem: BatchProblem, desc: KernelDesc, budget_s: float,
                    round_: int) -> Trial:
    """A Trial whatever happens: wrong output, a refused or failed launch, anything else."""
    try:
        trial = measure(problem, desc, budget_s)
    except VerificationError as e:
        trial = Trial(desc, "wrong", error=str(e))
    except (KernelError, Unsupported, InputError) as e:
        trial = Trial(desc, "run_error", error=str(e))
    except Exception as e:  # e.g. out of memory: recorded, and the search goes on
        trial = Trial(desc, "error", error=f"{type(e).__name__}: {e}")
    trial.round = round_
    return trial


def choose(trials: Sequence[Trial]) -> tuple[KernelDesc | None, float | None]:
    """Winner among verified trials: candidates re-timed in a later round are ranked by their latest
    round alone (timed back to back); a candidate that failed in any round is out."""
    failed = {t.desc for t in trials if not t.ok}
    last_round = max((t.round for t in trials if t.ok), default=0)
    pool = [t for t in trials if t.ok and t.desc not in failed and t.round == last_round]
    if not pool:
        return None, None
    best = min(pool, key=lambda t: (t.median_ms, t.round))
    return best.desc, best.median_ms


# -------------------------------------------------------------------------------------- tuning
def tune_by_family(requests: Mapping[tuple[str, str], Sequence[TuneProblem]], arch: str, *,
                   cache: "KernelCache | None" = None, store: TuningStore | None = None,
                   budget_s: float = DEFAULT_BUDGET_S, jobs: int | None = None, sm_count: int | None = None,
                   limit: int = MAX_CANDIDATES, confirm: int = 3, measure: Measure | None = None,
                   gpu_name: str | None = None, record: bool = True,
                   progress: Callable[[str], None] | None = None) -> dict[tuple[str, str], list[TuneResult]]:
    """Tune {(family, dtype): problems} (as the kernels see them: N = Npad, K padded). The union of all
    candidate sets of all families is compiled once (`jobs` nvcc at a time); each problem then gets
    `budget_s` seconds of timing. `measure` defaults to each family's GPU measurement (GpuMeasure,
    GatherMeasure, GroupedMeasure; needs a GPU); `record` writes winners to the tuning cache."""
    if budget_s <= 0 or confirm < 0:
        raise InputError(f"budget_s={budget_s}, confirm={confirm}", "use budget_s > 0 and confirm >= 0")
    cache = _cache_or_default(cache)
    say = progress or (lambda _msg: None)
    for (family, _dtype), problems in requests.items():
        for p in problems:
            check_problem(p, family)
    if measure is None:     # made first: no GPU fails here, before minutes of nvcc
        measures = {key: default_measure(key[0], key[1], cache) for key in requests}
        gpu_name = gpu_name or current_gpu_name()
        sm_count = sm_count or current_sm_count()
    else:
        measures = {key: measure for key in requests}
    sm_count = sm_count or DEFAULT_SM_COUNT
    store = _store_for(cache, store) if record else store

    sets = {key: [candidates(p, key[1], arch, family=key[0], sm_count=sm_count, limit=limit) for p in problems]
            for key, problems in requests.items()}
    union = list(dict.fromkeys(d for per_problem in sets.values() for s in per_problem for d in s))
    count = sum(len(p) for p in requests.values())
    say(f"compiling {len(union)} candidate kernels for {count} problems")
    built, failed = compile_candidates(union, cache, jobs=jobs)
    for d, why in failed.items():
        say(f"  compile failed: {d.name}: {why}")

    results: dict[tuple[str, str], list[TuneResult]] = {}
    for (family, dtype), problems in requests.items():
        results[(family, dtype)] = [
            _tune_one(problem, dtype, arch, descs, failed, family=family, cache=cache, store=store,
                      budget_s=budget_s, confirm=confirm, measure=measures[(family, dtype)], gpu_name=gpu_name,
                      record=record, say=say)
            for problem, descs in zip(problems, sets[(family, dtype)])]
    return results


def tune_many(problems: Sequence[TuneProblem], dtype: str, arch: str, *, family: str = "dense",
              **kw: Any) -> list[TuneResult]:
    """Tune each problem of one family (dense BatchProblem, gather_b GatherTuneProblem, wsp_r_grouped
    GroupedTuneProblem); the options are tune_by_family's."""
    return tune_by_family({(family, dtype): list(problems)}, arch, **kw)[(family, dtype)]


def tune(problem: TuneProblem, dtype: str, arch: str, *, cache: "KernelCache | None" = None,
         budget_s: float = DEFAULT_BUDGET_S, **kw: Any) -> TuneResult:
    """Tune one problem; see tune_many for the options."""
    return tune_many([problem], dtype, arch, cache=cache, budget_s=budget_s, **kw)[0]


def _tune_one(problem: TuneProblem, dtype: str, arch: str, descs: list[KernelDesc],
              failed: dict[KernelDesc, str], *, family: str, cache: "KernelCache", store: TuningStore | None,
              budget_s: float, confirm: int, measure: Measure, gpu_name: str | None, record: bool,
              say: Callable[[str], None]) -> TuneResult:
    runnable = [d for d in descs if d not in failed]
    trials = [Trial(d, "compile_error", error=failed[d]) for d in descs if d in failed]
    first = budget_s * (FIRST_ROUND_SHARE if confirm else 1.0) / max(len(runnable), 1)
    say(f"{problem}: {len(runnable)} candidates ({len(descs) - len(runnable)} did not compile)")
    for d in runnable:
        t = _measure_safely(measure, problem, d, first, 0)
        trials.append(t)
        say(f"  {d.name}: " + (f"{t.median_ms * 1e3:.1f} us" if t.ok else f"{t.status}: {t.error}"))
    # Round 1: the fastest few again, back to back, so one lucky first timing cannot win.
    verified = sorted((t for t in trials if t.ok), key=lambda t: t.median_ms)
    finalists = [t.desc for t in verified[:confirm]] if len(verified) > 1 else []
    for d in finalists:
        trials.append(_measure_safely(measure, problem, d, budget_s * (1 - FIRST_ROUND_SHARE) / len(finalists), 1))
    best, best_ms = choose(trials)
    default = descs[0]
    default_ms = min((t.median_ms for t in trials if t.ok and t.desc == default and
                      t.round == (1 if default in finalists else 0)), default=None)
    key = None
    if gpu_name is not None:
        key = tuning_key(problem, dtype, arch, gpu_name=gpu_name, toolchain=cache.toolchain, family=family)
    result = TuneResult(problem, dtype, arch, default, best, best_ms, default_ms, trials, key, family=family)
    if record and best is not None and key is not None and store is not None:
        store.put(key, _entry(result, gpu_name, cache))
        result.recorded = True
    if best is not None:
        sp = result.speedup_vs_default
        say(f"  best {best.name}: {best_ms * 1e3:.1f} us" + (f" ({sp:.2f}x the default)" if sp else ""))
    else:
        say("  no candidate verified; the default stays")
    return result


def _entry(result: TuneResult, gpu_name: str, cache: "KernelCache") -> dict[str, Any]:
    best = result.best
    assert best is not None
    ok = [t for t in result.trials if t.ok and t.desc == best]
    return {
        "key_fields": key_fields(result.problem, result.dtype, result.arch, gpu_name=gpu_name,
                                 toolchain=cache.toolchain, family=result.family),
        "name": best.name, "desc": best.as_dict(), "median_ms": result.best_ms,
        "iqr_ms": ok[-1].iqr_ms if ok else None, "rel_error": ok[-1].rel_error if ok else None,
        "default": result.default.name, "default_ms": result.default_ms,
        "speedup_vs_default": result.speedup_vs_default,
        "candidates": len({t.desc for t in result.trials}),
        "verified": len({t.desc for t in result.trials if t.ok}),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
