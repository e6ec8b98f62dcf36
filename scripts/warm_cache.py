"""Compile, here and ahead of a device call, every kernel the GPU tests, the default sweep and
bench/seeds_table.py need, so
the device starts warm (carry .cache/wsp). Run: python scripts/warm_cache.py [--arch sm90] [--jobs 2]"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "gpu"), str(ROOT / "tests")]


def gpu_test_descs(arch: str) -> set:
    import test_dense_gpu as td
    import test_families_gpu as tf

    descs = {d for d in td._descs().values() if d.arch == "sm80" or arch == "sm90"}
    for dtype, case_arch, layer, batch, ratios in tf.CASES:
        a = arch if case_arch == "native" else case_arch
        N, _ = tf._npad_T(layer, batch, dtype)
        for pattern, balance, _, pruned in tf._configs(layer, ratios):
            for _, vpattern, balances, make in tf.VARIANTS:
                if vpattern == pattern and balance in balances:
                    descs.update(make(pruned, dtype, N, a).kernel_descs)
    return {d for d in descs if d.arch == "sm80" or arch == "sm90"}


def planned_descs(points, arch: str) -> set:
    """The kernels `points` run untuned (the serving families' plans, host only)."""
    from cutlass_wsp.sweep.measure import Workload, planned_descs as planned

    return set(planned(points, Workload(0), arch))


def sweep_descs(arch: str) -> set:
    """Every kernel the default sweep's points run untuned."""
    from cutlass_wsp.sweep.plan import default_spec, expand

    return planned_descs(expand(default_spec()), arch)


def seeds_descs(arch: str) -> set:
    """Every kernel bench/seeds_table.py's points run untuned (BCBP's and the hybrid point's gather kernel)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import seeds_table

    return planned_descs(seeds_table.points(("vgg16", "resnet18"), 0.5, 0.74), arch)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="sm90")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--cache", default=str(ROOT / ".cache" / "wsp"))
    args = ap.parse_args()
    from cutlass_wsp.kernels.cache import KernelCache

    descs = sorted(gpu_test_descs(args.arch) | sweep_descs(args.arch) | seeds_descs(args.arch), key=lambda d: d.name)
    cache = KernelCache(args.cache)
    missing = [d for d in descs if cache.lookup(d) is None]
    print(f"{len(descs)} kernels, {len(missing)} to build: {[d.name for d in missing]}", flush=True)
    t = time.time()
    cache.compile_many(missing, jobs=args.jobs)
    print(f"built in {time.time() - t:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
