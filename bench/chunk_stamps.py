"""Where a generation-5 chunk's time goes, warp by warp, from the chunk-stamps build (cp_desc(chunk_stamps=True),
`python bench/fused_layer.py profile --gen5 --kc 32 --vpair --epi5 tma [--sched persistent] --chunk-stamps`).

Lane 0 of each warp records its SM clock at five points of each (sequence) chunk and three at each item's end
(SLOTS). A wgmma starts only when all four warps of its warpgroup have issued it, and the two warpgroups share the
SM's tensor cores and shared-memory port, so the question the one-shot and the persistent kernel are compared on is:
per chunk, how long each step takes, how far the four warps of a warpgroup drift apart before they issue, and how the
two warpgroups' issues sit against each other. No GPU here: `summarize` takes the stamps as an array."""

from __future__ import annotations

import numpy as np

SLOTS = ("head", "region", "prev_done", "ready", "issued", "products_done", "exchange_done", "end")
STEPS = (("wait_region", "head", "region"),        # the producer (warp 0) and the wait for the region to land
         ("wait_products", "region", "prev_done"),  # the loads issued, the previous chunk's products waited for
         ("transform", "prev_done", "ready"),       # the transform into the A registers and the weights' wait
         ("issue", "ready", "issued"))              # the wgmma issue: the warpgroup's four warps meet, the pipe
WG_WARPS = 4


def summarize(raw: np.ndarray, chunks: int) -> dict:
    """`raw` [CTAs, warps, sequence chunks, len(SLOTS)] of SM clocks (0: not recorded); `chunks` per item. Medians in
    cycles over the CTAs, warps and chunks that recorded, for the chunks inside an item (not its first: its
    predecessor's products are another item's) and separately the item's first chunk:
    - each step of STEPS and the chunk's period (head to the next head in the same item);
    - `drift`: per (CTA, warpgroup, chunk) the spread of the four warps' `ready` (the first wgmma waits for the
      last), and `issue_spread` the same of `issued`;
    - `wg_offset`: per (CTA, chunk) the two warpgroups' issue times apart (median of their warps' `ready`), as a
      share of the period: near 0 both transform at once (and contend), near 0.5 they alternate;
    - per item: products done to the exchange done, to the end, and the end to the next item's first head."""
    raw = np.asarray(raw, dtype=np.int64)
    if raw.ndim != 4 or raw.shape[3] != len(SLOTS):
        raise ValueError(f"chunk stamps of shape {raw.shape}: expected [CTAs, warps, chunks, {len(SLOTS)}]")
    if chunks < 1:
        raise ValueError(f"{chunks} chunks an item")
    ctas, warps, nseq, _ = raw.shape
    ix = {name: i for i, name in enumerate(SLOTS)}
    rec = raw[..., ix["head"]] > 0
    if not rec.any():
        raise ValueError("no warp recorded its chunk stamps")
    g = np.arange(nseq)
    first = (g % chunks) == 0
    last_chunk = (g % chunks) == chunks - 1
    inner = rec & ~first[None, None, :]
    out = {"ctas": int(rec.any(axis=(1, 2)).sum()), "warps": warps, "chunks_per_item": chunks,
           "chunks_recorded": int(rec.sum() // max(warps, 1))}
    head = raw[..., ix["head"]]
    nxt = np.zeros_like(head)            # the next sequence chunk's head, per warp
    nxt[:, :, :-1] = head[:, :, 1:]
    same_item = np.zeros(nseq, bool)     # the next chunk is the same item's
    same_item[:-1] = (g[:-1] // chunks) == (g[1:] // chunks)
    paired = (nxt > 0) & same_item[None, None, :]

    def med(x, mask):
        v = x[mask]
        return float(np.median(v)) if v.size else float("nan")

    for which, mask in (("inner", inner), ("first", rec & first[None, None, :])):
        d = {}
        for name, a, b in STEPS:
            ok = mask & (raw[..., ix[b]] > 0)
            d[name] = med(raw[..., ix[b]] - raw[..., ix[a]], ok)
        d["period"] = med(nxt - head, mask & paired)
        d["after_issue"] = med(nxt - raw[..., ix["issued"]], mask & paired)   # the release and the next chunk's loads
        out[which] = d

    groups = warps // WG_WARPS
    ready = raw[..., ix["ready"]].reshape(ctas, groups, WG_WARPS, nseq)
    issued = raw[..., ix["issued"]].reshape(ctas, groups, WG_WARPS, nseq)
    full = (ready > 0).all(axis=2) & (issued > 0).all(axis=2) & ~first[None, None, :]
    out["drift"] = med(ready.max(axis=2) - ready.min(axis=2), full)
    out["issue_spread"] = med(issued.max(axis=2) - issued.min(axis=2), full)
    # which warp of a warpgroup is ready last, most often (warp 0 of warpgroup 0 runs the producer)
    last = np.argmax(ready, axis=2)
    out["last_ready_warp"] = [int(np.bincount(last[:, w][full[:, w]], minlength=WG_WARPS).argmax())
                              if full[:, w].any() else -1 for w in range(groups)]
    if groups == 2:
        mid = np.median(ready, axis=2)   # [CTAs, 2, chunks]
        both = full.all(axis=1)
        per = out["inner"]["period"]
        off = np.abs(mid[:, 0] - mid[:, 1])[both]
        out["wg_offset_cycles"] = float(np.median(off)) if off.size else float("nan")
        out["wg_offset_share"] = float(np.median(np.minimum(off % per, per - off % per) / per)) \
            if off.size and per == per and per > 0 else float("nan")

    # per CTA rank of the pair (CTA index % 2) and warpgroup: the chunk's period (the slower warpgroup sets the item's
    # pace; a column whose loads conflict, 0 or 3, is warpgroup `rank`'s), and warpgroup 1's lead over warpgroup 0
    # at the item's last chunk (signed: > 0 warpgroup 1 ready later)
    per = np.where(rec & paired, nxt - head, -1)   # each warp's chunk period within an item
    rank_of = np.arange(ctas) % 2
    out["period_by_rank_wg"] = [[med(per[rank_of == r][:, w * WG_WARPS:(w + 1) * WG_WARPS],
                                     per[rank_of == r][:, w * WG_WARPS:(w + 1) * WG_WARPS] > 0)
                                 for w in range(groups)] for r in range(2)]
    if groups == 2:
        lastg = last_chunk[None, :] & (ready > 0).all(axis=2).all(axis=1)
        lead = np.median(ready[:, 1], axis=1) - np.median(ready[:, 0], axis=1)   # [CTAs, chunks]
        out["wg1_lead_at_item_end_by_rank"] = [med(lead[rank_of == r], lastg[rank_of == r]) for r in range(2)]
    endrow = rec & last_chunk[None, None, :] & (raw[..., ix["end"]] > 0)
    out["item"] = {
        "products_to_exchange": med(raw[..., ix["exchange_done"]] - raw[..., ix["products_done"]],
                                    endrow & (raw[..., ix["exchange_done"]] > 0)),
        "exchange_to_end": med(raw[..., ix["end"]] - raw[..., ix["exchange_done"]],
                               endrow & (raw[..., ix["exchange_done"]] > 0)),
        "issued_to_products": med(raw[..., ix["products_done"]] - raw[..., ix["issued"]], endrow),
    }
    out["item"]["end_to_next_head"] = med(nxt - raw[..., ix["end"]], endrow & (nxt > 0))
    return out


def report(summary: dict) -> list[str]:
    """The summary as lines for a log."""
    lines = []
    for which in ("inner", "first"):
        d = summary[which]
        lines.append(f"  {which:5s} chunk: " + ", ".join(f"{k} {v:.0f}" for k, v in d.items()) + " cycles")
    lines.append(f"  warps of a warpgroup ready apart {summary['drift']:.0f} cycles (issued apart "
                 f"{summary['issue_spread']:.0f}); last ready most often: warp {summary['last_ready_warp']}")
    if "wg_offset_cycles" in summary:
        lines.append(f"  warpgroups' issues apart {summary['wg_offset_cycles']:.0f} cycles "
                     f"({summary['wg_offset_share']:.2f} of the period)")
    pr = summary["period_by_rank_wg"]
    lines.append("  chunk period by CTA rank and warpgroup: " + "; ".join(
        f"rank {r}: " + ", ".join(f"wg{w} {v:.0f}" for w, v in enumerate(pr[r])) for r in range(2)) + " cycles")
    if "wg1_lead_at_item_end_by_rank" in summary:
        lines.append("  warpgroup 1 ready after warpgroup 0 at the item's last chunk: " + ", ".join(
            f"rank {r} {v:.0f}" for r, v in enumerate(summary["wg1_lead_at_item_end_by_rank"])) + " cycles")
    lines.append("  item end: " + ", ".join(f"{k} {v:.0f}" for k, v in summary["item"].items()) + " cycles")
    return lines
