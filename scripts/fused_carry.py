"""The compile cache one generation-4 device call needs (scripts/fused_gen4_run.sh), built here and copied lean.

The device call carries the working tree and at most 64 MiB in all, and one fused kernel library is ~1.1 MB, so
the whole cache does not travel. This builds (here, no GPU) every kernel the call will ask for -- the generation-4
GPU tests (their parameter lists read from tests/gpu/test_fused_gpu.py), `bench/fused_layer.py time` with the
given options, and the fused config search's menu -- and copies them xz-compressed (scripts/carry_xz.py), fp16
first, into OUT/wsp/kernels up to --max-mb (~0.26 MB a kernel: all of them, as a rule); the rest is listed in
OUT/wsp/carry-missing.txt. scripts/device_run.sh unpacks them; `--device` builds what was left out, all cores at once,
into the cache in use, before the tests start:

    python scripts/fused_carry.py --pipes one,halves --scheds one,persistent --rmcasts 1,2 --gen5 --ratios 0.7  # here
    carry [".cache-carry", ".whl/nvidia_cutlass-4.2.0.0-py3-none-any.whl"], then on the device:
    rm -rf .cache && mv .cache-carry .cache && bash scripts/device_run.sh -- bash -c \\
      'python3 scripts/fused_carry.py --device <same options> && bash scripts/fused_gen4_run.sh <time options>'
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import fused_layer as fl  # noqa: E402  (bench/: its variant lists and argparse types)


def gpu_test_descs() -> list:
    """The generation-4 and -5 kernels of tests/gpu/test_fused_gpu.py (-k "gen4 or gen5"), from its own case lists and
    layout builders: its dense shapes and pruned cases for every WGMMA_GENS variant of generation 4, the wide filter
    blocks, the persistent walks, and generation 5's kernel per dtype, chunk width and tile order."""
    from cutlass_wsp.errors import Unsupported
    from cutlass_wsp.families import fused

    src = (ROOT / "tests" / "gpu" / "test_fused_gpu.py").read_text()
    ns: dict = {}
    exec(compile(src.replace('cp = pytest.importorskip("cupy")', "cp = None"), "test_fused_gpu", "exec"), ns)
    gens = {k: v for k, v in ns["WGMMA_GENS"].items() if k.startswith("gen4")}
    out = []

    def add(make, *a, **kw):
        try:
            out.append(make(*a, **kw))
        except Unsupported:   # the tests skip these (a variant for some layouts only)
            pass

    for dt in ("fp16", "bf16"):
        for kw in ns["GEN5_VARIANTS"]:   # generation 5's tests: dense and FP in blocks of 64, WSP-RB's full map in
            add(fused.cp_desc, dt, 64, **kw)   # 128 and 192, per variant
            for fb in (128, 192):
                add(fused.cp_desc, dt, 64, fb=fb, full_rows=True, **kw)
        for name, kw in gens.values():
            make = getattr(fused, name)
            add(make, dt, 32, fb=32, dense_map=True, **kw)   # every dense shape of the tests: MI = FB = 32
            for pattern, ratio, pkw in ns["PRUNED_CASES"]:
                lay = ns["pruned_layout"](pattern, ratio, pkw)
                add(make, dt, lay.mi, fb=32, dense_map=lay.identity, cmap=lay.pruned_chunks, **kw)
        for pattern, ratio, wide in ns["WIDE_CASES"]:
            lay, fb = ns["wide_layout"](pattern, ratio, wide)
            for kw in ns["WIDE_VARIANTS"]:
                add(fused.rs_desc, dt, lay.mi, fb=fb, full_rows=True, **kw)
        for kw in ns["PERSISTENT_VARIANTS"]:   # the persistent walks: dense, and the full map of WSP-RB / WSP-R
            add(fused.rs_desc, dt, 32, fb=32, dense_map=True, sched="persistent", **kw)
            for pattern, ratio, _, c, _, _ in ns["PERSISTENT_FULL_CASES"]:
                lay, fb = ns["wide_layout"](pattern, ratio, c=c, seed=11)
                add(fused.rs_desc, dt, lay.mi, fb=fb, full_rows=True, sched="persistent", **kw)
    return out


def bench_descs(args) -> list:
    from cutlass_wsp.families.fused import FusedTuneProblem, balanced_block, candidates_for, cp_desc, layout_for
    from cutlass_wsp.pruning import prune
    from cutlass_wsp.weights import he_winograd_weights

    ratios = [float(r) for r in args.ratios.split(",")]
    out = []
    for _, lay in fl.bench_layers(args.nets):
        out += [make().desc for _, _, make in fl.fused_variants(lay.c, lay.n, lay.H, lay.W, [4], "fp16", 32, ratios,
                                                                 [4, 5] if args.gen5 else [4], None, True,
                                                                 pipes=args.pipes, scheds=args.scheds,
                                                                 rmcasts=args.rmcasts, gen5_tags=args.gen5_tags)]
    lay = layout_for(prune(he_winograd_weights((128, 64), 4, seed=1), "dense", 0.0), 4, fb=64)   # the config search
    out += candidates_for(FusedTuneProblem.of(lay, 4, 28, 28), "fp16")[:5]
    for epi in args.stamps:   # the profiling builds `profile --gen5 --kc 32 --vpair --stamps [--epi5 E]` asks for
        out.append(cp_desc("fp16", 64, bc=32, fb=64, vpair=True, stamps=True, epi=None if epi == "plain" else epi))
    # `profile --gen5 --kc 32 --vpair --chunk-stamps --epi5 E [--sched S] [--producer light --xchg half] [--region
    # planes] [--ablate A]` (without options, also --refill late)
    for epi, sched, opts in args.chunk_stamps:
        kw = {k: v for o in opts for k, v in _chunk_stamp_opt(o).items()}
        for refill in (None,) if opts else (None, "late"):
            out.append(cp_desc("fp16", 64, bc=32, fb=64, vpair=True, epi=epi, sched=sched, chunk_stamps=True,
                               refill=refill, **kw))
    for build in args.item_stamps:   # `profile --gen5 --kc 32 --vpair --sched persistent --producer light --xchg half
        epi, _, rest = build.partition("-")   # --item-stamps --epi5 E [--stages5 2] [--pattern wsp-rb --gather push]`
        kw = dict(bc=32, vpair=True, epi=epi, sched="persistent", producer="light", xchg="half", item_stamps=True)
        if rest == "full":   # the full map of WSP-RB at the ratios, in the blocks `profile` takes per layer width
            for fb in sorted({balanced_block(r, lay.n, mi=64) for _, lay in fl.bench_layers(args.nets) for r in ratios}):
                out.append(cp_desc("fp16", 64, fb=fb, full_rows=True, gather="push", **kw))
        else:   # (profile ... --stages5 2, or --ablate A)
            out.append(cp_desc("fp16", 64, fb=64, stages=2 if rest == "s2" else None,
                               ablate=rest if rest and rest != "s2" else None, **kw))
    if args.sweep:   # the fused points scripts/fused_gen4_run.sh sweeps, and the sweep's GPU test points
        from cutlass_wsp.commands.sweep_options import from_args
        from cutlass_wsp.sweep.measure import Workload, planned_descs
        from cutlass_wsp.sweep.plan import Point, expand

        points = expand(from_args(["--net", "vgg16,resnet18", "--pattern", "conv,dense,fp,wsp-r,wsp-rb,wsp-cb",
                                   "--impl", "fused,cudnn", "--ratio", "0.5,0.7,0.9"]))
        points += [Point("resnet18", ("layer3.0.conv2",), 256, 256, 14, 14, 3, 4, "fp16", pat, "fused", r, b)
                   for pat, r, b in [("dense", None, None), ("fp", 0.5, None), ("wsp-r", 0.7, "balanced"),
                                     ("wsp-r", 0.7, "unbalanced"), ("wsp-rb", 0.7, None), ("wsp-rb", 0.9, None),
                                     ("wsp-cb", 0.5, None)]]
        out += planned_descs(points, Workload(0), "sm90")
    return out


def _stamp_epis(text: str) -> tuple:
    from cutlass_wsp.families.fused import CP_EPIS

    epis = tuple(e.strip() for e in text.split(",") if e.strip())
    bad = [e for e in epis if e != "plain" and e not in CP_EPIS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown epilogue {bad[0]!r}: use plain or one of {', '.join(CP_EPIS)}")
    return epis


def _chunk_stamp_builds(text: str) -> tuple:
    """'tma,tma-persistent-light-planes' -> (('tma', None, ()), ('tma', 'persistent', ('light', 'planes'))): the
    chunk-stamps builds per epilogue and schedule, with the sweep's producer and exchanges ('light': --producer light
    --xchg half) and the region in planes ('planes': --region planes)."""
    from cutlass_wsp.families.fused import CP_SCHEDS, CP_XS2BAR_EPIS

    out = []
    for tok in (t.strip() for t in text.split(",") if t.strip()):
        epi, *rest = tok.split("-")
        sched = rest.pop(0) if rest and rest[0] in CP_SCHEDS else None
        if epi not in CP_XS2BAR_EPIS or any(_chunk_stamp_opt(r) is None for r in rest):
            raise argparse.ArgumentTypeError(f"unknown chunk-stamps build {tok!r}: use EPI[-SCHED][-OPT...] with EPI in "
                                             f"{', '.join(CP_XS2BAR_EPIS)}, SCHED in {', '.join(CP_SCHEDS)} and OPT "
                                             f"in {', '.join(CHUNK_STAMP_OPTS)} or an ablation (CP_ABLATE_PARTS "
                                             "joined by '+')")
        out.append((epi, sched, tuple(rest)))
    return tuple(out)


CHUNK_STAMP_OPTS = {"light": dict(producer="light", xchg="half"), "planes": dict(region="planes")}


def _chunk_stamp_opt(tok: str) -> dict | None:
    """A chunk-stamps build's option: CHUNK_STAMP_OPTS, or an ablation (CP_ABLATE_PARTS joined by '+', or a name of
    CP_ABLATES: profile --ablate A); None if neither."""
    from cutlass_wsp.families.fused import Unsupported, ablation

    if tok in CHUNK_STAMP_OPTS:
        return CHUNK_STAMP_OPTS[tok]
    try:
        return dict(ablate=ablation(tok))
    except Unsupported:
        return None


ITEM_STAMP_BUILDS = ("wg", "wg-full", "tma", "tma-s2", "async")


def _item_stamp_builds(text: str) -> tuple:
    """'wg,tma-s2,tma-mma+weights' -> ('wg', 'tma-s2', 'tma-mma+weights'): the item-stamps builds (ITEM_STAMP_BUILDS:
    the epilogue, '-full' the full map of WSP-RB, '-s2' the 2-stage ring; 'tma-A' the tma one with an ablation A,
    CP_ABLATE_PARTS joined by '+' or a name of CP_ABLATES)."""
    got = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [t for t in got if t not in ITEM_STAMP_BUILDS
           and not (t.startswith("tma-") and "ablate" in (_chunk_stamp_opt(t[4:]) or {}))]
    if bad or not got:
        raise argparse.ArgumentTypeError(f"unknown item-stamps build {', '.join(bad) or '(none)'}: use one or more of "
                                         f"{', '.join(ITEM_STAMP_BUILDS)}, tma-ABLATION (CP_ABLATE_PARTS joined by "
                                         "'+'), comma-separated")
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / ".cache-carry"))
    ap.add_argument("--max-mb", type=float, default=41.0,
                    help="size of the carried (compressed) files (with the ~16 MB tree and the 6 MB wheel: "
                         "under 64 MiB)")
    ap.add_argument("--nets", default="vgg16,resnet18")
    ap.add_argument("--ratios", default="0.5,0.7,0.9")
    ap.add_argument("--pipes", type=fl._options("RS_PIPES"), default=("one",))
    ap.add_argument("--scheds", type=fl._options("RS_SCHEDS"), default=("one",))
    ap.add_argument("--rmcasts", type=fl._cluster_sizes, default=(1,))
    ap.add_argument("--gen5", action="store_true", help="generation 5 in the time step too (time --gen5)")
    ap.add_argument("--gen5-tags", type=fl._gen5_tags, default=None, help="generation 5's variants (time --gen5-tags)")
    ap.add_argument("--stamps", type=_stamp_epis, default=(),
                    help="generation 5's stamps builds (profile --stamps), per epilogue: plain and CP_EPIS, comma-separated")
    ap.add_argument("--chunk-stamps", type=_chunk_stamp_builds, default=(),
                    help="generation 5's chunk-stamps builds (profile --chunk-stamps), comma-separated EPI or "
                         "EPI-SCHED, each optionally followed by -light, -planes and an ablation (CP_ABLATE_PARTS "
                         "joined by '+', or a name of CP_ABLATES): tma, tma-persistent, async, "
                         "tma-persistent-light-planes, tma-light-mma+weights")
    ap.add_argument("--item-stamps", type=_item_stamp_builds, default=(),
                    help="generation 5's item-stamps builds (profile --item-stamps), comma-separated: "
                         + ", ".join(ITEM_STAMP_BUILDS) + ", tma-ABLATION (wg-full: WSP-RB's full map at --ratios; "
                         "ABLATION: CP_ABLATE_PARTS joined by '+', e.g. tma-mma+weights)")
    ap.add_argument("--sweep", action="store_true", help="the sweep's fused points too (fused_gen4_run.sh's sweep)")
    ap.add_argument("--device", action="store_true", help="on the device: build what is missing, all cores")
    ap.add_argument("--no-tests", action="store_true",
                    help="only the time step's (and --sweep's, --stamps') kernels, not the GPU tests'")
    ap.add_argument("--tests-match", default=None, metavar="TEXT[,TEXT...]",
                    help="only the GPU tests' kernels whose name holds one of the TEXTs (e.g. gatherpush,epiwg: the "
                         "push full map's and the warpgroup epilogue's), as the device call's TESTS_K selects them")
    ap.add_argument("--jobs", type=int, default=None)
    args = ap.parse_args()
    from cutlass_wsp.kernels.cache import KernelCache, default_cache

    match = None if args.tests_match is None else [t for t in args.tests_match.split(",") if t]
    tests = [] if args.no_tests else [d for d in gpu_test_descs() if match is None or any(t in d.name for t in match)]
    descs = list(dict.fromkeys(tests + bench_descs(args)))
    src = default_cache()
    missing = [d for d in descs if src.lookup(d) is None]
    print(f"{len(descs)} kernels, {len(missing)} to build", flush=True)
    src.compile_many(missing, jobs=args.jobs)
    if args.device:
        return 0
    dst = Path(args.out) / "wsp"
    shutil.rmtree(args.out, ignore_errors=True)
    (dst / "kernels").mkdir(parents=True)
    tuning = src.root / "tuning.json"
    if tuning.exists():
        shutil.copy(tuning, dst)
    # the commit the tree is copied from (the device gets no .git; scripts/device_run.sh reads .cache/git-commit)
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    (Path(args.out) / "git-commit").write_text((git or "unknown") + ("-dirty" if dirty else "") + "\n")
    # every library and source xz-compressed (~0.25 MB a kernel instead of ~1.05; scripts/carry_xz.py, unpacked by
    # scripts/device_run.sh), the small manifests as they are; fp16 first (the timed runs) while the budget lasts
    from concurrent.futures import ProcessPoolExecutor

    from carry_xz import pack, unpack

    left, used = [], 0
    with ProcessPoolExecutor(args.jobs or os.cpu_count()) as pool:
        for d in sorted(descs, key=lambda d: d.dtype != "fp16"):
            stem = src._stem(d, src.key(d))
            files = [f for f in src.kernels_dir.iterdir() if f.name.startswith(stem)]
            small = [f for f in files if f.suffix == ".json"]
            sizes = list(pool.map(pack, [f for f in files if f not in small], [dst / "kernels"] * len(files)))
            size = sum(sizes) + sum(f.stat().st_size for f in small)
            if used + size > args.max_mb * 1e6:
                for f in files:
                    (dst / "kernels" / (f.name + ".xz")).unlink(missing_ok=True)
                left.append(d.name)
                continue
            used += size
            for f in small:
                shutil.copy(f, dst / "kernels")
    (dst / "carry-missing.txt").write_text("".join(n + "\n" for n in left))
    # the copy as the device will read it: unpacked in a scratch folder, every carried kernel found and verified
    scratch = Path(args.out) / "check"
    shutil.copytree(dst, scratch / "wsp")
    unpack(scratch / "wsp" / "kernels")
    check = KernelCache(scratch / "wsp")
    lost = [d.name for d in descs if d.name not in left and check.lookup(d) is None]
    shutil.rmtree(scratch)
    if lost:   # their source changed since they were built (a template edited meanwhile): the copy is stale
        print(f"fused_carry: {len(lost)} kernels are not in the copy, e.g. {lost[0]} (a template changed while they "
              f"were built?): run it again", file=sys.stderr)
        return 2
    print(f"carried {len(descs) - len(left)} kernels ({used / 1e6:.1f} MB, xz) in {dst}; {len(left)} left to build "
          f"on the device (carry-missing.txt)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
