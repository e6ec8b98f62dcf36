"""The fused Winograd layer on the GPU: verify every variant, then time it beside cuDNN in the same run.

    python bench/fused_layer.py verify              # correctness matrix (odd H x W, batch 1, 3, 32; p = 4, 6;
                                                    # fp16, bf16; dense against direct conv and the fp32
                                                    # unfused pipeline, pruned forms against the latter)
    python bench/fused_layer.py time [--nets vgg16,resnet18] [--out rows.jsonl]
                                                    # per layer (c >= 64, batch 32, fp16): cuDNN, fused dense
                                                    # p = 4 and 6 (each config verified first), fused WSP-R,
                                                    # WSP-RB and FP at 0.5 / 0.7 / 0.9, and the fused floor
                                                    # (--gen4: WSP-CB too, with the kernel's chunk map)
    python bench/fused_layer.py bound rows.jsonl --chunk-us 0.747
                                                    # generation 5's mainloop alone per layer (no GPU): its
                                                    # waves x chunks x the stamps' chunk, against cuDNN
Prints a table last; writes one JSON row per measurement with --out. See docs/fused.md.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cutlass_wsp.families.fused import (CP_EPIS, CP_GATHERS, CP_JOINS, CP_PRODUCERS, CP_REFILLS,  # noqa: E402
                                        CP_REGIONS, CP_STAGES, CP_STORES, CP_XCHGS, balanced_block, cp_desc,
                                        fused_desc, kernel_pad_waste, layout_for, pair_desc, rs_desc,
                                        wide_filter_block, ws_desc)
from cutlass_wsp.errors import InputError, KernelError, WspError, exit_now, is_sticky  # noqa: E402
from cutlass_wsp.gpu.device import require_gpu  # noqa: E402  (light: CuPy imported inside)
from cutlass_wsp.layers import resolve_layers  # noqa: E402
from cutlass_wsp.pruning import WSP_CB_BLOCK, kept_count, prune  # noqa: E402
from cutlass_wsp.winograd import direct_conv2d, filter_transform  # noqa: E402

def spatial_filters(n: int, c: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, c, 3, 3)) * np.sqrt(2.0 / (9 * c))).astype(np.float32)


# generation 5's variants in `time` and `verify`: (tag, Case's options: channels a chunk, vertical tile pairs,
# mainloop pipeline, epilogue, raw-ring depth: "-s2" a ring of 2 stages, the depth a kernel that keeps its epilogue's
# shared memory apart from its rings could have; "-persist" the persistent pair)
GEN5_TAGS = (("gen5", dict(kc=16)), ("gen5-k32", dict(kc=32)), ("gen5-k32-vpair", dict(kc=32, vpair=True)),
             ("gen5-k32-vpair-halves", dict(kc=32, vpair=True, pipe="halves")),
             ("gen5-k32-vpair-lean", dict(kc=32, vpair=True, epi="lean")),
             ("gen5-k32-vpair-early", dict(kc=32, vpair=True, epi="early")),
             ("gen5-k32-vpair-async", dict(kc=32, vpair=True, epi="async")),
             ("gen5-k32-vpair-tma", dict(kc=32, vpair=True, epi="tma")),
             ("gen5-k32-vpair-tma-s2", dict(kc=32, vpair=True, epi="tma", stages=2)),
             ("gen5-k32-vpair-persist", dict(kc=32, vpair=True, epi="async", sched="persistent")),
             ("gen5-k32-vpair-tma-persist", dict(kc=32, vpair=True, epi="tma", sched="persistent")),
             # "-late": the weight refill after the chunk's products are issued; "-table": (persistent) the next
             # item's tile table during the item's first chunk (docs/fused.md, sixth session)
             ("gen5-k32-vpair-tma-late", dict(kc=32, vpair=True, epi="tma", refill="late")),
             ("gen5-k32-vpair-tma-persist-late", dict(kc=32, vpair=True, epi="tma", sched="persistent", refill="late")),
             ("gen5-k32-vpair-tma-persist-late-table", dict(kc=32, vpair=True, epi="tma", sched="persistent",
                                                            refill="late", table="early")),
             # "-light": the raw ring's producer in the warpgroup whose column loads without bank conflicts
             ("gen5-k32-vpair-tma-light", dict(kc=32, vpair=True, epi="tma", producer="light")),
             ("gen5-k32-vpair-tma-persist-light", dict(kc=32, vpair=True, epi="tma", sched="persistent",
                                                       producer="light")),
             # "-split": half of the producer in each warpgroup
             ("gen5-k32-vpair-tma-split", dict(kc=32, vpair=True, epi="tma", producer="split")),
             ("gen5-k32-vpair-tma-persist-split", dict(kc=32, vpair=True, epi="tma", sched="persistent",
                                                       producer="split")),
             # "-half": the epilogue's exchanges in the layer's 16-bit type (with the light producer)
             ("gen5-k32-vpair-tma-light-half", dict(kc=32, vpair=True, epi="tma", producer="light", xchg="half")),
             ("gen5-k32-vpair-tma-persist-light-half", dict(kc=32, vpair=True, epi="tma", sched="persistent",
                                                            producer="light", xchg="half")),
             # "-wg": the epilogue in a warpgroup of its own under the next item's chunks (eighth session: built
             # without a GPU)
             ("gen5-k32-vpair-wg-persist-light-half", dict(kc=32, vpair=True, epi="wg", sched="persistent",
                                                           producer="light", xchg="half")),
             # "-gather": the full map (WSP-RB) with its epilogue's loads batched; "-push": each rank's tiles with all
             # 16 positions local, the partner's part sent by st.async; their own form only
             ("gen5-k32-vpair-gather", dict(kc=32, vpair=True, gather="batched")),
             ("gen5-k32-vpair-push", dict(kc=32, vpair=True, gather="push")),
             # the push gather with ms in the 16-bit type ("-half"), with the producer in the conflict-free warpgroup
             # ("-light"), both (docs/fused.md, eighth session: built without a GPU)
             ("gen5-k32-vpair-push-half", dict(kc=32, vpair=True, gather="push", xchg="half")),
             ("gen5-k32-vpair-push-light", dict(kc=32, vpair=True, gather="push", producer="light")),
             ("gen5-k32-vpair-push-light-half", dict(kc=32, vpair=True, gather="push", producer="light", xchg="half")),
             # ... and the pair's joins split and relaxed ("-relaxed")
             ("gen5-k32-vpair-push-light-half-relaxed", dict(kc=32, vpair=True, gather="push", producer="light",
                                                             xchg="half", join="relaxed")),
             # ... and the stores with one branch a tile ("-fast")
             ("gen5-k32-vpair-push-light-half-relaxed-fast", dict(kc=32, vpair=True, gather="push", producer="light",
                                                                  xchg="half", join="relaxed", stores="fast")),
             # the full map's epilogue in a warpgroup of its own, persistent ("-wg-persist")
             ("gen5-k32-vpair-push-light-half-wg-persist", dict(kc=32, vpair=True, gather="push", producer="light",
                                                                xchg="half", epi="wg", sched="persistent")),
             # "-planes": the region's columns in two planes by parity, so no column's loads have the bank conflict
             # (tenth session: built without a GPU); the sweep's defaults with it
             ("gen5-k32-vpair-tma-light-half-planes", dict(kc=32, vpair=True, epi="tma", producer="light", xchg="half",
                                                           region="planes")),
             ("gen5-k32-vpair-tma-persist-light-half-planes", dict(kc=32, vpair=True, epi="tma", sched="persistent",
                                                                   producer="light", xchg="half", region="planes")),
             ("gen5-k32-vpair-push-light-half-relaxed-fast-planes", dict(kc=32, vpair=True, gather="push",
                                                                         producer="light", xchg="half", join="relaxed",
                                                                         stores="fast", region="planes")))


class Case:
    """One fused layer: its layout and kernel (host, `Case(...)`), then on the GPU (`ready()`) its input,
    output and launcher. `pruned` holds the (masked) Winograd weights the kernel stands for; `cp_opts`, generation
    5's own options, go to cp_desc as they are (chunk_stamps, refill, table, producer, xchg, gather)."""

    def __init__(self, pruned, p: int, dtype: str, batch: int, H: int, W: int, *, fb: int = 32,
                 mi: int | None = None, bt: int | None = None, stages: int | None = None, gen: int = 1,
                 warps: int | None = None, mcast: int = 1, epi: str | None = None, full: bool | None = None,
                 pipe: str | None = None, sched: str | None = None, rmcast: int = 1, kc: int = 16,
                 vpair: bool = False, stamps: bool = False, **cp_opts):
        self.p, self.dtype, self.batch, self.H, self.W = p, dtype, batch, H, W
        self.pruned = pruned
        self.layout = layout_for(pruned, p, fb=fb, mi=mi)
        if gen in (3, 4):   # warp-specialized wgmma (p = 4): FB 32 layouts (MI <= 32), BT 64
            # generation 4 skips pruned channel blocks (WSP-CB) with its chunk map; other kernels multiply their zeros
            # generation 4's row layouts: the unbranched "full" map where every row tile is filled (WSP-RB), or
            # where asked (`full`: multiply the padding rather than branch per position)
            lay = self.layout
            full = (lay.full_rows if full is None else full) and not lay.identity
            kw = {} if gen == 3 else {"mcast": mcast, **({"epi": epi} if lay.identity and epi else {}),
                                      **({"cmap": True} if lay.pruned_chunks else {}),
                                      **({"full_rows": True} if full else {}), **({"pipe": pipe} if pipe else {}),
                                      **({"sched": sched} if sched else {}),
                                      **({"rmcast": rmcast} if rmcast > 1 else {})}
            self.desc = (ws_desc if gen == 3 else rs_desc)(dtype, self.layout.mi, fb=fb, stages=stages,
                                                           dense_map=self.layout.identity, **kw)
        elif gen == 5:   # the wgmma cluster pair splitting V's columns, kc channels a chunk: the dense map (N = FB), or
            # the full map for row-pruned layouts (N = MI packed rows per position for FB filters)
            self.desc = cp_desc(dtype, self.layout.mi, stages=stages, bc=kc, fb=fb,
                                full_rows=not self.layout.identity, vpair=vpair, pipe=pipe, stamps=stamps,
                                epi=epi, sched=sched, **cp_opts)   # chunk_stamps, refill, table, producer, xchg, gather
        elif gen == 2:   # the cluster pair (p = 4): tile BT 64 by default
            if warps is None:   # 16 warps (two per position) where the rows split in whole m16 tiles
                warps = 16 if self.layout.mi % 32 == 0 else 8
            self.desc = pair_desc(dtype, self.layout.mi, fb=fb, bt=bt or 64, stages=stages or 3,
                                  dense_map=self.layout.identity, warps=warps)
        else:
            self.desc = fused_desc(dtype, p, self.layout.mi, bt=bt, fb=fb, stages=stages)

    def ready(self, cache=None) -> "Case":
        """The whole-layer op (families/fused.layer_op): fresh input, output, fp32 unfused reference."""
        from cutlass_wsp.families.fused import layer_op

        self.op = layer_op(self.layout, self.dtype, self.desc, self.batch, self.H, self.W, cache, f"fused {self.name}")
        self.launch = self.op.launch
        return self

    @property
    def name(self) -> str:
        return self.desc.name


def verify(case: Case) -> float:
    """Poison, run, compare with the fp32 unfused pipeline (same packed weights): the harness's check."""
    from cutlass_wsp.gpu.harness import bench

    op = case.op
    return bench(op.launch, outputs=op.out, result=op.result, reference=op.reference, check=op.check,
                 budget_s=0.001, min_reps=1, max_reps=1, warmup=0).rel_error


def verify_direct(case: Case, g: np.ndarray) -> float:
    """Dense only: the output against float64 direct convolution with the spatial filters g."""
    from cutlass_wsp.gpu import arrays
    from cutlass_wsp.gpu.verify import check

    from cutlass_wsp.gpu.verify import layer_rtol

    d = arrays.to_host_float32(case.op.x, case.dtype).transpose(0, 3, 1, 2)  # NCHW float32
    ref = direct_conv2d(d, g).transpose(0, 2, 3, 1)                              # NHWC float64
    return check(arrays.to_host_float32(case.op.out, case.dtype), ref, case.dtype, f"fused {case.name} vs direct",
                 shape=case.op.out.shape, K=9 * case.layout.c, rtol=layer_rtol(case.dtype, case.p, case.layout.c))


def dense_pruned(g: np.ndarray, p: int):
    """A dense `Pruned` whose weights are the filter transform of g."""
    return prune(filter_transform(g.astype(np.float64), p - 2).astype(np.float32), "dense", 0.0)


# ------------------------------------------------------------------------------------------ verify
VERIFY_SHAPES = [  # batch, c, n, H, W
    (1, 64, 64, 15, 17),
    (3, 48, 80, 9, 11),
    (32, 64, 64, 28, 28),
    (1, 128, 96, 7, 7),
]


def verify_cases(gens=()):
    """(label, Case, spatial filters or None) for the correctness matrix; `gens`: generations 3 and / or 4
    (p = 4, FB 32) as well (opt-in: docs/fused.md)."""
    for dtype in ("fp16", "bf16"):
        for p in (4, 6):
            for (batch, c, n, H, W) in VERIFY_SHAPES:
                g = spatial_filters(n, c, seed=batch * 1000 + H)
                Wt = filter_transform(g.astype(np.float64), p - 2).astype(np.float32)
                variants = [("dense", dense_pruned(g, p), 32, g, 1),
                            ("wsp-r 0.7 unbalanced", prune(Wt, "wsp-r", 0.7, balance="unbalanced"), 32, None, 1),
                            ("wsp-r 0.5 balanced", prune(Wt, "wsp-r", 0.5), 32, None, 1),
                            ("fp 0.5", prune(Wt, "fp", 0.5), 32, None, 1),
                            ("wsp-rb 0.75", prune(Wt, "wsp-rb", 0.75, block=64), 64, None, 1)]
                if p == 4:   # generation 2 (cluster pair): FB 64
                    variants += [("gen2 dense", dense_pruned(g, p), 64, g, 2),
                                 ("gen2 wsp-r 0.5 balanced", prune(Wt, "wsp-r", 0.5), 64, None, 2),
                                 ("gen2 wsp-r 0.7 unbalanced", prune(Wt, "wsp-r", 0.7, balance="unbalanced"), 64, None, 2),
                                 ("gen2 fp 0.5", prune(Wt, "fp", 0.5), 64, None, 2),
                                 ("gen2 wsp-rb 0.75", prune(Wt, "wsp-rb", 0.75, block=64), 64, None, 2)]
                for x in (gens if p == 4 else ()):
                    if x == 5:   # the dense map only, in filter blocks of 64; chunks of 16 and 32 channels
                        for tag, kw in GEN5_TAGS:
                            variants += [(f"{tag} dense", dense_pruned(g, p), 64, g, 5, kw),
                                         (f"{tag} fp 0.5", prune(Wt, "fp", 0.5), 64, None, 5, kw)]
                        continue
                    variants += [(f"gen{x} dense", dense_pruned(g, p), 32, g, x),
                                 (f"gen{x} wsp-r 0.5 balanced", prune(Wt, "wsp-r", 0.5), 32, None, x),
                                 (f"gen{x} wsp-r 0.7 unbalanced", prune(Wt, "wsp-r", 0.7, balance="unbalanced"), 32, None, x),
                                 (f"gen{x} fp 0.5", prune(Wt, "fp", 0.5), 32, None, x),
                                 (f"gen{x} wsp-rb 0.75", prune(Wt, "wsp-rb", 0.75, block=32), 32, None, x)]
                    if x == 4:   # the chunk map (WSP-CB), at wsp-r's ratios
                        variants += [(f"gen4 wsp-cb {r}", prune(Wt, "wsp-cb", r), 32, None, 4) for r in (0.5, 0.7)]
                for label, pr, fb, gg, gen, *g5 in variants:
                    what = f"{dtype} p{p} b{batch} c{c} n{n} {H}x{W} {label}"
                    yield what, (lambda pr=pr, p=p, dtype=dtype, batch=batch, H=H, W=W, fb=fb, gen=gen, g5=g5:
                                 Case(pr, p, dtype, batch, H, W, fb=fb, gen=gen, **(g5[0] if g5 else {}))), gg


def cmd_verify(args) -> int:
    require_gpu()   # no GPU: one line, not a FAIL per case
    failures = 0
    rows = []
    for what, make, g in verify_cases(args.gens):
        try:
            case = make().ready()
            err = verify(case)
            extra = f" direct {verify_direct(case, g):.1e}" if g is not None else ""
            print(f"ok    {what}: rel err {err:.1e}{extra}  waste {kernel_pad_waste(case.layout, case.desc):.2f}  "
                  f"{case.name}")
            rows.append({"what": what, "status": "ok", "rel_error": err, "kernel": case.name})
        except Exception as e:  # noqa: BLE001 -- report every failing variant, go on
            failures += 1
            print(f"FAIL  {what}: {type(e).__name__}: {e}")
            rows.append({"what": what, "status": "fail", "reason": str(e)})
    if args.out:
        with open(args.out, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    print(f"verify: {len(rows) - failures} ok, {failures} failed")
    return 1 if failures else 0


# -------------------------------------------------------------------------------------------- time
# (MI = FB, BT, stages, generation, warps): p = 4 runs the cluster pair (generation 2), p = 6 generation 1
DENSE_CONFIGS = {4: [(64, 64, 3, 2, 16), (64, 64, 3, 2, 8)], 6: [(32, 32, 2, 1, None)]}
PRUNED_FB = {4: (64, 2), 6: (32, 1)}   # filter block and generation of the pruned forms


def variant_tags(scheds=("one",), pipes=("one",), rmcasts=(1,)):
    """(tag, sched, pipe, rmcast) of each generation-4 variant: the tag names it in labels ("" for the default,
    else e.g. "persistent-halves" or "rmc2"; RS_SCHEDS, RS_PIPES, RS_RMCAST)."""
    for sched in scheds:
        for pipe in pipes:
            for rmc in rmcasts:
                yield ("-".join(x for x in (sched, pipe, "one" if rmc == 1 else f"rmc{rmc}") if x != "one"),
                       sched, pipe, rmc)


def fused_variants(c: int, n: int, H: int, W: int, ps, dtype: str, batch: int, ratios, gens=(), stages=None,
                   gens_only: bool = False, mcast: int = 1, epi: str | None = None, pipes=("one",), scheds=("one",),
                   rmcasts=(1,), gen5_tags=None):
    """`_fused_variants` once per generation-4 mainloop pipeline in `pipes`, CTA schedule in `scheds` ('one':
    the default; others: RS_PIPES, RS_SCHEDS) and input-region multicast in `rmcasts` (1: none; RS_RMCAST),
    labelled "p4 gen4-<sched>-<pipe>-rmc<k> ..." so they run side by side in one run; the persistent schedule
    serves the dense and the full map, the region multicast a ring whose depth it divides (a variant that cannot be
    built is left out). `gen5_tags`: generation 5's variants (GEN5_TAGS' names; None: all)."""
    from cutlass_wsp.errors import Unsupported

    for tag, sched, pipe, rmc in variant_tags(scheds, pipes, rmcasts):
        for label, r, make in _fused_variants(c, n, H, W, ps, dtype, batch, ratios, gens, stages, gens_only,
                                              mcast, epi, None if pipe == "one" else pipe,
                                              None if sched == "one" else sched, rmc, gen5_tags):
            if tag:
                if " gen4 " not in label:
                    continue
                label = label.replace(" gen4 ", f" gen4-{tag} ")
                if sched != "one" or rmc > 1:   # the layout and description only (host): built eagerly, so that
                    # a variant without this form (the row map has no persistent one) is left out
                    try:
                        case = make()
                    except Unsupported:
                        continue
                    make = (lambda case=case: case)
            yield label, r, make


def _fused_variants(c: int, n: int, H: int, W: int, ps, dtype: str, batch: int, ratios, gens=(), stages=None,
                    gens_only: bool = False, mcast: int = 1, epi: str | None = None, pipe: str | None = None,
                    sched: str | None = None, rmcast: int = 1, gen5_tags=None):
    """(label, ratio or None, make Case) for one layer: dense in each config, then WSP-R (unbalanced),
    FP and WSP-RB (block 64) at the ratios; `gens`: generations 3 / 4 too (p = 4, own columns "p4 genX ...",
    `stages` deep, or the deepest ring that fits; generation 4 also WSP-CB at the ratios that keep a block of
    16 channels; generation 5's full-map variants also unbalanced WSP-R in the widest block of 64 rows);
    `gens_only`: those alone."""
    from cutlass_wsp.errors import Unsupported
    from cutlass_wsp.weights import he_winograd_weights

    for p in ps:
        Wd = he_winograd_weights((n, c), p, seed=1)
        dense = prune(Wd, "dense", 0.0)
        for mi, bt, st, gen, wp in ([] if gens_only else DENSE_CONFIGS[p]):
            yield f"p{p} dense", None, (lambda p=p, mi=mi, bt=bt, st=st, gen=gen, wp=wp, dense=dense:
                                       Case(dense, p, dtype, batch, H, W, fb=mi, mi=mi, bt=bt, stages=st, gen=gen,
                                            warps=wp))
        for x in (gens if p == 4 else ()):
            if x == 5:   # the dense map only (dense, FP), in filter blocks of 64; its own CTA schedule and pipeline;
                # chunks of 16 channels ("gen5") and of 32 ("gen5-k32", where the layer's channels fill them)
                if (pipe, sched, rmcast) != (None, None, 1):
                    continue
                for tag, kw in GEN5_TAGS:
                    if c % kw["kc"] or (gen5_tags is not None and tag not in gen5_tags):
                        continue
                    full_only = "gather" in kw   # an option of the full map: no dense or FP form
                    if not full_only:
                        yield f"p4 {tag} dense", None, (lambda dense=dense, kw=kw: Case(
                            dense, 4, dtype, batch, H, W, fb=64, gen=5, **kw))
                    for r in ([] if full_only else ratios):
                        pr = prune(Wd, "fp", r)
                        yield f"p4 {tag} fp", r, (lambda pr=pr, kw=kw: Case(pr, 4, dtype, batch, H, W, fb=64, gen=5,
                                                                             **kw))
                    for r in ratios:   # WSP-RB in the widest block whose kept rows fill 64 (the full map, which
                        fb = balanced_block(r, n, mi=64)   # has no lean epilogue)
                        if fb < 64 or ("epi" in kw and not full_only):   # (the dense map's epilogues)
                            continue
                        pr = prune(Wd, "wsp-rb", r, block=fb)
                        yield f"p4 {tag} wsp-rb", r, (lambda pr=pr, kw=kw, fb=fb: Case(
                            pr, 4, dtype, batch, H, W, fb=fb, mi=64, gen=5, **kw))
                    for r in (ratios if full_only else []):   # unbalanced WSP-R on the full map, in the widest
                        pr = prune(Wd, "wsp-r", r, balance="unbalanced")   # block of 64 rows (the sweep's pick
                        try:                                                # where row_filter_block takes it)
                            fb = wide_filter_block(pr.rows, n, mi=64)
                        except Unsupported:
                            continue
                        yield f"p4 {tag} wsp-r", r, (lambda pr=pr, kw=kw, fb=fb: Case(
                            pr, 4, dtype, batch, H, W, fb=fb, mi=64, gen=5, **kw))
                continue
            yield f"p4 gen{x} dense", None, (lambda dense=dense, x=x: Case(dense, 4, dtype, batch, H, W, fb=32, gen=x,
                                                                           stages=stages, mcast=mcast, epi=epi,
                                                                           pipe=pipe, sched=sched, rmcast=rmcast))
            cb = [r for r in ratios if c % WSP_CB_BLOCK == 0 and kept_count(r, c // WSP_CB_BLOCK) >= 1] if x == 4 else []
            for pattern, rs, kw in (("wsp-r", ratios, dict(balance="unbalanced")), ("fp", ratios, {}), ("wsp-cb", cb, {})):
                for r in rs:
                    pr = prune(Wd, pattern, r, **kw)
                    yield f"p4 gen{x} {pattern}", r, (lambda pr=pr, x=x: Case(pr, 4, dtype, batch, H, W, fb=32, gen=x,
                                                                               stages=stages, mcast=mcast, epi=epi,
                                                                               pipe=pipe, sched=sched, rmcast=rmcast))
                    if x == 4 and pattern == "wsp-r":
                        # the same mask with the unbranched map (padding multiplied), and in the widest filter
                        # block that fits MI = 32 rows per position; the column keeps the fastest
                        for fb in sorted({32, _wide_fb(pr.rows, n)}):
                            yield f"p4 gen4 {pattern}", r, (lambda pr=pr, fb=fb: Case(pr, 4, dtype, batch, H, W, fb=fb,
                                                                                      gen=4, stages=stages, full=True,
                                                                                      pipe=pipe, sched=sched,
                                                                                      rmcast=rmcast))
            for r in (ratios if x == 4 else ()):   # WSP-RB balanced in FB 32 (MI 16) and in the widest block (MI 32)
                for fb in sorted({32, balanced_block(r, n)}):
                    pr = prune(Wd, "wsp-rb", r, block=fb)
                    yield "p4 gen4 wsp-rb", r, (lambda pr=pr, fb=fb: Case(pr, 4, dtype, batch, H, W, fb=fb, gen=4,
                                                                          stages=stages, pipe=pipe, sched=sched,
                                                                          rmcast=rmcast))
        fb, gen = PRUNED_FB[p]
        for pattern, rs, kw in () if gens_only else (("wsp-r", ratios, dict(balance="unbalanced")), ("fp", ratios, {}),
                                                     ("wsp-rb", [0.5, 0.75], dict(block=64))):
            for r in rs:
                pr = prune(Wd, pattern, r, **kw)
                yield f"p{p} {pattern}", r, (lambda pr=pr, p=p, fb=fb if pattern != "wsp-rb" else 64, gen=gen:
                                             Case(pr, p, dtype, batch, H, W, fb=fb, gen=gen))


def _wide_fb(rows, n: int) -> int:
    from cutlass_wsp.errors import Unsupported

    try:
        return wide_filter_block(rows, n)
    except Unsupported:   # no block keeps <= 32 rows per position: the FB-32 variant alone
        return 32


def timed(case: Case, budget_s: float):
    """Verified, then timed (gpu/harness.py: poison, check, then CUDA events with the L2 flushed)."""
    from cutlass_wsp.gpu.harness import bench

    op = case.op
    m = bench(op.launch, outputs=op.out, result=op.result, reference=op.reference, check=op.check,
              budget_s=budget_s, flush_l2=True)
    return m.timing, m.rel_error


def bench_layers(nets: str):
    """(net, Layer) of every distinct layer shape with c >= 64 (the fused kernel's targets)."""
    seen, layers = set(), []
    for net in nets.split(","):
        for lay in resolve_layers(net):
            key = (lay.c, lay.n, lay.H, lay.W)
            if lay.c >= 64 and key not in seen:
                seen.add(key)
                layers.append((net, lay))
    return layers


def cmd_compile(args) -> int:
    """Build (here, no GPU needed) every kernel `verify` and `time` will ask for, all cores at once."""
    from cutlass_wsp.kernels.cache import default_cache

    descs = [make().desc for _, make, _ in verify_cases(args.gens)]
    ratios = [float(r) for r in args.ratios.split(",")]
    for _, lay in bench_layers(args.nets):
        descs += [make().desc for _, _, make in fused_variants(lay.c, lay.n, lay.H, lay.W, args.ps, args.dtype,
                                                               args.batch, ratios, args.gens, args.stages,
                                                               args.gens_only, args.mcast, args.epi, args.pipes,
                                                               args.scheds, args.rmcasts, args.gen5_tags)]
    descs = list(dict.fromkeys(descs))
    t0 = time.time()
    default_cache().compile_many(descs)
    print(f"compiled {len(descs)} fused kernels in {time.time() - t0:.0f} s")
    return 0


STAMP_NAMES = ("barriers", "tile table", "setup", "first region", "mainloop", "pair join", "exchange 1", "exchange 2",
               "stores")


def stamp_phases(raw: np.ndarray, phases: int, chunks: int) -> dict:
    """Where a CTA's time goes, from generation 5's phase stamps (cp_desc(stamps=True)): `raw` [CTAs, slots] holds
    per CTA `phases` SM-clock stamps (entry, then the end of each of STAMP_NAMES: the barriers armed and the pair
    synced, the tile table, the rest of the setup, the first region landed, the products done, the pair joined, the
    epilogue's exchange within the CTA and across the pair, the stores),
    then the global timer (ns) at entry and end, then the SM. Per phase the median and mean in cycles and µs (each
    CTA's clock rate from its own two timers), the chunks' median cycles, and per SM the gap between one CTA's end
    and the next one's entry (launch and setup no CTA covers) and the share of the kernel's span its CTAs covered."""
    raw = np.asarray(raw, dtype=np.int64)
    ok = raw[:, phases] > 0   # CTAs that recorded (the buffer holds the first STAMP_CTAS)
    if not ok.any():
        raise ValueError("no CTA recorded its stamps")
    r = raw[ok]
    clk, t0, t1, sm = r[:, :phases], r[:, phases], r[:, phases + 1], r[:, phases + 2]
    ghz = np.diff(clk[:, [0, -1]], axis=1)[:, 0] / np.maximum(t1 - t0, 1)
    d = np.diff(clk, axis=1)                                   # [CTAs, phases - 1] cycles
    out = {"ctas": int(ok.sum()), "clock_ghz": float(np.median(ghz)), "span_us": float((t1.max() - t0.min()) / 1e3),
           "phases": {}}
    for i, name in enumerate(STAMP_NAMES[:phases - 1]):
        out["phases"][name] = {"median_cycles": float(np.median(d[:, i])), "mean_cycles": float(d[:, i].mean()),
                               "median_us": float(np.median(d[:, i] / ghz) / 1e3)}
    total = clk[:, -1] - clk[:, 0]
    out["cta_median_us"] = float(np.median(total / ghz) / 1e3)
    out["chunk_median_cycles"] = float(np.median(d[:, STAMP_NAMES.index("mainloop")]) / max(chunks, 1))
    gaps, covered = [], []
    for s_ in np.unique(sm):
        on = np.argsort(t0[sm == s_])
        a, b = t0[sm == s_][on], t1[sm == s_][on]
        gaps += list(a[1:] - b[:-1])
        covered.append((b - a).sum() / max(b.max() - a.min(), 1))
    out["gap_median_us"] = float(np.median(gaps) / 1e3) if gaps else 0.0
    out["gap_mean_us"] = float(np.mean(gaps) / 1e3) if gaps else 0.0
    out["sm_covered"] = float(np.median(covered))
    out["ctas_per_sm"] = float(len(r) / len(np.unique(sm)))
    return out


def _read_buffer(case: "Case", what: str, nints: int, shape: int) -> tuple[np.ndarray, list[int]]:
    """Launch a profiling build once (its buffer `wsp_<what>` cleared first) and read it back: (the buffer, flat, and
    the `nints` ints wsp_<what>_layout gives: the first the CTAs it holds, the first `shape` of them its shape)."""
    import ctypes

    import cupy

    from cutlass_wsp.kernels.cache import default_cache

    lib = ctypes.CDLL(str(default_cache().get(case.desc)), mode=ctypes.RTLD_LOCAL)
    dims = [ctypes.c_int() for _ in range(nints)]
    getattr(lib, f"wsp_{what}_layout")(*[ctypes.byref(x) for x in dims])
    cupy.cuda.get_current_stream().synchronize()
    if err := getattr(lib, f"wsp_{what}_clear")():
        raise KernelError(f"could not clear {case.name}'s {what} (CUDA error {err})", "rerun on an idle GPU")
    case.launch()
    cupy.cuda.get_current_stream().synchronize()
    buf = np.zeros(math.prod(x.value for x in dims[:shape]), np.uint64)
    if err := getattr(lib, f"wsp_{what}_read")(buf.ctypes.data_as(ctypes.POINTER(ctypes.c_ulonglong)), dims[0].value):
        raise KernelError(f"could not read {case.name}'s {what} (CUDA error {err})", "rerun on an idle GPU")
    return buf.astype(np.int64), [x.value for x in dims]


def read_stamps(case: "Case") -> tuple[np.ndarray, int]:
    """Launch a stamps build once (its buffer cleared first) and read its stamps back: ([CTAs, slots], phases)."""
    buf, (ctas, slots, phases) = _read_buffer(case, "stamps", 3, 2)   # ctas, slots, phases
    return buf.reshape(ctas, slots), phases


def read_chunk_stamps(case: "Case") -> np.ndarray:
    """Launch a chunk-stamps build once and read its stamps back: [CTAs, warps, chunks, slots] (bench/chunk_stamps.py)."""
    buf, dims = _read_buffer(case, "cstamps", 4, 4)   # ctas, warps, chunks, slots
    return buf.reshape(*dims)


def cmd_profile(args) -> int:
    """One verified dense case per layer, then `--launches` more launches for Nsight Compute to capture
    (ncu -k wsp_fused_layer ... python bench/fused_layer.py profile ...)."""
    import cupy

    from cutlass_wsp.weights import he_winograd_weights

    gen5 = bool(args.gens) and args.gens[-1] == 5
    if (args.stamps or args.chunk_stamps) and (not gen5 or (args.chunk_stamps and args.pattern != "dense")
                                                or args.pattern == "wsp-r"):
        raise InputError("--stamps (dense, or WSP-RB in the full map) and --chunk-stamps (dense) are generation 5's "
                         "profiling builds", "add --gen5, with --pattern dense or wsp-rb")
    if args.chunk_stamps and (args.stamps or args.epi5 not in ("async", "tma") or args.kc != 32 or args.pipe):
        raise InputError("--chunk-stamps is a build of generation 5 at 32 channels a chunk with the async or tma "
                         "epilogue", "add --kc 32 --epi5 tma (or async), without --stamps or --pipe")
    if args.item_stamps and (not gen5 or args.stamps or args.chunk_stamps or args.kc != 32 or args.sched != "persistent"
                             or (args.pattern == "dense" and args.epi5 not in ("async", "tma", "wg"))
                             or (args.pattern == "wsp-rb" and (args.epi5 != "wg" or args.gather != "push"))
                             or args.pattern == "wsp-r"):
        raise InputError("--item-stamps is a build of generation 5's persistent pairs at 32 channels a chunk: dense "
                         "with the async, tma or wg epilogue, or WSP-RB with the wg epilogue and the push gather",
                         "add --gen5 --kc 32 --sched persistent --epi5 wg (or tma, async: dense), with --pattern "
                         "wsp-rb also --gather push, without the other stamps")
    if args.ablate and not (args.chunk_stamps or args.item_stamps):
        raise InputError("--ablate is a chunk- or item-stamps build (its output is wrong by design: only its stamps "
                         "are read)", "add --chunk-stamps or --item-stamps")
    require_gpu()   # (after the options' checks) no GPU: one line, not CuPy's traceback
    for spec in args.layers.split("+"):
        (lay,) = resolve_layers(spec)
        Wd = he_winograd_weights((lay.n, lay.c), args.p, seed=1)
        if args.pattern == "wsp-rb" and gen5:   # generation 5's full map in the widest block whose kept rows fill
            fb = balanced_block(args.ratio, lay.n, mi=64)   # 64 (as `time --gen5`)
            pr = prune(Wd, "wsp-rb", args.ratio, block=fb)
            case = Case(pr, 4, args.dtype, args.batch, lay.H, lay.W, fb=fb, mi=64, gen=5, kc=args.kc,
                        vpair=args.vpair, stamps=args.stamps, gather=args.gather, xchg=args.xchg,
                        producer=args.producer, join=args.join, stores=args.stores, epi=args.epi5, sched=args.sched,
                        item_stamps=args.item_stamps, stages=args.stages5, region=args.region,
                        ablate=args.ablate).ready()
        elif args.pattern != "dense":   # generation 4, a row-pruned form in its widest filter block (as `time`)
            if args.pattern == "wsp-rb":
                fb = balanced_block(args.ratio, lay.n)
                pr = prune(Wd, "wsp-rb", args.ratio, block=fb)
            else:
                pr = prune(Wd, "wsp-r", args.ratio)
                fb = _wide_fb(pr.rows, lay.n)
            case = Case(pr, 4, args.dtype, args.batch, lay.H, lay.W, fb=fb, gen=4, full=True, pipe=args.pipe,
                        sched=args.sched, rmcast=args.rmcast).ready()
        elif args.gens:   # generation 3, 4 (p = 4, FB 32) or 5 (FB 64, --kc channels a chunk): the last one asked for
            gen = args.gens[-1]
            case = Case(prune(Wd, "dense", 0.0), 4, args.dtype, args.batch, lay.H, lay.W, fb=64 if gen == 5 else 32,
                        gen=gen, pipe=args.pipe, sched=args.sched, rmcast=args.rmcast, kc=args.kc,
                        vpair=args.vpair, stamps=args.stamps, epi=args.epi5,
                        chunk_stamps=args.chunk_stamps, refill=args.refill, producer=args.producer,
                        xchg=args.xchg, item_stamps=args.item_stamps, stages=args.stages5, region=args.region,
                        ablate=args.ablate).ready()
        else:
            mi, bt, st, gen, wp = DENSE_CONFIGS[args.p][0]
            case = Case(prune(Wd, "dense", 0.0), args.p, args.dtype, args.batch, lay.H, lay.W, fb=mi, mi=mi, bt=bt,
                        stages=st, gen=gen, warps=wp).ready()
        if args.ablate:   # wrong by design: launched, never verified (its stamps only)
            print(f"{spec}: {case.name} ablated ({args.ablate}): not verified, its output is wrong by design")
        else:
            print(f"{spec}: {case.name} rel err {verify(case):.1e}")
        if args.stamps or args.chunk_stamps or args.item_stamps:   # (one of them: a stamps build, read once warm)
            for _ in range(3):
                case.launch()
        if args.stamps:   # where each CTA's time goes (verified above: the stamps do not touch the output)
            raw, phases = read_stamps(case)
            summary = stamp_phases(raw, phases, -(-lay.c // args.kc))
            print(json.dumps({"layer": spec, "kernel": case.name, **summary}))
            for name, ph in summary["phases"].items():
                print(f"  {name:13s} median {ph['median_us']:7.2f} us ({ph['median_cycles']:8.0f} cycles)")
            print(f"  CTA {summary['cta_median_us']:.2f} us median at {summary['clock_ghz']:.2f} GHz, "
                  f"chunk {summary['chunk_median_cycles']:.0f} cycles; gap between CTAs on an SM "
                  f"{summary['gap_median_us']:.2f} us median ({summary['gap_mean_us']:.2f} mean); SMs covered "
                  f"{summary['sm_covered']:.2f} of the span; {summary['ctas_per_sm']:.1f} CTAs per SM")
        if args.chunk_stamps:   # where each chunk's time goes, warp by warp (verified above)
            from chunk_stamps import report, summarize

            summary = summarize(read_chunk_stamps(case), -(-lay.c // args.kc))
            print(json.dumps({"layer": spec, "kernel": case.name, **summary}))
            print("\n".join(report(summary)))
        if args.item_stamps:   # where each persistent item's time goes, mainloop and epilogue warpgroup (verified above)
            import item_stamps

            buf, (ctas, items, slots) = _read_buffer(case, "istamps", 3, 3)
            summary = item_stamps.summarize(buf.reshape(ctas, items, slots), -(-lay.c // args.kc))
            print(json.dumps({"layer": spec, "kernel": case.name, **summary}))
            print(item_stamps.report(summary))
        for _ in range(args.launches):
            case.launch()
        cupy.cuda.get_current_stream().synchronize()
    return 0


def cmd_time(args) -> int:
    from cutlass_wsp.gpu.ceilings import measure_ceilings
    from cutlass_wsp.gpu.harness import TimingOptions
    from cutlass_wsp.gpu.info import provenance
    from cutlass_wsp.sweep.measure import Measurer
    from cutlass_wsp.sweep.plan import Point

    dtype, batch = args.dtype, args.batch
    measurer = Measurer(TimingOptions(budget_s=args.budget))
    ceil = measure_ceilings(dtype)
    prov = provenance()
    print(f"# {prov.get('gpu_name')} driver {prov.get('driver_version')} cuda {prov.get('cuda_runtime_version')} copy "
          f"{ceil.copy_bw_Bps / 1e12:.2f} TB/s, {dtype} gemm {ceil.gemm_flops / 1e12:.0f} TFLOP/s")
    layers = bench_layers(args.nets)
    out_rows = []
    table = []
    ratios = [float(r) for r in args.ratios.split(",")]
    for net, lay in layers:
        c, n, H, W = lay.c, lay.n, lay.H, lay.W
        row = {"layer": f"{net}:{lay.name.split('.', 1)[-1]}", "shape": f"{c}->{n}@{H}x{W}"}
        # cuDNN: the sweep's conv point (families/cudnn.py), verified against the fp32 pipeline, then timed
        conv = measurer.measure(Point(net, (lay.name,), c, n, H, W, batch, None, dtype, "conv", "cudnn"))
        row["cudnn"] = conv["median_ms"]
        out_rows.append({"layer": row["layer"], "impl": "cudnn", "median_ms": conv["median_ms"],
                         "iqr_ms": conv["iqr_ms"], "kernel": conv["kernel"]})
        for label, r, make in fused_variants(c, n, H, W, args.ps, dtype, batch, ratios, args.gens, args.stages,
                                             args.gens_only, args.mcast, args.epi, args.pipes, args.scheds,
                                             args.rmcasts, args.gen5_tags):
            try:
                case = make().ready()
                t, err = timed(case, args.budget)
            except Exception as e:  # noqa: BLE001 -- a failing variant is reported, the run goes on
                print(f"  {row['layer']} {label} {r}: {type(e).__name__}: {e}")
                continue
            floor = case.op.cost.floor_ms(ceil.gemm_flops, ceil.copy_bw_Bps)   # the family's cost model
            key = label if r is None else f"{label} {r:g}"
            # the fastest verified config (filter block, kernel) is the layer's time for its column
            if key not in row or t.median_ms < row[key]:
                row[key] = t.median_ms
                if label.endswith("dense"):
                    row[label.replace("dense", "floor")] = floor
            out_rows.append({"layer": row["layer"], "impl": label, "ratio": r, "kernel": case.name, "fb": case.layout.fb,
                             "median_ms": t.median_ms, "iqr_ms": t.iqr_ms, "rel_error": err, "floor_ms": floor,
                             "pad_waste": kernel_pad_waste(case.layout, case.desc),
                             "energy_retained": case.pruned.energy_retained})
            del case
        table.append(row)
        print(json.dumps(row), flush=True)
        if args.out:   # each layer's rows as soon as it is done: a run cut short keeps what it measured
            with open(args.out, "a") as f:
                for rec in out_rows:
                    f.write(json.dumps({**rec, "gpu": prov.get("gpu_name"), "driver": prov.get("driver_version"),
                                        "cuda": prov.get("cuda_runtime_version"), "commit": prov.get("git_commit"),
                                        "dtype": dtype, "batch": batch}) + "\n")
            out_rows.clear()
    # the summary table: ms, and speed against cuDNN
    cols = [k for k in table[0] if k not in ("layer", "shape")] if table else []
    print("layer".ljust(22) + "".join(k.rjust(14) for k in cols))
    for row in table:
        print(row["layer"][:22].ljust(22) + "".join(
            (f"{row[k]:.4f}" if isinstance(row.get(k), float) else "-").rjust(14) for k in cols))
    for p in args.ps:
        sp = [row["cudnn"] / row[f"p{p} dense"] for row in table if f"p{p} dense" in row]
        if sp:
            print(f"p{p} dense vs cuDNN: min {min(sp):.2f}x, geomean {math.exp(np.mean(np.log(sp))):.2f}x")
        gens = [f"gen{x}" for x in (args.gens if p == 4 else ())]
        tags = [tag for tag, *_ in variant_tags(args.scheds, args.pipes, args.rmcasts)]
        gens += [f"gen4-{t}" for t in tags if t and p == 4 and 4 in args.gens]
        for pre in [f"p{p}"] + [f"p{p} {g}" for g in gens]:
            sp = [row["cudnn"] / row[f"{pre} dense"] for row in table if f"{pre} dense" in row and pre != f"p{p}"]
            if sp:
                print(f"{pre} dense vs cuDNN: min {min(sp):.2f}x, geomean {math.exp(np.mean(np.log(sp))):.2f}x")
            for pat in ("wsp-r", "wsp-rb", "fp"):
                for r in ratios:
                    k = f"{pre} {pat} {r:g}"
                    sp = [row["cudnn"] / row[k] for row in table if k in row]
                    if sp:
                        print(f"{k} vs cuDNN: geomean {math.exp(np.mean(np.log(sp))):.2f}x")
    return 0


def _read_rows(path: str) -> list[dict]:
    """The rows of a `time --out` file; InputError (one line) where it cannot be read."""
    try:
        return [json.loads(line) for line in open(path) if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read the timed rows {path} ({e})",
                         "pass the --out file of `bench/fused_layer.py time`") from e


def gen5_grid(c: int, n: int, H: int, W: int, batch: int, kc: int = 32) -> tuple[int, int]:
    """(CTAs, chunks) of generation 5 with vertical tile pairs on a layer: 2 CTAs per tile rectangle (the host's
    pick_rectangle) and filter block of 64, ceil(c / kc) chunks each."""
    from cutlass_wsp.fused_banks import pick_rectangle
    from cutlass_wsp.winograd import tile_grid

    th, tw = tile_grid(H, W, 2)
    BI, BY, BX = pick_rectangle(batch, th, tw, vpair=True)
    units = -(-batch // BI) * -(-th // BY) * -(-tw // BX)
    return 2 * units * -(-n // 64), -(-c // kc)


def cmd_bound(args) -> int:
    """What generation 5's mainloop alone would take per layer of a `time --out` file: its waves of CTAs (one per SM:
    ceil(CTAs / SMs)) x chunks x the measured chunk (`--chunk-us`, from `profile --stamps`), with no prologue,
    epilogue or gap; against the same run's cuDNN, and the kernel's (`--tag`) measured time as a multiple of it
    (docs/fused.md)."""
    rows = _read_rows(args.file)
    if args.chunk_us <= 0 or args.sms <= 0:
        raise InputError(f"chunk {args.chunk_us} us on {args.sms} SMs", "pass a positive --chunk-us and --sms")
    by: dict[str, dict] = {}
    for r in rows:
        if "median_ms" in r and r.get("ratio") is None:
            by.setdefault(r["layer"], {})[r["impl"]] = r
    print(f"| layer | CTAs | chunks | cuDNN ms | {args.tag} ms | mainloop only ms | {args.tag} / mainloop | "
          "mainloop only vs cuDNN |")
    print("|---" * 8 + "|")
    speed = []
    for layer, d in by.items():
        c, k = d.get("cudnn"), d.get(f"p4 {args.tag} dense")
        if c is None:
            continue
        (lay,) = resolve_layers(layer)
        ctas, chunks = gen5_grid(lay.c, lay.n, lay.H, lay.W, int(c.get("batch", 32)), args.kc)
        bound = -(-ctas // args.sms) * chunks * args.chunk_us / 1e3
        speed.append(c["median_ms"] / bound)
        kms = f"{k['median_ms']:.4f}" if k else "—"
        ratio = f"{k['median_ms'] / bound:.2f}" if k else "—"
        print(f"| {layer} | {ctas} | {chunks} | {c['median_ms']:.4f} | {kms} | {bound:.4f} | {ratio} | "
              f"{speed[-1]:.2f}× |")
    if not speed:
        raise InputError(f"no cuDNN row in {args.file}", "pass the --out file of `bench/fused_layer.py time`")
    print(f"\nmainloop only vs cuDNN: geomean {math.exp(sum(map(math.log, speed)) / len(speed)):.2f}×, "
          f"min {min(speed):.2f}× (chunk {args.chunk_us} us, {args.sms} SMs)")
    return 0


def cmd_table(args) -> int:
    """Markdown table per layer from a `time --out` file: cuDNN, fused dense (fastest config of the generation:
    `--gen 3` / `4` for those, else generations 1 and 2) and its floor, fused WSP-R / FP at the ratios (and
    WSP-RB for generations 1-2, WSP-CB for generation 4); each with its speed against the same run's cuDNN.
    With --sweep (a sweep's results on the same GPU): the unfused dense layer and the sweep's best WSP-C layer at
    the ratios (the fused kernel has only WSP-CB, blocks of 16 channels), each against that sweep's own cuDNN row
    (the same run)."""
    rows = _read_rows(args.file)
    p = f"p{args.p}" + (f" gen{args.gen}" if args.gen else "")
    sweep: dict[tuple, float] = {}   # (shape, what) -> best layer ms in the sweep's run
    if args.sweep:
        from cutlass_wsp.sweep.results import ResultStore

        for r in ResultStore(args.sweep).load():
            if r.get("status") != "ok" or not r.get("layer_ms"):
                continue
            shape = (r["c"], r["n"], r["H"], r["W"])
            if r.get("impl") == "cudnn":
                what = "cudnn"
            elif r.get("p") != args.p or r.get("impl") == "fused":
                continue
            elif r.get("pattern") == "dense":
                what = "dense"
            elif r.get("pattern") in ("wsp-c", "wsp-c-fused"):
                what = f"wsp-c {r['ratio']:g}"
            else:
                continue
            sweep[shape, what] = min(sweep.get((shape, what), math.inf), r["layer_ms"])
    by: dict[str, dict] = {}
    for r in rows:
        impl = r["impl"]
        if args.best:   # "p4 gen4-persistent-halves dense" counts as "p4 gen4 dense": the column keeps the fastest
            impl = re.sub(r"^(p\d+ gen\d+)-\S+", r"\1", impl)
            if args.gen == 4:   # and generation 5's dense and FP compete in generation 4's columns
                impl = re.sub(r"^p4 gen5 ", "p4 gen4 ", impl)
        key = impl + ("" if r.get("ratio") is None else f" {r['ratio']:g}")
        d = by.setdefault(r["layer"], {})
        if key not in d or r["median_ms"] < d[key]["median_ms"]:
            d[key] = r
    ratios = sorted({r["ratio"] for r in rows if r.get("ratio") is not None and "wsp-rb" not in r["impl"]})
    pats = ("wsp-r", "fp") + (("wsp-rb", "wsp-cb") if args.gen == 4 else ())
    pruned = [f"{pat} {r:g}" for pat in pats for r in ratios if any(
        r2["impl"] == f"{p} {pat}" and r2.get("ratio") == r for r2 in rows)]
    if not args.gen:
        pruned += ["wsp-rb 0.5", "wsp-rb 0.75"]
    wspc = [f"wsp-c {r:g}" for r in ratios] if args.sweep else []
    cols = (["cuDNN", "unfused dense layer (sweep)"] if args.sweep else ["cuDNN"]) + ["fused dense", "fused floor"] \
        + [f"fused {c}" for c in pruned] + [f"unfused {c} (sweep)" for c in wspc]
    print("| layer | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    speed = []

    def cell(ms, base):
        return f"{ms:.3f} ({base / ms:.2f}×)" if ms and base else (f"{ms:.3f}" if ms else "—")

    for layer, d in by.items():
        (lay,) = resolve_layers(layer)
        shape = (lay.c, lay.n, lay.H, lay.W)
        c = d["cudnn"]["median_ms"]
        cells = [f"{c:.3f}"]
        if args.sweep:
            cells.append(cell(sweep.get((shape, "dense")), sweep.get((shape, "cudnn"))))
        dense = d.get(f"{p} dense")
        if dense:
            speed.append(c / dense["median_ms"])
            cells += [cell(dense["median_ms"], c), f"{dense['floor_ms']:.4f}"]
        else:
            cells += ["—", "—"]
        for name in pruned:
            r = d.get(f"{p} {name}")
            cells.append(cell(r["median_ms"], c) if r else "—")
        for name in wspc:
            cells.append(cell(sweep.get((shape, name)), sweep.get((shape, "cudnn"))))
        print(f"| {layer} {lay.c}→{lay.n}@{lay.H} | " + " | ".join(cells) + " |")
    if speed:
        print(f"\nfused dense vs cuDNN: min {min(speed):.2f}×, geomean {math.exp(sum(map(math.log, speed)) / len(speed)):.2f}×")
    if args.best:   # which variant each fused cell is (the label's generation token)
        wins: dict[str, int] = {}
        for d in by.values():
            for key, r in d.items():
                if key.startswith(p + " "):
                    tag = r["impl"].split(" ")[1]
                    wins[tag] = wins.get(tag, 0) + 1
        print("fastest variant per fused cell: " + ", ".join(f"{t} {n}" for t, n in sorted(wins.items())))
    return 0


def parse_choices(text: str, known, what: str = "choice") -> tuple[str, ...]:
    """A comma-separated list of `known` names (argparse's one-line error where one is not, or none is given)."""
    got = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [t for t in got if t not in known]
    if bad or not got:
        raise argparse.ArgumentTypeError(f"unknown {what} {', '.join(bad) or '(none)'}: use one or more of "
                                         f"{', '.join(known)}, comma-separated")
    return got


def _ablation(text: str) -> str:
    """An argparse type: generation 5's ablation (families.fused.ablation), argparse's one-line error otherwise."""
    from cutlass_wsp.families.fused import Unsupported, ablation

    try:
        return ablation(text)
    except Unsupported as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _options(menu: str):
    """An argparse type: a comma-separated list from 'one' (the default kernel) and families.fused.<menu>."""
    def parse(text: str) -> tuple[str, ...]:
        import cutlass_wsp.families.fused as fused

        return parse_choices(text, ("one",) + getattr(fused, menu))
    return parse


def _gen5_tags(text: str) -> tuple[str, ...]:
    """An argparse type: comma-separated names of GEN5_TAGS."""
    known = [t[0] for t in GEN5_TAGS]
    got = tuple(t.strip() for t in text.split(",") if t.strip())
    if not got or any(t not in known for t in got):
        raise argparse.ArgumentTypeError(f"{text!r}: use one or more of {', '.join(known)}, comma-separated")
    return got


def _cluster_sizes(text: str) -> tuple[int, ...]:
    """An argparse type: comma-separated cluster sizes from families.fused.RS_RMCAST."""
    from cutlass_wsp.families.fused import RS_RMCAST

    try:
        got = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        got = ()
    if not got or any(k not in RS_RMCAST for k in got):
        raise argparse.ArgumentTypeError(f"{text!r}: use one or more of {', '.join(map(str, RS_RMCAST))}, "
                                         "comma-separated")
    return got


def main(argv=None) -> int:
    global _context_lost
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify")
    v.add_argument("--out", default=None)
    t = sub.add_parser("time")
    k = sub.add_parser("compile")
    tb = sub.add_parser("table")
    tb.add_argument("file", help="rows of `time --out`")
    tb.add_argument("--sweep", default=None, help="a sweep's results (same GPU): the unfused dense layer column")
    tb.add_argument("--p", type=int, default=4)
    tb.add_argument("--gen", type=int, choices=(3, 4), default=None, help="the columns of generation 3 or 4")
    tb.add_argument("--best", action="store_true",
                    help="each column the fastest of the generation's variants (time --pipes / --scheds labels)")
    bd = sub.add_parser("bound")
    bd.add_argument("file", help="rows of `time --out`")
    bd.add_argument("--chunk-us", type=float, required=True, help="one chunk's time (profile --stamps)")
    bd.add_argument("--tag", default="gen5-k32-vpair-async", help="the kernel whose time is set beside the bound")
    bd.add_argument("--kc", type=int, choices=(16, 32), default=32)
    bd.add_argument("--sms", type=int, default=132)
    f = sub.add_parser("profile")
    f.add_argument("--layers", default="vgg16:conv1_2+vgg16:conv4_2")
    f.add_argument("--p", type=int, default=4)
    f.add_argument("--dtype", default="fp16")
    f.add_argument("--batch", type=int, default=32)
    f.add_argument("--launches", type=int, default=1)
    f.add_argument("--pattern", choices=("dense", "wsp-rb", "wsp-r"), default="dense",
                   help="a row-pruned form (with --ratio): generation 4 in the widest filter block that fits, or "
                        "with --gen5 WSP-RB in generation 5's full map")
    f.add_argument("--ratio", type=float, default=0.7)
    f.add_argument("--kc", type=int, choices=(16, 32), default=16, help="generation 5's channels per chunk (CP_BC)")
    f.add_argument("--stages5", type=int, choices=CP_STAGES, default=None,
                   help="generation 5's raw-ring depth (CP_STAGES; default: the deepest that fits)")
    f.add_argument("--vpair", action="store_true", help="generation 5's vertical tile pairs (CP_TILES)")
    f.add_argument("--epi5", choices=CP_EPIS, default=None, help="generation 5's epilogue (CP_EPIS)")
    f.add_argument("--stamps", action="store_true",
                   help="generation 5's profiling build: each CTA's phases (prologue, first region, mainloop, pair "
                        "join, epilogue) from its clock, and the gaps between CTAs on an SM")
    f.add_argument("--chunk-stamps", action="store_true",
                   help="generation 5's chunk-stamps build (--kc 32, --epi5 async or tma, either --sched): each "
                        "warp's clock at five points of a chunk, to split a chunk's time and the warps' drift")
    f.add_argument("--item-stamps", action="store_true",
                   help="generation 5's item-stamps build (--kc 32 --sched persistent, --epi5 async, tma or wg; "
                        "WSP-RB: wg with --gather push): each warpgroup's clock at a few points of an item, to see "
                        "whether the mainloop waits for the epilogue (bench/item_stamps.py)")
    f.add_argument("--region", choices=CP_REGIONS, default=None,
                   help="generation 5's raw stage in two planes of the region's columns by parity (CP_REGIONS; --kc 32)")
    f.add_argument("--ablate", type=_ablation, default=None,
                   help="generation 5's chunk without parts of it (CP_ABLATE_PARTS joined by '+': mma, loads, "
                        "transform, weights; or a name of CP_ABLATES), with --chunk-stamps or --item-stamps: what "
                        "bounds a chunk; never verified, its output is wrong by design")
    f.add_argument("--refill", choices=CP_REFILLS, default=None,
                   help="generation 5's weight refill after the chunk's products are issued (CP_REFILLS)")
    f.add_argument("--producer", choices=CP_PRODUCERS, default=None,
                   help="generation 5's raw-ring producer: in the warpgroup without the bank conflict, or half of it "
                        "in each warpgroup (CP_PRODUCERS)")
    f.add_argument("--gather", choices=CP_GATHERS, default=None,
                   help="generation 5's full map (--pattern wsp-rb): its epilogue's loads batched, or each rank's "
                        "tiles local with the partner's part pushed (CP_GATHERS)")
    f.add_argument("--xchg", choices=CP_XCHGS, default=None,
                   help="generation 5's epilogue exchanges in the layer's 16-bit type (CP_XCHGS; the dense map with "
                        "--epi5 async or tma, the full map with --gather push)")
    f.add_argument("--join", choices=CP_JOINS, default=None,
                   help="generation 5's full map with --gather push: the pair's joins split and relaxed (CP_JOINS)")
    f.add_argument("--stores", choices=CP_STORES, default=None,
                   help="generation 5's full map with --gather push: the output transform's stores with one branch a "
                        "tile (CP_STORES)")
    f.add_argument("--pipe", choices=("halves",), default=None,
                   help="generation 4's or 5's mainloop pipeline (RS_PIPES; generation 5: with --kc 32)")
    f.add_argument("--sched", choices=("persistent",), default=None,
                   help="generation 4's or 5's CTA schedule (RS_SCHEDS, CP_SCHEDS; generation 5: with --kc 32 "
                        "and --epi5 async or tma)")
    f.add_argument("--rmcast", type=int, choices=(1, 2, 4), default=1,
                   help="generation 4's input-region multicast to the CTAs of this many filter blocks (RS_RMCAST)")
    for q in (v, t, k, f):
        q.add_argument("--gen3", dest="gens", action="append_const", const=3, default=[],
                       help="generation 3 as well (opt-in: filter blocks of 32)")
        q.add_argument("--gen4", dest="gens", action="append_const", const=4,
                       help="generation 4 as well (wgmma A from registers; opt-in: filter blocks of 32)")
        q.add_argument("--gen5", dest="gens", action="append_const", const=5,
                       help="generation 5 as well (a cluster pair splitting V's columns; dense and FP in blocks of 64)")
    for q in (t, k):
        q.add_argument("--nets", default="vgg16,resnet18")
        q.add_argument("--dtype", default="fp16")
        q.add_argument("--batch", type=int, default=32)
        q.add_argument("--ps", type=lambda s: [int(x) for x in s.split(",")], default=[4, 6])
        q.add_argument("--ratios", default="0.5,0.7,0.9")
        q.add_argument("--stages", type=int, default=None, help="ring depth of generations 3 / 4 (default: deepest)")
        q.add_argument("--gens-only", action="store_true", help="only the generations asked for with --gen3 / --gen4")
        q.add_argument("--mcast", type=int, default=1, help="generation 4: CTAs sharing the weights by TMA multicast")
        q.add_argument("--epi", choices=("smem", "regs"), default=None,
                       help="generation 4's epilogue for dense-map layouts (dense, FP; default regs)")
        q.add_argument("--pipes", type=_options("RS_PIPES"), default=("one",),
                       help="generation 4's mainloop pipelines, side by side: one (the default), halves (RS_PIPES)")
        q.add_argument("--scheds", type=_options("RS_SCHEDS"), default=("one",),
                       help="generation 4's CTA schedules, side by side: one (the default), persistent (RS_SCHEDS; "
                            "the dense and the full map)")
        q.add_argument("--rmcasts", type=_cluster_sizes, default=(1,),
                       help="generation 4's input-region multicast, side by side: 1 (none, the default), 2, 4 "
                            "(RS_RMCAST: CTAs of consecutive filter blocks sharing each region)")
        q.add_argument("--gen5-tags", type=_gen5_tags, default=None,
                       help="with --gen5: its variants, comma-separated (default all: "
                            + ", ".join(t[0] for t in GEN5_TAGS) + ")")
    t.add_argument("--budget", type=float, default=0.2)
    t.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    t0 = time.time()
    try:
        rc = {"verify": cmd_verify, "time": cmd_time, "compile": cmd_compile, "profile": cmd_profile,
              "table": cmd_table, "bound": cmd_bound}[args.cmd](args)
    except WspError as e:   # no GPU, an unreadable file, ...: one line, no traceback
        print(f"fused_layer: {e}", file=sys.stderr)
        _context_lost = is_sticky(str(e))   # a lost CUDA context: __main__ ends without the teardown (as cli.entry)
        return 2
    print(f"# {args.cmd} took {time.time() - t0:.0f} s")
    return rc


_context_lost = False   # main() ended on a sticky CUDA error (one line printed)

if __name__ == "__main__":
    try:
        status = main()
    except Exception as e:  # noqa: BLE001 -- a sticky CUDA error (a kernel that trapped): one line, then out
        if not is_sticky(f"{type(e).__name__}: {e}"):
            raise
        print(f"fused_layer: {type(e).__name__}: {e} (the CUDA context is lost: run again; a kernel that traps "
              "is a bug to report)", file=sys.stderr)
        exit_now(1)   # not the interpreter's teardown, in which CuPy's finalizers fail on the dead context
    if _context_lost:
        exit_now(status)
    sys.exit(status)
