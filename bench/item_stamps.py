"""Where a generation-5 persistent pair's item goes, from the item-stamps build (cp_desc(item_stamps=True),
`python bench/fused_layer.py profile --gen5 --kc 32 --vpair --sched persistent --epi5 wg|tma --item-stamps`).

Thread 0 of each warpgroup records its SM clock at a few points of each item (SLOTS). The question: with the epilogue
in a warpgroup of its own (epi "wg"), does the mainloop still wait for it (the handoff's free wait), is the epilogue
warpgroup busier than an item lasts, and does the mainloop's own item take longer than the tma persistent pair's
(whose epilogue runs between its items: the build records the start, the products done and the end there only)?
No GPU here: `summarize` takes the stamps as an array."""

from __future__ import annotations

import numpy as np

# the mainloop's (warpgroup 0's thread 0, warpgroup 1's for wg1_done), then the epilogue warpgroup's thread 0; the
# epilogue's middle and part points are the dense map's pfree and pbar waits, the full map's SINV staged (before
# its data wait) and its gather done
SLOTS = ("start", "products_done", "freed", "handed", "wg1_done",
         "epi_start", "epi_data", "epi_mid", "epi_part", "epi_end")


def summarize(raw: np.ndarray, chunks: int) -> dict:
    """`raw` [CTAs, items, len(SLOTS)] of SM clocks (0: not recorded); `chunks` per item. Medians in cycles over the
    CTAs' recorded items:
    - `period`: start to the next item's start; `mainloop`: start to products done, and `chunk` that over `chunks`;
    - `free_wait`: products done to the handoff's buffer free (the mainloop waiting for the epilogue), `handoff`:
      free to handed, `restart`: handed (or, without an epilogue warpgroup, the end) to the next start;
    - `wg1_lag`: warpgroup 1's products done after warpgroup 0's;
    - the epilogue warpgroup's `epi_idle` (its start to its data, less the full map's SINV staging), `epi_busy` (its
      data to its end) and `epi_period`; `epi_share`: its busy time over the mainloop's period (above 1: the epilogue
      paces the pair).
    Items whose next item was not recorded give no period."""
    raw = np.asarray(raw, dtype=np.int64)
    if raw.ndim != 3 or raw.shape[2] != len(SLOTS):
        raise ValueError(f"item stamps of shape {raw.shape}: expected [CTAs, items, {len(SLOTS)}]")
    if chunks < 1:
        raise ValueError(f"{chunks} chunks an item")
    ix = {name: i for i, name in enumerate(SLOTS)}
    s = {name: raw[..., i] for name, i in ix.items()}
    rec = (s["start"] > 0) & (s["products_done"] > 0)
    if not rec.any():
        raise ValueError("no CTA recorded its item stamps")
    wg = bool((s["epi_data"][rec] > 0).any())   # an epilogue warpgroup (epi "wg")

    def med(x, mask):
        v = x[mask]
        return float(np.median(v)) if v.size else float("nan")

    nxt = np.zeros_like(s["start"])
    nxt[:, :-1] = s["start"][:, 1:]
    has_next = rec & (nxt > 0)
    end = s["handed"]
    out = {"ctas": int(rec.any(axis=1).sum()), "items_recorded": int(rec.sum()), "chunks_per_item": chunks,
           "epilogue_warpgroup": wg,
           "items_per_cta": float(np.median(rec.sum(axis=1)[rec.any(axis=1)]))}
    out["period"] = med(nxt - s["start"], has_next)
    out["mainloop"] = med(s["products_done"] - s["start"], rec)
    out["chunk"] = out["mainloop"] / chunks
    out["wg1_lag"] = med(s["wg1_done"] - s["products_done"], rec & (s["wg1_done"] > 0))
    if wg:
        out["free_wait"] = med(s["freed"] - s["products_done"], rec & (s["freed"] > 0))
        out["handoff"] = med(end - s["freed"], rec & (end > 0) & (s["freed"] > 0))
    else:   # the epilogue between items: products done to the item's end
        out["epilogue"] = med(end - s["products_done"], rec & (end > 0))
    out["restart"] = med(nxt - end, has_next & (end > 0))
    cta_items = rec & (end > 0)
    spans = [(end[k][cta_items[k]].max() - s["start"][k][cta_items[k]].min()) for k in range(len(raw))
             if cta_items[k].any()]
    out["cta_span"] = float(np.median(spans))
    if wg:
        erec = rec & (s["epi_data"] > 0) & (s["epi_end"] > 0)
        full = bool((s["epi_mid"][erec] < s["epi_data"][erec]).all())   # SINV staged before the data wait
        out["full_map"] = full
        waited_from = s["epi_mid"] if full else s["epi_start"]
        out["epi_idle"] = med(s["epi_data"] - waited_from, erec)
        if full:
            out["epi_stage"] = med(s["epi_mid"] - s["epi_start"], erec)
            out["epi_gather"] = med(s["epi_part"] - s["epi_data"], erec)
        else:
            out["epi_pfree"] = med(s["epi_mid"] - s["epi_data"], erec)
            out["epi_partner"] = med(s["epi_part"] - s["epi_mid"], erec)
            out["epi_write"] = med(s["epi_end"] - s["epi_part"], erec)
        out["epi_busy"] = med(s["epi_end"] - s["epi_data"], erec)
        enxt = np.zeros_like(s["epi_start"])
        enxt[:, :-1] = s["epi_start"][:, 1:]
        out["epi_period"] = med(enxt - s["epi_start"], erec & (enxt > 0))
        out["epi_share"] = out["epi_busy"] / out["period"] if out["period"] > 0 else float("nan")
    return out


def report(summary: dict) -> str:
    """The summary as lines of cycles."""
    keys = [k for k in ("period", "mainloop", "chunk", "wg1_lag", "free_wait", "handoff", "epilogue", "restart",
                        "cta_span", "epi_idle", "epi_stage", "epi_pfree", "epi_partner", "epi_gather", "epi_write",
                        "epi_busy", "epi_period") if k in summary]
    lines = [f"  {summary['ctas']} CTAs, {summary['items_per_cta']:.0f} items each, {summary['chunks_per_item']} "
             f"chunks an item" + (", the epilogue in its own warpgroup" if summary["epilogue_warpgroup"] else "")]
    lines += [f"  {k:12s} {summary[k]:9.0f} cycles" for k in keys]
    if "epi_share" in summary:
        lines.append(f"  epilogue busy / item period {summary['epi_share']:.2f}")
    return "\n".join(lines)
