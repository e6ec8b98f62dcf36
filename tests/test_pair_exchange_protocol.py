"""The pair's output exchange of generation 5 as a persistent pair would run it item after item (docs/fused.md, "The
persistent pair, as designed here for the next session"), run as a model under random interleavings before any
kernel is written: no deadlock, no xs2 overwritten before its reader is done, every read sees its own item's part.
The one-shot async / tma epilogue is its first item (items=1).

Per item i of each CTA c of the pair (its partner c ^ 1), as the design writes it:
  arm       thread 0 arrives on its own xs2bar with the bytes it expects (parity i & 1);
  free      (i >= 1) every thread waits on its own xs2free with parity (i - 1) & 1: the partner has read the part
            this CTA sent it for item i - 1, so its xs2 may be written again;
  send      each thread's st.async into the partner's xs2 completes bytes on the partner's xs2bar (asynchronously:
            the bytes land later, in any order);
  recv      every thread waits on its own xs2bar with parity i & 1, reads its xs2 (the partner's part of item i);
  release   after a CTA barrier, thread 0 arrives remotely on the partner's xs2free (1 arrival a phase).

mbarrier as the PTX ISA defines it (tests/test_rmcast_protocol.py's Bar): a phase completes when its pending arrivals
reach 0 and its transaction count is 0; try_wait.parity(P) succeeds while the current phase's parity differs from P.
"""

from __future__ import annotations

import random

import pytest

from test_rmcast_protocol import Bar

THREADS = 4   # threads per CTA in the model (each sends and reads one slot; the kernel's 256 behave alike)


def run(items: int, seed: int, *, wait_free: bool = True, arm_first: bool = True, expect: int = THREADS) -> int:
    """Simulate one pair over `items` items; returns the steps. AssertionError on a deadlock, an overwrite of an
    unread xs2 or a read of the wrong item. `wait_free=False` drops the free step; `arm_first=False` arms xs2bar
    only once every thread has reached its recv wait (after the partner's bytes may have landed); `expect` is the
    bytes (slots) thread 0 arms for."""
    rng = random.Random(seed)
    xs2bar = [Bar(1) for _ in range(2)]
    xs2free = [Bar(1) for _ in range(2)]
    xs2 = [[None] * THREADS for _ in range(2)]          # the item whose part each slot holds
    unread = [set() for _ in range(2)]                  # slots of each CTA's xs2 written and not yet read
    in_flight = []                                      # (to CTA, slot, item): st.async bytes on their way
    # per CTA: item, and per thread its state; thread 0 also arms (before anything else of the item) and releases
    state = {c: {"item": 0, "armed": False, "threads": ["free"] * THREADS, "read": 0} for c in range(2)}
    steps = 0
    while True:
        moves = []
        for c in range(2):
            st = state[c]
            i = st["item"]
            if i >= items:
                continue
            if arm_first and not st["armed"]:
                moves.append(("arm", c, 0))
                continue
            for t, s in enumerate(st["threads"]):
                if s == "free" and (i == 0 or not wait_free or xs2free[c].done((i - 1) & 1)):
                    moves.append(("free", c, t))
                elif s == "send":
                    moves.append(("send", c, t))
                elif s == "recv" and (st["armed"] or not arm_first) and xs2bar[c].done(i & 1):
                    moves.append(("recv", c, t))
            if not arm_first and not st["armed"] and all(s == "recv" for s in st["threads"]):
                moves.append(("arm", c, 0))
            if all(s == "done" for s in st["threads"]):
                moves.append(("release", c, 0))
        moves += [("land", k, 0) for k in range(len(in_flight))]
        if not moves:
            assert all(state[c]["item"] >= items for c in range(2)), \
                f"deadlock: {[(state[c]['item'], state[c]['threads']) for c in range(2)]}"
            return steps
        what, a, t = rng.choice(moves)
        steps += 1
        if what == "land":
            d, slot, item = in_flight.pop(a)
            assert slot not in unread[d], f"item {item}'s part overwrote CTA {d}'s unread slot {slot}"
            xs2[d][slot] = item
            unread[d].add(slot)
            xs2bar[d].complete_tx(1)
            continue
        c, st = a, state[a]
        i = st["item"]
        if what == "arm":
            xs2bar[c].arrive(expect=expect)
            st["armed"] = True
        elif what == "free":
            st["threads"][t] = "send"
        elif what == "send":
            in_flight.append((c ^ 1, t, i))
            st["threads"][t] = "recv"
        elif what == "recv":
            assert xs2[c][t] == i, f"CTA {c} thread {t} read item {xs2[c][t]}'s part for item {i}"
            unread[c].discard(t)
            st["threads"][t] = "done"
        else:   # release: the CTA barrier passed, thread 0 frees the partner to send the next item
            xs2free[c ^ 1].arrive()
            st.update(item=i + 1, armed=False, threads=["free"] * THREADS)


@pytest.mark.parametrize("items", [1, 2, 3, 8])
def test_the_pairs_exchange_over_items_never_deadlocks_or_overwrites_an_unread_part(items):
    for seed in range(40):
        assert run(items, seed) > 0


def test_the_model_catches_a_sender_that_does_not_wait_for_its_partners_read():
    """Without the free step a fast CTA's next part lands on a slot its partner has not read yet."""
    with pytest.raises(AssertionError, match="overwrote|read item"):
        for seed in range(200):
            run(4, seed, wait_free=False)


def test_bytes_that_land_before_the_arm_wait_for_it():
    """The partner's bytes may land before thread 0 arms the phase (the transaction count goes below 0): the phase
    still completes only with the arm's arrival, so arming late is safe (the kernel arms right after its mainloop)."""
    for seed in range(40):
        assert run(3, seed, arm_first=False) > 0


def test_the_model_catches_an_arm_for_too_few_bytes():
    """Armed for one slot less than the partner sends, the phase completes before the last slot lands: a thread reads
    an old part, or the late bytes land in the next phase, which the model reports."""
    with pytest.raises(AssertionError):
        for seed in range(200):
            run(3, seed, expect=THREADS - 1)
