"""Pruned families on the GPU (every registry family with the host life cycle, every mode: today FP, WSP-R
(batched, padded, grouped), WSP-C (fused, two-pass, xform) and BCBP) on
every unique prunable 3x3 layer shape of VGG-16 and ResNet-18 (p = 4), batch 32 and 1, ratios 0.5, 0.7,
0.9, balanced and unbalanced, against a float32 product of the masked dense weights (as stored in the
kernel's dtype) and X, with poisoned outputs so an unwritten element fails. fp16 on every shape; bf16,
tf32 and the sm80 (CUTLASS 2.x) kernels on a subset. Every kernel is compiled up front."""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np
import pytest

from cutlass_wsp.errors import InputError, WspError
from cutlass_wsp.layers import layer_problem, resolve_layers, unique_shapes
from cutlass_wsp.pruning import prune
from cutlass_wsp.weights import he_winograd_weights

P = 4                                   # F(2x2, 3x3): L = 16 positions
BATCHES = (32, 1)
RATIOS = (0.5, 0.7, 0.9)
SUBSET_RATIOS = (0.5, 0.9)


def _layers():
    """One prunable layer per unique (c, n, H, W) of VGG-16 and ResNet-18 (conv1_1, c = 3, is never pruned)."""
    seen = {}
    for net in ("vgg16", "resnet18"):
        for shape, layers in unique_shapes(resolve_layers(net)).items():
            if layers[0].prunable and layers[0].is_winograd:
                seen.setdefault(shape, layers[0])
    return list(seen.values())


LAYERS = _layers()
SUBSET = [lay for lay in LAYERS if lay.shape in {(64, 128, 112, 112), (256, 256, 56, 56), (512, 512, 7, 7)}]


def _variants() -> list[tuple[str, str, tuple[str, ...], Callable[..., Any]]]:
    """(label, pruning pattern, balances, factory(pruned, dtype, N, arch)): every mode of every registry
    family with the families' host life cycle (families.base.PrunedFamily), on each balance its pruning
    has that the mode can run (a batched-only mode: balanced; the others: all, padded balanced included)."""
    from types import SimpleNamespace

    from cutlass_wsp.dtypes import get_dtype
    from cutlass_wsp.families import registry
    from cutlass_wsp.families.base import BALANCED_ONLY, PrunedFamily
    from cutlass_wsp.patterns import PATTERNS

    def factory(fam, serves):
        def make(pruned, dtype, N, arch):
            ctx = SimpleNamespace(point=SimpleNamespace(pattern=serves.pattern, impl=serves.impl), pruned=pruned,
                                  dt=get_dtype(dtype), Npad=N, arch=arch, tuned=None)
            return fam.instance(ctx)
        return make

    out: dict[tuple, tuple] = {}
    for fam in registry.families().values():
        if not isinstance(fam, PrunedFamily):
            continue
        for s in fam.serves:
            pruning = PATTERNS[s.pattern].prunes_as
            accepted = tuple(b for b in ("balanced", "unbalanced") if b in PATTERNS[pruning].balances)
            balances = ("balanced",) if s.balance == BALANCED_ONLY else accepted
            key = (fam.name, pruning, s.mode)
            prev = out.get(key)
            label = prev[0] if prev else (f"{s.pattern} {s.mode}" if s.mode else s.pattern)
            merged = tuple(dict.fromkeys((prev[2] if prev else ()) + balances))
            out[key] = (label, pruning, merged, prev[3] if prev else factory(fam, s))
    return list(out.values())


VARIANTS = _variants()


# (dtype, arch, layer, batch, ratios): fp16 on the GPU's own arch everywhere; the rest on the subset.
CASES = ([("fp16", "native", lay, b, RATIOS) for lay in LAYERS for b in BATCHES]
         + [(dt, "native", lay, b, SUBSET_RATIOS) for dt in ("bf16", "tf32") for lay in SUBSET for b in BATCHES]
         + [(dt, "sm80", lay, b, (0.7,)) for dt in ("fp16", "bf16") for lay in SUBSET[:2] for b in BATCHES])
IDS = [f"{dt}-{arch}-{lay.name}-b{b}" for dt, arch, lay, b, _ in CASES]


def _npad_T(layer, batch: int, dtype: str) -> tuple[int, int]:
    from cutlass_wsp.gpu.arrays import npad

    T = layer_problem(layer, batch, P).N
    return npad(T, dtype), T


def _weights(layer) -> np.ndarray:
    return he_winograd_weights(layer, P, seed=layer.c * 1000 + layer.n)


def _configs(layer, ratios):
    """(pattern, balance, ratio, Pruned) for every pruning the variants need, pruned once each."""
    W = _weights(layer)
    wanted = {}
    for _, pattern, balances, _ in VARIANTS:
        for balance in balances:
            wanted[(pattern, balance)] = None
    for (pattern, balance) in wanted:
        for r in ratios:
            yield pattern, balance, r, prune(W, pattern, r, balance=balance)


@pytest.fixture(scope="module")
def arch():
    from cutlass_wsp.families.wsp_r import resolve_arch

    return resolve_arch(None)


@pytest.fixture(scope="module")
def cache(compile_cache_dir, arch):
    """Every kernel the cases launch, compiled in parallel before the first case runs."""
    from cutlass_wsp.kernels.cache import KernelCache

    kc = KernelCache(compile_cache_dir)
    descs = {}
    for dtype, case_arch, layer, batch, ratios in CASES:
        a = arch if case_arch == "native" else case_arch
        N, _ = _npad_T(layer, batch, dtype)
        for pattern, balance, _, pruned in _configs(layer, ratios):
            for _, vpattern, balances, make in VARIANTS:
                if vpattern == pattern and balance in balances:
                    for d in make(pruned, dtype, N, a).kernel_descs:
                        descs[d] = None
    runnable = [d for d in descs if d.arch == "sm80" or arch == "sm90"]
    kc.compile_many(sorted(runnable, key=lambda d: d.name), jobs=os.cpu_count())
    return kc


@pytest.fixture(autouse=True)
def free_gpu_memory():
    yield
    import cupy

    cupy.get_default_memory_pool().free_all_blocks()


def _pad_rows(fam) -> np.ndarray | None:
    """bool [L, M]: rows of a compact WSP-R/FP output that are padding (row_index -1)."""
    idx = getattr(fam, "row_index", None)
    return None if idx is None else idx < 0


def _run_and_check(fam, X, ref, T: int, dtype: str, K: int, label: str, cache) -> None:
    """Poison the output, launch, compare the dense form with `ref` (raises WspError/AssertionError)."""
    import cupy

    from cutlass_wsp.gpu import arrays
    from cutlass_wsp.gpu.verify import check

    fam.setup(cache)
    if getattr(fam, "mode", None) == "xform":      # the operand the compact input transform writes
        X = fam.compact_input(X)
    out = arrays.poison(fam.output(), dtype)
    fam.run(X, out)
    cupy.cuda.get_current_stream().synchronize()
    dense = fam.to_dense_output(out)
    check(dense[..., :T], ref, dtype, label, K=K)
    vals = arrays.to_float32(dense[..., T:], dtype)
    assert not bool(cupy.any(vals != 0)), f"{label}: pad columns (zero columns of X) are not zero"
    pad = _pad_rows(fam)
    if pad is not None and pad.any():
        rows = arrays.to_float32(out, dtype)[cupy.asarray(pad)]
        if fam.mode == "grouped":      # group i writes only its n_i rows
            assert bool(cupy.all(cupy.isnan(rows))), f"{label}: grouped kernel wrote past a group's rows"
        else:                          # zero weight rows give zero output rows
            assert not bool(cupy.any(rows != 0)), f"{label}: padded rows are not zero"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_family_matches_masked_dense_reference(case, cache, arch):
    import cupy

    from cutlass_wsp.gpu import arrays

    dtype, case_arch, layer, batch, ratios = case
    a = arch if case_arch == "native" else case_arch
    N, T = _npad_T(layer, batch, dtype)
    L = P * P
    X = arrays.padded_x(L, layer.c, T, dtype, seed=layer.c + 7 * layer.n + batch)
    Xf = arrays.to_float32(X[..., :T], dtype)
    failures: list[str] = []
    runs = 0
    for pattern, balance, r, pruned in _configs(layer, ratios):
        Wd = arrays.to_float32(arrays.from_host(pruned.dense_weights(), dtype), dtype)   # as the kernel stores it
        ref = cupy.matmul(Wd, Xf)
        del Wd
        for label, vpattern, balances, make in VARIANTS:
            if vpattern != pattern or balance not in balances:
                continue
            what = f"{label} {dtype} {a} {layer.name} b{batch} r{r} {balance}"
            try:
                fam = make(pruned, dtype, N, a)
                if any(d.arch == "sm90" for d in fam.kernel_descs) and arch != "sm90":
                    continue
                _run_and_check(fam, X, ref, T, dtype, layer.c, what, cache)
                runs += 1
            except (WspError, AssertionError) as e:
                failures.append(f"{what}: {e}")
        del ref
    assert runs > 0 or failures, "no family ran"
    assert not failures, f"{len(failures)} of {runs + len(failures)} runs failed:\n" + "\n".join(failures)


# ------------------------------------------------------------------------------- host-side paths
def _small(pattern: str, balance: str = "balanced", ratio: float = 0.7):
    layer = next(lay for lay in LAYERS if lay.shape == (128, 128, 28, 28))
    return layer, prune(_weights(layer), pattern, ratio, balance=balance)


def test_launcher_is_reusable_and_follows_new_inputs(cache, arch):
    """prepare() once, call twice (what timing loops do); a new X gets a new result."""
    import cupy

    from cutlass_wsp.families.wsp_r import WspR
    from cutlass_wsp.gpu import arrays
    from cutlass_wsp.gpu.verify import check

    layer, pruned = _small("wsp-r", "unbalanced")
    N, T = _npad_T(layer, 4, "fp16")
    fam = WspR(pruned, "fp16", N, arch=arch, mode="grouped").setup(cache)
    Wd = arrays.to_float32(arrays.from_host(pruned.dense_weights(), "fp16"), "fp16")
    for seed in (1, 2):
        X = arrays.padded_x(16, layer.c, T, "fp16", seed=seed)
        out = arrays.poison(fam.output(), "fp16")
        launch = fam.prepare(X, out)
        launch()
        arrays.poison(out, "fp16")
        launch()                                       # the same launcher again
        cupy.cuda.get_current_stream().synchronize()
        ref = cupy.matmul(Wd, arrays.to_float32(X[..., :T], "fp16"))
        check(fam.to_dense_output(out)[..., :T], ref, "fp16", f"grouped launch, X seed {seed}", K=layer.c)


def test_two_pass_and_fused_run_on_a_side_stream(cache, arch):
    import cupy

    from cutlass_wsp.families.wsp_c import WspC
    from cutlass_wsp.gpu import arrays
    from cutlass_wsp.gpu.verify import check

    layer, pruned = _small("wsp-c", "unbalanced")
    N, T = _npad_T(layer, 8, "bf16")
    X = arrays.padded_x(16, layer.c, T, "bf16", seed=5)
    ref = cupy.matmul(arrays.to_float32(arrays.from_host(pruned.dense_weights(), "bf16"), "bf16"),
                      arrays.to_float32(X[..., :T], "bf16"))
    stream = cupy.cuda.Stream(non_blocking=True)
    for mode in ("fused", "two_pass"):
        fam = WspC(pruned, "bf16", N, arch=arch, mode=mode).setup(cache)
        out = arrays.poison(fam.output(), "bf16")
        fam.run(X, out, stream=stream)
        stream.synchronize()
        check(out[..., :T], ref, "bf16", f"wsp-c {mode} on a side stream", K=layer.c)


def test_xform_gemm_reads_the_compact_input(cache, arch):
    """WSP-C xform on a side stream: Wc . Xc with Xc from compact_input equals the masked-dense fp32
    product of the full X; a dense X is refused before launch (xform reads the compact Xc)."""
    import cupy

    from cutlass_wsp.families.wsp_c import WspC
    from cutlass_wsp.gpu import arrays
    from cutlass_wsp.gpu.verify import check

    # balanced: K < c, so a dense X has the wrong shape (unbalanced He weights keep all c somewhere)
    layer, pruned = _small("wsp-c", "balanced", 0.7)
    N, T = _npad_T(layer, 8, "fp16")
    X = arrays.padded_x(16, layer.c, T, "fp16", seed=9)
    ref = cupy.matmul(arrays.to_float32(arrays.from_host(pruned.dense_weights(), "fp16"), "fp16"),
                      arrays.to_float32(X[..., :T], "fp16"))
    fam = WspC(pruned, "fp16", N, arch=arch, mode="xform").setup(cache)
    Xc = fam.compact_input(X)
    cupy.cuda.get_current_stream().synchronize()       # the side stream does not wait for CuPy's stream
    assert Xc.shape == fam.input_shape == (16, fam.K, N) and fam.K < layer.c
    out = arrays.poison(fam.output(), "fp16")
    with pytest.raises(InputError, match="reads the compact Xc"):
        fam.prepare(X, out)
    stream = cupy.cuda.Stream(non_blocking=True)
    fam.run(Xc, out, stream=stream)
    stream.synchronize()
    err = check(out[..., :T], ref, "fp16", "wsp-c xform on a side stream", K=layer.c)
    assert err > 0                     # a computed product, not a copy of the reference


def test_bad_device_inputs_are_refused_before_launch(cache, arch):
    import cupy

    from cutlass_wsp.families.bcbp import Bcbp
    from cutlass_wsp.gpu import arrays

    layer, pruned = _small("bcbp")
    N, T = _npad_T(layer, 1, "fp16")
    fam = Bcbp(pruned, "fp16", N, arch=arch).setup(cache)
    X = arrays.padded_x(16, layer.c, T, "fp16", seed=3)
    out = arrays.poison(fam.output(), "fp16")
    with pytest.raises(InputError, match="has shape"):
        fam.run(X[:, :-1], out)
    with pytest.raises(InputError, match="holds float32"):
        fam.run(X, cupy.zeros(out.shape, cupy.float32))
    with pytest.raises(InputError, match="not a CuPy array"):
        fam.run(cupy.asnumpy(X), out)
    assert bool(cupy.all(cupy.isnan(arrays.to_float32(out, "fp16")))), "a refused problem was launched"
