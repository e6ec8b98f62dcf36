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
            arrived = (c, kind, w, i) in nsync[c].get("in", set())   # at the named barrier: arrive, or go once all have
            ok = {"table": True, "nsync": not arrived or nsync[c].get(i, 0) == M,
                  "wzfree": i == 0 or not zfree_wait or zfree[c].done((i - 1) & 1), "zwrite": True, "zarrive": True,
                  "arm": True, "wzfull": zfull[c].done(i & 1),
                  "wpfree": i == 0 or not pfree_wait or pfree[c].done((i - 1) & 1), "send": True,
                  "wpbar": pbar[c].done(i & 1), "read": True, "free": True}[step]
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


FULL_MAIN = ("table", "nsync", "wmsfree", "wrmsfree", "write")
FULL_EPI = ("wmsfull", "read", "free")


def run_full(items: int, seed: int, *, msfree_all: bool = True, msfree_wait: bool = True, rmsfree_wait: bool = True,
             last_arrive: bool = False, sender_arrives: bool = True) -> int:
    """The full map's handshakes (push gather, epi 'wg'). Per CTA two mainloop warps: warp 0 writes this rank's tiles
    into its own MS and arrives on msfull (arming the partner's bytes), warp 1 sends the partner's tiles into the
    partner's MS by st.async (completing bytes on the partner's msfull); both wait for msfree (this CTA's epilogue read
    item i - 1's MS), warp 1 also for rmsfree (the partner's epilogue did), then arrives on its own msfull too (no
    data: without it this CTA's epilogue can finish item i while the sender still waits for msfree's phase i - 1, two
    phases behind, a parity wait that never returns: `sender_arrives=False`). Two epilogue warps wait for msfull, read
    MS and the tile table half i % 2, and arrive on msfree and (not after the last item) the partner's rmsfree. The
    options break one rule each: `msfree_all=False` has only the writing warp wait for msfree (the sender may then
    write item i + 1's tile table while the epilogue still reads item i - 1's); `msfree_wait=False`, `rmsfree_wait=False`
    drop a wait; `last_arrive=True` arrives on the partner's rmsfree after the last item."""
    rng = random.Random(seed)
    msfull = [Bar(2 if sender_arrives else 1) for _ in range(2)]
    msfree = [Bar(E) for _ in range(2)]
    rmsfree = [Bar(E) for _ in range(2)]
    ms = [[None, None] for _ in range(2)]                # [cta][0: its own writer's tiles, 1: the partner's]
    tables = [[[None] * 2 for _ in range(2)] for _ in range(2)]
    unread: dict = {}
    nsync = [dict() for _ in range(2)]
    agents = {(c, kind, w): [0, 0] for c in range(2) for kind in ("m", "e") for w in range(2)}
    exited = [False, False]
    in_flight = []

    def write(key, content, store, index):
        assert not unread.get(key), f"{content} overwrote {key}, unread by {unread.get(key)}"
        store[index] = content
        unread[key] = set(range(E))

    steps = 0
    while True:
        moves = []
        for (c, kind, w), (i, k) in agents.items():
            if i >= items:
                continue
            step = (FULL_MAIN if kind == "m" else FULL_EPI)[k]
            waits_msfree = msfree_wait and (msfree_all or w == 0)
            arrived = nsync[c].get(i, set())   # a warp at the named barrier moves only to arrive, or once all have
            ok = {"table": True, "nsync": w not in arrived or len(arrived) == 2,
                  "wmsfree": i == 0 or not waits_msfree or msfree[c].done((i - 1) & 1),
                  "wrmsfree": i == 0 or w == 0 or not rmsfree_wait or rmsfree[c].done((i - 1) & 1), "write": True,
                  "wmsfull": msfull[c].done(i & 1), "read": True, "free": True}[step]
            if ok:
                moves.append((c, kind, w))
        moves += [("land", n) for n in range(len(in_flight))]
        if not moves:
            assert all(a[0] >= items for a in agents.values()), f"deadlock: {agents}"
            return steps
        move = rng.choice(moves)
        steps += 1
        if move[0] == "land":
            d, what, i = in_flight.pop(move[1])
            assert not exited[d], f"{what} landed in CTA {d} after it exited"
            if what == "part":
                write(("ms", d, 1), ("ms", i), ms[d], 1)
                msfull[d].complete_tx(1)
            else:
                rmsfree[d].arrive()
            continue
        c, kind, w = move
        a = agents[move]
        i, k = a
        step = (FULL_MAIN if kind == "m" else FULL_EPI)[k]
        advance = True
        if step == "table":
            write(("t", c, i & 1, w), i, tables[c][i & 1], w)
        elif step == "nsync":
            arrived = nsync[c].setdefault(i, set())
            arrived.add(w)
            advance = len(arrived) == 2
        elif step == "write":
            if w == 0:
                write(("ms", c, 0), ("ms", i), ms[c], 0)
                msfull[c].arrive(expect=1)
            else:
                in_flight.append((c ^ 1, "part", i))
                if sender_arrives:
                    msfull[c].arrive()
        elif step == "read":
            for slot in (0, 1):
                assert ms[c][slot] == ("ms", i), f"CTA {c} epilogue warp {w} read {ms[c][slot]} as item {i}'s"
                unread[("ms", c, slot)].discard(w)
            for part in (0, 1):
                assert tables[c][i & 1][part] == i, f"CTA {c} read table {tables[c][i & 1][part]} as item {i}'s"
                unread[("t", c, i & 1, part)].discard(w)
        elif step == "free":
            msfree[c].arrive()
            if i + 1 < items or last_arrive:
                in_flight.append((c ^ 1, "rmsfree", i))
        if advance:
            a[1] += 1
            if a[1] == len(FULL_MAIN if kind == "m" else FULL_EPI):
                a[0], a[1] = i + 1, 0
        if not exited[c] and all(agents[(c, kd, n)][0] >= items for kd in ("m", "e") for n in range(2)):
            exited[c] = True


@pytest.mark.parametrize("items", [1, 2, 3, 8])
def test_the_full_maps_warpgroup_epilogue_never_deadlocks_or_overwrites(items):
    for seed in range(80):
        assert run_full(items, seed) > 0


@pytest.mark.parametrize("rule,match", [(dict(msfree_all=False), "overwrote|read"),
                                        (dict(msfree_wait=False), "overwrote|read"),
                                        (dict(rmsfree_wait=False), "overwrote|read"),
                                        (dict(last_arrive=True), "exited"),
                                        (dict(sender_arrives=False), "deadlock")])
def test_the_full_map_model_catches_each_broken_rule(rule, match):
    """Only the writing warps waiting for msfree (a sender writes item i + 1's tile table over item i - 1's, still
    read), no msfree or rmsfree wait (an item's MS lands over the one before, still read), an rmsfree arrive after
    the last item, and senders that do not arrive on their own msfull (the model found this deadlock in the first
    design: the epilogue two phases ahead of a sender's parity wait)."""
    with pytest.raises(AssertionError, match=match):
        for seed in range(400):
            run_full(4, seed, **rule)
