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


class PairModel:
    """What both models share: agents (CTA, kind, warp) each at (item, step) of their kind's steps, picked at random
    among those that may move; a named barrier ("nsync") of a CTA's mainloop warps; buffers whose content must be read
    by its readers before it is overwritten; remote bytes and arrives in flight, landing in any order, never in a CTA
    whose agents have all finished. `run(ok, act, land)` returns the steps taken; AssertionError on a deadlock."""

    def __init__(self, items: int, seed: int, steps: dict, counts: dict):
        self.items, self.rng, self.steps = items, random.Random(seed), steps
        self.agents = {(c, kind, w): [0, 0] for c in range(2) for kind, n in counts.items() for w in range(n)}
        self.mainloop = counts["m"]
        self.unread: dict = {}        # buffer key -> readers still to read its content
        self.nsync: dict = {}         # (cta, item) -> mainloop warps arrived
        self.in_flight: list = []     # (cta, what, payload)
        self.exited = [False, False]

    def write(self, key, content, readers, store, index):
        assert not self.unread.get(key), f"{content} overwrote {key}, unread by {self.unread.get(key)}"
        store[index] = content
        self.unread[key] = set(readers)

    def read(self, key, reader, got, want, what):
        assert got == want, f"{what}: read {got} for {want}"
        self.unread[key].discard(reader)

    def free(self, c, i, local, remote: str, last_arrive: bool):
        """An epilogue warp done with item i: it arrives on its CTA's `local` barrier and, but after the last item
        (unless `last_arrive`), on the partner's `remote` one."""
        local.arrive()
        if i + 1 < self.items or last_arrive:
            self.in_flight.append((c ^ 1, remote, i))

    def run(self, ok, act, land) -> int:
        steps = 0
        while True:
            moves = []
            for (c, kind, w), (i, k) in self.agents.items():
                if i >= self.items:
                    continue
                step = self.steps[kind][k]
                if step == "nsync":   # arrive, or go once every mainloop warp of the CTA has
                    arrived = self.nsync.get((c, i), set())
                    if w not in arrived or len(arrived) == self.mainloop:
                        moves.append((c, kind, w))
                elif ok(c, kind, w, i, step):
                    moves.append((c, kind, w))
            moves += [("land", n) for n in range(len(self.in_flight))]
            if not moves:
                assert all(a[0] >= self.items for a in self.agents.values()), f"deadlock: {self.agents}"
                return steps
            move = self.rng.choice(moves)
            steps += 1
            if move[0] == "land":
                d, what, payload = self.in_flight.pop(move[1])
                assert not self.exited[d], f"{what} landed in CTA {d} after it exited"
                land(d, what, payload)
                continue
            c, kind, w = move
            a = self.agents[move]
            i, k = a
            step = self.steps[kind][k]
            if step == "nsync":
                arrived = self.nsync.setdefault((c, i), set())
                arrived.add(w)
                advance = len(arrived) == self.mainloop
            else:
                act(c, kind, w, i, step)
                advance = True
            if advance:
                a[1] += 1
                if a[1] == len(self.steps[kind]):
                    a[0], a[1] = i + 1, 0
            if not self.exited[c] and all(self.agents[x][0] >= self.items for x in self.agents if x[0] == c):
                self.exited[c] = True


M, E = 2, 2
MAIN = ("table", "nsync", "wzfree", "zwrite", "zarrive")
EPI = ("arm", "wzfull", "wpfree", "send", "wpbar", "read", "free")


def run(items: int, seed: int, *, zfree_wait: bool = True, pfree_wait: bool = True, free_after_read: bool = True,
        last_arrive: bool = False) -> int:
    """Simulate one pair over `items` items (the dense map); returns the steps. AssertionError on a deadlock, an
    overwrite of an unread slot, a read of the wrong item's data, or a landing in an exited CTA. Each option breaks
    one rule: `zfree_wait=False` writes Z without the zfree wait; `pfree_wait=False` sends without the pfree wait;
    `free_after_read=False` frees before reading; `last_arrive=True` arrives on the partner's pfree after the last
    item too."""
    epi = EPI if free_after_read else EPI[:5] + ("free", "read")
    model = PairModel(items, seed, {"m": MAIN, "e": epi}, {"m": M, "e": E})
    zfull, zfree = [Bar(M) for _ in range(2)], [Bar(E) for _ in range(2)]
    pbar, pfree = [Bar(1) for _ in range(2)], [Bar(E) for _ in range(2)]
    zbuf = [[None] * M for _ in range(2)]
    pbuf = [[None] * E for _ in range(2)]
    tables = [[[None] * M for _ in range(2)] for _ in range(2)]          # [cta][half][part]

    def ok(c, kind, w, i, step):
        return {"table": True, "wzfree": i == 0 or not zfree_wait or zfree[c].done((i - 1) & 1), "zwrite": True,
                "zarrive": True, "arm": True, "wzfull": zfull[c].done(i & 1),
                "wpfree": i == 0 or not pfree_wait or pfree[c].done((i - 1) & 1), "send": True,
                "wpbar": pbar[c].done(i & 1), "read": True, "free": True}[step]

    def act(c, kind, w, i, step):
        if step == "table":
            model.write(("t", c, i & 1, w), i, range(E), tables[c][i & 1], w)
        elif step == "zwrite":
            model.write(("z", c, w), ("z", i), range(E), zbuf[c], w)
        elif step == "zarrive":
            zfull[c].arrive()
        elif step == "arm" and w == 0:
            pbar[c].arrive(expect=E)
        elif step == "send":
            model.in_flight.append((c ^ 1, "part", (w, i)))
        elif step == "read":
            for m in range(M):
                model.read(("z", c, m), w, zbuf[c][m], ("z", i), f"CTA {c} epilogue warp {w}'s Z")
                model.read(("t", c, i & 1, m), w, tables[c][i & 1][m], i, f"CTA {c}'s tile table")
            model.read(("p", c, w), w, pbuf[c][w], ("p", i), f"CTA {c} epilogue warp {w}'s part")
        elif step == "free":
            model.free(c, i, zfree[c], "pfree", last_arrive)

    def land(d, what, payload):
        if what == "part":
            e, i = payload
            model.write(("p", d, e), ("p", i), [e], pbuf[d], e)
            pbar[d].complete_tx(1)
        else:
            pfree[d].arrive()

    return model.run(ok, act, land)


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
    model = PairModel(items, seed, {"m": FULL_MAIN, "e": FULL_EPI}, {"m": 2, "e": E})
    msfull = [Bar(2 if sender_arrives else 1) for _ in range(2)]
    msfree, rmsfree = [Bar(E) for _ in range(2)], [Bar(E) for _ in range(2)]
    ms = [[None, None] for _ in range(2)]                # [cta][0: its own writer's tiles, 1: the partner's]
    tables = [[[None] * 2 for _ in range(2)] for _ in range(2)]

    def ok(c, kind, w, i, step):
        waits_msfree = msfree_wait and (msfree_all or w == 0)
        return {"table": True, "wmsfree": i == 0 or not waits_msfree or msfree[c].done((i - 1) & 1),
                "wrmsfree": i == 0 or w == 0 or not rmsfree_wait or rmsfree[c].done((i - 1) & 1), "write": True,
                "wmsfull": msfull[c].done(i & 1), "read": True, "free": True}[step]

    def act(c, kind, w, i, step):
        if step == "table":
            model.write(("t", c, i & 1, w), i, range(E), tables[c][i & 1], w)
        elif step == "write" and w == 0:
            model.write(("ms", c, 0), ("ms", i), range(E), ms[c], 0)
            msfull[c].arrive(expect=1)
        elif step == "write":
            model.in_flight.append((c ^ 1, "part", i))
            if sender_arrives:
                msfull[c].arrive()
        elif step == "read":
            for slot in (0, 1):
                model.read(("ms", c, slot), w, ms[c][slot], ("ms", i), f"CTA {c} epilogue warp {w}'s MS")
                model.read(("t", c, i & 1, slot), w, tables[c][i & 1][slot], i, f"CTA {c}'s tile table")
        elif step == "free":
            model.free(c, i, msfree[c], "rmsfree", last_arrive)

    def land(d, what, i):
        if what == "part":
            model.write(("ms", d, 1), ("ms", i), range(E), ms[d], 1)
            msfull[d].complete_tx(1)
        else:
            rmsfree[d].arrive()

    return model.run(ok, act, land)


@pytest.mark.parametrize("model", [run, run_full], ids=["dense", "full"])
@pytest.mark.parametrize("items", [1, 2, 3, 8])
def test_the_warpgroup_epilogues_handshakes_never_deadlock_or_overwrite(model, items):
    for seed in range(80):
        assert model(items, seed) > 0


@pytest.mark.parametrize("model,rule,match", [
    # the dense map: Z written without the zfree wait, a part sent without the pfree wait, the frees sent before the
    # reads (the mainloop's next Z, the partner's next part or item i + 2's tile table lands over data still to be
    # read), a pfree arrive after the last item (it may land in a partner that has exited)
    (run, dict(zfree_wait=False), "overwrote|read"), (run, dict(pfree_wait=False), "overwrote|read"),
    (run, dict(free_after_read=False), "overwrote|read"), (run, dict(last_arrive=True), "exited"),
    # the full map: only the writing warps waiting for msfree (a sender writes item i + 1's tile table over item
    # i - 1's, still read), no msfree or rmsfree wait (an item's MS lands over the one before, still read), an rmsfree
    # arrive after the last item, and senders that do not arrive on their own msfull (the deadlock the model found in
    # the first design: the epilogue two phases ahead of a sender's parity wait)
    (run_full, dict(msfree_all=False), "overwrote|read"), (run_full, dict(msfree_wait=False), "overwrote|read"),
    (run_full, dict(rmsfree_wait=False), "overwrote|read"), (run_full, dict(last_arrive=True), "exited"),
    (run_full, dict(sender_arrives=False), "deadlock")])
def test_the_model_catches_each_broken_rule(model, rule, match):
    with pytest.raises(AssertionError, match=match):
        for seed in range(400):
            model(4, seed, **rule)
