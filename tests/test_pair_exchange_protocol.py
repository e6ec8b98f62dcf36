"""The persistent pair's per-item exchange (templates/_fused_cp_persistent.cu.j2 with _fused_cp_async_epilogue.cu.j2,
cp_desc(sched='persistent')), run as a model under random interleavings: no deadlock, no slot of the shared region
overwritten before its reader is done, every read sees its own item's data.

Each CTA's exchange region is the weight stage of the item's last chunk: it holds that chunk's weights (read by the
mainloop), then this CTA's Z (xs1), then the partner's part (xs2), then the weights the next items need (one bulk
copy). Per item i of CTA c (partner c ^ 1), per thread t (its own slot t; the other warpgroup's slot t ^ 1):
  main      wait on ufull (parity i & 1) for the region's weights, read slot t (the mainloop's last chunk);
  arm       thread 0 arrives on its own xs2bar with the bytes it expects (before its own slot is written);
  write     xs1 into slot t (its own warpgroup's half, free once its own products are done);
  --        CTA barrier;
  read1     read slot t ^ 1 (the other warpgroup's Z);
  free      arrive remotely on the partner's xsfree (every warp: count THREADS here);
  wfree     wait on its own xsfree (parity i & 1): the partner's warps have read their xs1;
  send      st.async into the partner's slot t (bytes land later, in any order, on the partner's xs2bar);
  recv      wait on its own xs2bar (parity i & 1), read slot t (the partner's part of item i);
  --        CTA barrier (after the generic-proxy fence), then thread 0 requests the next weights into the region.

mbarrier as the PTX ISA defines it (tests/test_rmcast_protocol.py's Bar): a phase completes when its pending arrivals
reach 0 and its transaction count is 0; try_wait.parity(P) succeeds while the current phase's parity differs from P.
With parity waits a barrier must never complete two phases ahead of its waiter; the model would deadlock or misread.
"""

from __future__ import annotations

import random

import pytest

from test_rmcast_protocol import Bar

THREADS = 4   # threads per CTA in the model: two per warpgroup (the kernel's 8 warps behave alike)
STEPS = ("main", "write", "bar1", "read1", "free", "wfree", "send", "recv", "bar2", "done")


HALF_STEPS = ("main", "free", "write", "bar1", "read1", "wfree", "send", "recv", "bar2", "done")


def run(items: int, seed: int, *, wait_free: bool = True, free_after_read: bool = True, reload_after_bar: bool = True,
        arm_first: bool = True, expect: int = THREADS, half: bool = False, free_before_main: bool = False) -> int:
    """Simulate one pair over `items` items; returns the steps. AssertionError on a deadlock, an overwrite of an
    unread slot or a read of the wrong data. The options break one rule each: `wait_free=False` sends without the
    wfree wait; `free_after_read=False` frees the partner before reading the other warpgroup's Z;
    `reload_after_bar=False` requests the next weights without waiting for the CTA's reads of xs2; `arm_first=False`
    arms xs2bar only when every thread waits in recv; `expect` is the slots thread 0 arms for.
    `half=True` is cp_desc(xchg='half'): the region has 2 THREADS slots, thread t's Z in slot t and the partner's part
    for it in slot THREADS + t (both its warpgroup's weights before), and every warp frees the partner right after its
    products (main), before writing its Z; `free_before_main=True` frees before the products (the rule it breaks)."""
    steps_of = HALF_STEPS if half else STEPS
    nslots = 2 * THREADS if half else THREADS
    xs2_slot = (lambda t: THREADS + t) if half else (lambda t: t)   # noqa: E731
    rng = random.Random(seed)
    xs2bar = [Bar(1) for _ in range(2)]
    xsfree = [Bar(THREADS) for _ in range(2)]
    ufull = [Bar(1) for _ in range(2)]
    region = [[("w", 0)] * nslots for _ in range(2)]    # what each slot holds: (kind, item)
    unread = [set(range(nslots)) for _ in range(2)]     # slots whose content a reader still needs
    for c in range(2):
        ufull[c].arrive()                                # item 0's weights are there (the kernel's first loads)
    in_flight = []                                       # (to CTA, slots, content): bytes on their way
    # per CTA: its item, and per thread the next step and the steps it has done this item
    first = "free" if free_before_main else "main"
    state = {c: {"item": 0, "armed": False, "reloaded": False, "threads": [first] * THREADS,
                 "did": [set() for _ in range(THREADS)]} for c in range(2)}
    steps = 0

    def write(d, slots, content):
        for s in slots:
            assert s not in unread[d], f"{content} overwrote CTA {d}'s unread slot {s} ({region[d][s]})"
            region[d][s] = content
            unread[d].add(s)

    while True:
        moves = []
        for c in range(2):
            st = state[c]
            i = st["item"]
            if i >= items:
                continue
            th = st["threads"]
            if arm_first and not st["armed"]:
                moves.append(("arm", c, 0))
                continue
            if not arm_first and not st["armed"] and all(s == "recv" for s in th):
                moves.append(("arm", c, 0))
            for t, s in enumerate(th):
                ok = {"main": ufull[c].done(i & 1), "write": True,
                      "bar1": all("write" in d for d in st["did"]),
                      "read1": True, "free": True,
                      "wfree": not wait_free or xsfree[c].done(i & 1),
                      "send": True, "recv": (st["armed"] or not arm_first) and xs2bar[c].done(i & 1),
                      "bar2": not reload_after_bar or all("recv" in d for d in st["did"]),
                      "done": False}[s]
                if ok:
                    moves.append((s, c, t))
            if all(s == "done" for s in th) and st["reloaded"]:
                moves.append(("next", c, 0))
        moves += [("land", k, 0) for k in range(len(in_flight))]
        if not moves:
            assert all(state[c]["item"] >= items for c in range(2)), \
                f"deadlock: {[(state[c]['item'], state[c]['threads']) for c in range(2)]}"
            return steps
        what, a, t = rng.choice(moves)
        steps += 1
        if what == "land":
            d, slots, content, bar = in_flight.pop(a)
            write(d, slots, content)
            bar[d].complete_tx(len(slots)) if content[0] == "x2" else bar[d].arrive()
            continue
        c, st = a, state[a]
        i, th = st["item"], st["threads"]
        if what != "arm" and what != "next":
            st["did"][t].add(what)
        nxt = lambda: steps_of[steps_of.index(th[t]) + 1]   # noqa: E731
        if what == "arm":
            xs2bar[c].arrive(expect=expect)
            st["armed"] = True
        elif what == "main":
            for slot in {t, xs2_slot(t)}:   # (half: its warpgroup's weights span both of its slots)
                assert region[c][slot] == ("w", i), f"CTA {c} thread {t} multiplied {region[c][slot]} for item {i}"
                unread[c].discard(slot)
            if half:
                th[t] = "write" if free_before_main else "free"
            else:
                th[t] = "write" if free_after_read else "free"
        elif what == "write":
            write(c, [t], ("x1", i))
            th[t] = nxt()
        elif what == "bar1":
            th[t] = nxt() if (free_after_read or half) else "read1"
        elif what == "read1":
            assert region[c][t ^ 1] == ("x1", i), f"CTA {c} thread {t} read {region[c][t ^ 1]} as item {i}'s Z"
            unread[c].discard(t ^ 1)
            th[t] = "wfree" if half else ("free" if free_after_read else "wfree")
        elif what == "free":
            xsfree[c ^ 1].arrive()
            if half:
                th[t] = "main" if free_before_main else "write"
            else:
                th[t] = "wfree" if free_after_read else "write"
        elif what == "wfree":
            th[t] = nxt()
        elif what == "send":
            in_flight.append((c ^ 1, [xs2_slot(t)], ("x2", i), xs2bar))
            th[t] = nxt()
        elif what == "recv":
            assert region[c][xs2_slot(t)] == ("x2", i), \
                f"CTA {c} thread {t} read {region[c][xs2_slot(t)]} as item {i}'s part"
            unread[c].discard(xs2_slot(t))
            th[t] = nxt()
        elif what == "bar2":
            th[t] = "done"
            if t == 0:   # thread 0 (a leader) requests the next item's weights into the region
                in_flight.append((c, list(range(nslots)), ("w", i + 1), ufull))
                st["reloaded"] = True
        else:   # next item
            st.update(item=i + 1, armed=False, reloaded=False, threads=[first] * THREADS,
                      did=[set() for _ in range(THREADS)])


@pytest.mark.parametrize("items", [1, 2, 3, 8])
def test_the_pairs_exchange_over_items_never_deadlocks_or_overwrites_an_unread_slot(items):
    for seed in range(60):
        assert run(items, seed) > 0


def test_the_model_catches_a_sender_that_does_not_wait_for_its_partners_reads():
    """Without the wfree wait a fast CTA's part lands on a slot whose Z its partner's other warpgroup has not read."""
    with pytest.raises(AssertionError, match="overwrote|read"):
        for seed in range(300):
            run(3, seed, wait_free=False)


def test_the_model_catches_a_free_sent_before_the_reads():
    """A warp that frees the partner before reading the other warpgroup's Z lets the partner's part overwrite it."""
    with pytest.raises(AssertionError, match="overwrote|read"):
        for seed in range(300):
            run(3, seed, free_after_read=False)


def test_the_model_catches_a_weight_request_before_every_thread_read_its_part():
    """The next weights requested by thread 0 without the CTA barrier land over a part another thread still reads."""
    with pytest.raises(AssertionError, match="overwrote|read"):
        for seed in range(300):
            run(3, seed, reload_after_bar=False)


def test_bytes_that_land_before_the_arm_wait_for_it():
    """The partner's bytes may land before thread 0 arms the phase (the transaction count goes below 0): the phase
    still completes only with the arm's arrival (the kernel arms first anyway)."""
    for seed in range(60):
        assert run(3, seed, arm_first=False) > 0


def test_the_model_catches_an_arm_for_too_few_bytes():
    """Armed for one slot less than the partner sends, the phase completes before the last slot lands: a thread reads
    an old part, or the late bytes land in the next phase, which the model reports."""
    with pytest.raises(AssertionError):
        for seed in range(300):
            run(3, seed, expect=THREADS - 1)


@pytest.mark.parametrize("items", [1, 2, 3, 8])
def test_the_half_exchange_frees_the_partner_after_the_products_and_never_overwrites(items):
    """xchg='half': the two exchanges apart in the region and the partner freed right after the products (before the Z
    are written or read): no deadlock, no unread slot overwritten, every read its own item's data."""
    for seed in range(60):
        assert run(items, seed, half=True) > 0


def test_the_model_catches_a_half_exchange_freed_before_the_products():
    """Freed before its products are done, a CTA takes the partner's part over weights its wgmma still reads."""
    with pytest.raises(AssertionError, match="overwrote|multiplied"):
        for seed in range(300):
            run(3, seed, half=True, free_before_main=True)
