"""The input-region multicast's ring protocol (templates/_fused_rs.cu.j2, rs_desc(rmcast=k)), run as a model under
random interleavings: no deadlock, and no stage overwritten before every warp of every CTA of the cluster has read
it. A hang on the GPU costs a device call (the mbarrier watchdog traps after ~8 s and poisons the process), so the
protocol is checked here first, step for step as the template writes it:

  start     thread 0 of each CTA arms rawfull[s] (1 arrival + the region's bytes) for chunks 0 .. STAGES - 1;
            cluster_sync; (one-shot CTAs, `ring.kick`:) thread 0 multicasts its own stages' chunks < STAGES;
  per chunk k of each warp (stage s = k % STAGES):
            thread 0 (warp 0): for next_raw < kall and < k + STAGES: skip stages another CTA owns (s % RMCAST);
            an owned chunk >= STAGES needs rawfree[s] of its release phase (next_raw / STAGES - 1) & 1: wait for it
            if next_raw <= k, else test it and stop if not done; then multicast the chunk (complete_tx and the
            data land in every CTA later, asynchronously);
            every warp waits rawfull[s] with parity (k / STAGES) & 1, reads the stage;
            lane 0 of each warp: thread 0 first arms rawfull[s] for chunk k + STAGES (if < kall), then each arrives
            on the owner's rawfree[s] (RMCAST x WARPS arrivals per phase).

mbarrier as the PTX ISA defines it: a phase completes when its pending arrivals reach 0 and its transaction count is
0 (the count may go below 0 when bytes land before they are expected); try_wait.parity(P) succeeds while the current
phase's parity differs from P.
"""

from __future__ import annotations

import random

import pytest

WARPS = 8


class Bar:
    def __init__(self, count: int):
        self.count, self.pending, self.tx, self.phase = count, count, 0, 0

    def _maybe_complete(self):
        if self.pending == 0 and self.tx == 0:
            self.phase += 1
            self.pending = self.count

    def arrive(self, expect: int = 0):
        self.tx += expect
        self.pending -= 1
        assert self.pending >= 0, "more arrivals than the phase expects"
        self._maybe_complete()

    def complete_tx(self, n: int):
        self.tx -= n
        self._maybe_complete()

    def done(self, parity: int) -> bool:   # try_wait.parity
        return (self.phase & 1) != parity


def run(rmcast: int, stages: int, kall: int, seed: int, kick: bool = False, tail: bool = True) -> int:
    """Simulate one cluster; returns the number of steps. Raises AssertionError on a deadlock or a lost chunk.
    kick: after the cluster_sync each thread 0 requests its own stages of the first ring at once (the one-shot
    kernels' `ring.kick`), before its warps start. tail=False (`ring.release(tail=false)`, generation 5's tma
    epilogue): no warp releases a chunk k with k + STAGES >= kall (no owner waits for those)."""
    rng = random.Random(seed)
    assert stages % rmcast == 0
    full = [[Bar(1) for _ in range(stages)] for _ in range(rmcast)]
    free = [[Bar(rmcast * WARPS) for _ in range(stages)] for _ in range(rmcast)]
    data = [[None] * stages for _ in range(rmcast)]             # the chunk each CTA's stage holds
    readers = [[set() for _ in range(stages)] for _ in range(rmcast)]   # warps that still read the stage's chunk
    for c in range(rmcast):                                     # start: thread 0 arms the first ring, cluster_sync
        for j in range(min(stages, kall)):
            full[c][j].arrive(expect=1)
    in_flight = []                                              # (cta, stage, chunk): multicast bytes on their way
    next_raw = [0] * rmcast
    # each warp: (chunk k, state) with state "head" (thread 0's producer step), "wait", "read", "release"
    warp = {(c, w): [0, "head" if w == 0 else "wait"] for c in range(rmcast) for w in range(WARPS)}
    steps = 0
    if kick:
        for c in range(rmcast):
            while next_raw[c] < min(stages, kall):
                if next_raw[c] % rmcast == c:
                    in_flight.extend((d, next_raw[c], next_raw[c]) for d in range(rmcast))
                next_raw[c] += 1

    def producer_step(c: int, k: int) -> bool:
        """Thread 0's loop at chunk k's head; False while it waits (for chunk k's release)."""
        while next_raw[c] < kall and next_raw[c] < k + stages:
            n = next_raw[c]
            st = n % stages
            if st % rmcast != c:
                next_raw[c] += 1
                continue
            if n >= stages and not free[c][st].done((n // stages - 1) & 1):
                if n <= k:
                    return False      # wait_late: blocked
                break                 # test_bar: not yet, go on
            for d in range(rmcast):   # the multicast: each CTA's stage gets the chunk, later
                in_flight.append((d, st, n))
            next_raw[c] += 1
        return True

    while True:
        runnable = [key for key, (k, _) in warp.items() if k < kall]
        if not runnable and not in_flight:
            return steps
        moves = []
        for key in runnable:
            c, w = key
            k, state = warp[key]
            s = k % stages
            if state == "head" and producer_step(c, k):
                moves.append(("head", key))
            elif state == "wait" and full[c][s].done((k // stages) & 1):
                moves.append(("wait", key))
            elif state in ("read", "release"):
                moves.append((state, key))
        moves += [("land", i) for i in range(len(in_flight))]
        assert moves, f"deadlock: warps at {sorted(set(tuple(v) for v in warp.values()))}, next_raw {next_raw}"
        what, arg = rng.choice(moves)
        steps += 1
        if what == "land":
            d, st, n = in_flight.pop(arg)
            assert not readers[d][st], f"chunk {n} overwrote stage {st} of CTA {d} while warps still read it"
            assert data[d][st] is None or data[d][st] == n - stages, f"CTA {d} stage {st} skipped a chunk before {n}"
            data[d][st] = n
            readers[d][st] = set(range(WARPS))
            full[d][st].complete_tx(1)
            continue
        c, w = arg
        k, state = warp[arg]
        s = k % stages
        if what == "head":
            warp[arg][1] = "wait"
        elif what == "wait":
            warp[arg][1] = "read"
        elif what == "read":
            assert data[c][s] == k, f"CTA {c} warp {w} read chunk {data[c][s]} for chunk {k}"
            readers[c][s].discard(w)
            warp[arg][1] = "release"
        else:   # release: lane 0 (thread 0 arms the stage's next chunk first), then on to the next chunk
            if w == 0 and k + stages < kall:
                full[c][s].arrive(expect=1)
            if tail or k + stages < kall:
                free[s % rmcast][s].arrive()
            warp[arg] = [k + 1, "head" if w == 0 else "wait"]


@pytest.mark.parametrize("rmcast,stages", [(2, 2), (2, 4), (2, 6), (4, 4), (4, 8)])
@pytest.mark.parametrize("kall", [1, 3, 7, 25])
@pytest.mark.parametrize("kick", [False, True])
def test_the_region_multicast_ring_never_deadlocks_or_overwrites_an_unread_stage(rmcast, stages, kall, kick):
    for seed in range(12):
        assert run(rmcast, stages, kall, seed, kick) > 0


@pytest.mark.parametrize("stages", [2, 4, 6])
@pytest.mark.parametrize("kall", [1, 2, 3, 4, 5, 16, 17])
def test_the_pairs_ring_without_its_last_releases_never_deadlocks(stages, kall):
    """Generation 5's tma epilogue: the pair (RMCAST 2), the first stages requested after the join (kick), and no
    release of the last ring's chunks: every request the owners make still finds its release, so the mainloop ends
    with no remote arrive left to send."""
    for seed in range(12):
        assert run(2, stages, kall, seed, kick=True, tail=False) > 0


def test_the_model_catches_a_missing_release_nobody_may_skip():
    """The check can fail: dropping a release an owner does wait for (chunk 0's, by every warp of the pair) leaves
    it waiting forever to reload that stage, which the model reports as a deadlock."""
    original = Bar.arrive
    try:
        def arrive(self, expect: int = 0):   # the first rawfree arrivals (chunk 0's releases) go missing
            if self.count > 1 and getattr(arrive, "skip", 0) > 0:
                arrive.skip -= 1
                return
            original(self, expect)
        arrive.skip = 2 * WARPS   # one stage's release by every warp of the pair
        Bar.arrive = arrive
        with pytest.raises(AssertionError, match="deadlock"):
            run(2, 4, 25, 0, kick=True, tail=False)
    finally:
        Bar.arrive = original


def test_the_model_catches_a_wrong_release_parity():
    """The check can fail: waiting for the release phase of parity (n / STAGES) & 1 instead of (n / STAGES - 1) & 1
    lets the owner overwrite a stage one ring too early (or never), which the model reports."""
    original = Bar.done
    try:
        Bar.done = lambda self, parity: (self.phase & 1) == parity if self.count > 1 else original(self, parity)
        with pytest.raises(AssertionError):
            for seed in range(12):
                run(2, 4, 25, seed)
    finally:
        Bar.done = original
