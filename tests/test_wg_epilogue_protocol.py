"""The handshakes of generation 5's warpgroup epilogue (templates/_fused_cp_wg.cu.j2, cp_desc(epi='wg')), run as a
model under random interleavings: no deadlock, no buffer slot or tile table overwritten before its reader is done,
every read sees its own item's data, and no remote arrive or byte lands in a CTA that has exited.

Per CTA c of the pair (partner c ^ 1), per item i, M mainloop warps and E epilogue warps (the kernel: 8 and 4):
  mainloop warp w   table   write its part of tile table half i % 2;
                    nsync   the mainloop warps' named barrier;
                    wzfree  (i > 0) wait on zfree, parity (i - 1) % 2: the epilogue has read item i - 1's Z;
                    zwrite  write its ZBUF slot;
                    zarrive arrive on zfull;
  epilogue warp e   arm     (warp 0) arrive on its own pbar expecting the partner's E slots;
                    wzfull  wait on zfull, parity i % 2;
                    wpfree  (i > 0) wait on pfree, parity (i - 1) % 2: the partner's epilogue has read item i - 1's part;
                    send    st.async into the partner's PBUF slot e (lands later, completing bytes on the partner's pbar);
                    wpbar   wait on its pbar, parity i % 2;
                    read    read every ZBUF slot, its PBUF slot, the tile table half i % 2;
                    free    arrive on zfree, and (not after the last item) remotely on the partner's pfree.
mbarriers as tests/test_rmcast_protocol.py's Bar (the PTX ISA's phases and parity waits).
"""

from __future__ import annotations

import random

import pytest

from test_rmcast_protocol import Bar

M, E = 2, 2
MAIN = ("table", "nsync", "wzfree", "zwrite", "zarrive")
EPI = ("arm", "wzfull", "wpfree", "send", "wpbar", "read", "free")


def run(items: int, seed: int, *, zfree_wait: bool = True, pfree_wait: bool = True, free_after_read: bool = True,
        last_arrive: bool = False) -> int:
    """Simulate one pair over `items` items; returns the steps. AssertionError on a deadlock, an overwrite of an
    unread slot, a read of the wrong item's data, or a landing in an exited CTA. Each option breaks one rule:
    `zfree_wait=False` writes Z without the zfree wait; `pfree_wait=False` sends without the pfree wait;
    `free_after_read=False` frees before reading; `last_arrive=True` arrives on the partner's pfree after the last
    item too."""
    rng = random.Random(seed)
    zfull = [Bar(M) for _ in range(2)]
    zfree = [Bar(E) for _ in range(2)]
    pbar = [Bar(1) for _ in range(2)]
    pfree = [Bar(E) for _ in range(2)]
    zbuf = [[None] * M for _ in range(2)]
    pbuf = [[None] * E for _ in range(2)]
    tables = [[[None] * M for _ in range(2)] for _ in range(2)]          # [cta][half][part]
    unread: dict = {}                                                    # (buffer key) -> epilogue warps still to read
    nsync = [dict() for _ in range(2)]                                   # item -> mainloop warps arrived
    agents = {(c, kind, w): [0, 0] for c in range(2) for kind, n in (("m", M), ("e", E)) for w in range(n)}
    exited = [False, False]
    in_flight = []                                                       # (cta, kind, payload)
    epi = EPI if free_after_read else EPI[:5] + ("free", "read")

    def write(key, content, readers, store, index):
        assert not unread.get(key), f"{content} overwrote {key}, unread by {unread.get(key)}"
        store[index] = content
        unread[key] = set(readers)

    steps = 0
    while True:
        moves = []
        for (c, kind, w), (i, k) in agents.items():
            if i >= items:
                continue
            step = (MAIN if kind == "m" else epi)[k]
            ok = {"table": True, "nsync": nsync[c].get(i, 0) == M or (c, kind, w, i) in nsync[c].get("in", set()),
                  "wzfree": i == 0 or not zfree_wait or zfree[c].done((i - 1) & 1), "zwrite": True, "zarrive": True,
                  "arm": True, "wzfull": zfull[c].done(i & 1),
                  "wpfree": i == 0 or not pfree_wait or pfree[c].done((i - 1) & 1), "send": True,
                  "wpbar": pbar[c].done(i & 1), "read": True, "free": True}[step]
            if step == "nsync":   # arrive first, then wait for all
                ok = True
            if ok:
                moves.append((c, kind, w))
        moves += [("land", n) for n in range(len(in_flight))]
        if not moves:
            assert all(a[0] >= items for a in agents.values()), f"deadlock: {agents}"
            return steps
        move = rng.choice(moves)
        steps += 1
        if move[0] == "land":
            d, what, payload = in_flight.pop(move[1])
            assert not exited[d], f"{what} landed in CTA {d} after it exited"
            if what == "part":
                e, i = payload
                write(("p", d, e), ("p", i), [e], pbuf[d], e)
                pbar[d].complete_tx(1)
            else:
                pfree[d].arrive()
            continue
        c, kind, w = move
        a = agents[move]
        i, k = a
        step = (MAIN if kind == "m" else epi)[k]
        advance = True
        if step == "table":
            write(("t", c, i & 1, w), i, range(E), tables[c][i & 1], w)
        elif step == "nsync":
            arrived = nsync[c].setdefault("in", set())
            if (c, kind, w, i) not in arrived:
                arrived.add((c, kind, w, i))
                nsync[c][i] = nsync[c].get(i, 0) + 1
            advance = nsync[c][i] == M
        elif step == "zwrite":
            write(("z", c, w), ("z", i), range(E), zbuf[c], w)
        elif step == "zarrive":
            zfull[c].arrive()
        elif step == "arm":
            if w == 0:
                pbar[c].arrive(expect=E)
        elif step == "send":
            in_flight.append((c ^ 1, "part", (w, i)))
        elif step == "read":
            for m in range(M):
                assert zbuf[c][m] == ("z", i), f"CTA {c} epilogue warp {w} read {zbuf[c][m]} as item {i}'s Z"
                unread[("z", c, m)].discard(w)
                assert tables[c][i & 1][m] == i, f"CTA {c} read table {tables[c][i & 1][m]} as item {i}'s"
                unread[("t", c, i & 1, m)].discard(w)
            assert pbuf[c][w] == ("p", i), f"CTA {c} epilogue warp {w} read {pbuf[c][w]} as item {i}'s part"
            unread[("p", c, w)].discard(w)
        elif step == "free":
            zfree[c].arrive()
            if i + 1 < items or last_arrive:
                in_flight.append((c ^ 1, "pfree", None))
        if advance:
            a[1] += 1
            if a[1] == len(MAIN if kind == "m" else epi):
                a[0], a[1] = i + 1, 0
        if not exited[c] and all(agents[(c, kd, n)][0] >= items for kd, cnt in (("m", M), ("e", E))
                                 for n in range(cnt)):
            exited[c] = True


@pytest.mark.parametrize("items", [1, 2, 3, 8])
def test_the_warpgroup_epilogues_handshakes_never_deadlock_or_overwrite(items):
    for seed in range(80):
        assert run(items, seed) > 0


@pytest.mark.parametrize("rule,match", [(dict(zfree_wait=False), "overwrote|read"),
                                        (dict(pfree_wait=False), "overwrote|read"),
                                        (dict(free_after_read=False), "overwrote|read"),
                                        (dict(last_arrive=True), "exited")])
def test_the_model_catches_each_broken_rule(rule, match):
    """Z written without the zfree wait, a part sent without the pfree wait, the frees sent before the reads (the
    mainloop's next Z, the partner's next part or item i + 2's tile table lands over data still to be read), and a
    pfree arrive after the last item (it may land in a partner that has exited)."""
    with pytest.raises(AssertionError, match=match):
        for seed in range(400):
            run(4, seed, **rule)
