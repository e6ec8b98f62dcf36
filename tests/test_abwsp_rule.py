"""ABWSP's choice rule (abwsp.py): score = (1 − a)·ln(speedup) − a·loss, ties, missing candidates, why."""

from __future__ import annotations

import math

import pytest

from cutlass_wsp.abwsp import Candidate, choose, explain, flip_weight
from cutlass_wsp.sweep.measured import Timed


def cand(axis="R", balance="balanced", speedup=1.0, err=0.5, **kw):
    return Candidate(axis=axis, balance=balance, speedup=speedup, output_error=err, energy_retained=1 - err, **kw)


FAST_BWSP = cand("R", "balanced", speedup=1.30, err=0.60)
ACCURATE_WSP = cand("R", "unbalanced", speedup=1.10, err=0.40)


def test_weight_zero_takes_the_fastest_and_weight_one_the_most_accurate():
    assert choose([FAST_BWSP, ACCURATE_WSP], 0.0) is FAST_BWSP
    assert choose([FAST_BWSP, ACCURATE_WSP], 1.0) is ACCURATE_WSP


def test_the_choice_flips_at_the_weight_the_explanation_names():
    a = flip_weight(FAST_BWSP, ACCURATE_WSP)
    ds = math.log(1.30 / 1.10)
    assert a == pytest.approx(ds / (ds + 0.2))
    assert choose([FAST_BWSP, ACCURATE_WSP], a - 1e-6) is FAST_BWSP
    assert choose([FAST_BWSP, ACCURATE_WSP], a + 1e-6) is ACCURATE_WSP
    why = explain(FAST_BWSP, [FAST_BWSP, ACCURATE_WSP], 0.3)
    assert "BWSP-R is 18% faster, WSP-R has 0.200 less loss" in why and f"would win at weight > {a:.2f}" in why
    why = explain(ACCURATE_WSP, [FAST_BWSP, ACCURATE_WSP], 0.9)
    assert "WSP-R has 0.200 less loss, BWSP-R is 18% faster" in why and f"would win at weight < {a:.2f}" in why


def test_a_candidate_faster_and_more_accurate_wins_at_every_weight():
    best = cand("C", "unbalanced", speedup=1.4, err=0.3)
    for w in (0.0, 0.5, 1.0):
        assert choose([FAST_BWSP, ACCURATE_WSP, best], w) is best
    assert flip_weight(best, FAST_BWSP) is None
    assert "faster and more accurate than" in explain(best, [best, cand("C", "balanced", 1.2, 0.5)], 0.5)


def test_ties_go_to_the_more_accurate_then_the_faster_then_bwsp_then_r():
    same_speed_worse = cand("R", "balanced", speedup=1.2, err=0.6)
    same_speed_better = cand("R", "unbalanced", speedup=1.2, err=0.5)
    assert choose([same_speed_worse, same_speed_better], 0.0) is same_speed_better      # speed tie: accuracy
    same_loss_slow = cand("R", "unbalanced", speedup=1.1, err=0.5)
    same_loss_fast = cand("R", "balanced", speedup=1.2, err=0.5)
    assert choose([same_loss_slow, same_loss_fast], 1.0) is same_loss_fast               # loss tie: speed
    twins = [cand("C", "unbalanced", 1.2, 0.5), cand("C", "balanced", 1.2, 0.5), cand("R", "balanced", 1.2, 0.5)]
    for w in (0.0, 0.5, 1.0):
        assert choose(twins, w).label == "BWSP-R"
        assert choose(twins[:2], w).label == "BWSP-C"
    why = explain(twins[1], twins[:2], 0.5)
    assert "tie on speed and proxy" in why and "keeps BWSP-C" in why


def test_an_exact_score_tie_between_different_candidates_keeps_the_more_accurate():
    fast = cand("R", "balanced", speedup=math.e ** 0.1, err=0.6)
    slow = cand("R", "unbalanced", speedup=1.0, err=0.5)    # at a = 0.5: 0.5·0.1 − 0.5·0.6 = −0.5·0.5
    assert fast.score(0.5) == pytest.approx(slow.score(0.5))
    assert choose([fast, slow], 0.5) is slow
    assert "score the same at weight 0.5" in explain(slow, [fast, slow], 0.5)


def test_unavailable_candidates_are_never_chosen_and_the_reason_is_given():
    gone = cand("R", "balanced", speedup=9.0, err=0.0, unavailable="no verified row (2 wrong)")
    no_speed = Candidate("C", "balanced", speedup=None, output_error=0.1)
    assert choose([gone, no_speed, ACCURATE_WSP], 0.0) is ACCURATE_WSP
    why = explain(ACCURATE_WSP, [gone, ACCURATE_WSP], 0.0)
    assert "BWSP-R cannot be chosen (no verified row (2 wrong)); WSP-R can" in why
    assert choose([gone, no_speed], 0.5) is None
    assert explain(None, [gone], 0.5).startswith("no candidate can be chosen (BWSP-R: no verified row (2 wrong))")


def test_the_other_axis_is_explained_too():
    c = cand("C", "balanced", speedup=1.05, err=0.55)
    why = explain(FAST_BWSP, [FAST_BWSP, ACCURATE_WSP, c], 0.0)
    assert "R over C: the best C candidate, BWSP-C (1.05×, output error 0.550), scores" in why


def test_the_proxy_decides_what_the_loss_is():
    x = Candidate("R", "balanced", speedup=1.0, output_error=0.9, energy_retained=0.4, drop=2.0)
    assert x.loss == 0.9
    assert Candidate(**{**x.__dict__, "proxy": "energy"}).loss == pytest.approx(0.6)
    assert Candidate(**{**x.__dict__, "proxy": "drop"}).loss == pytest.approx(0.2)   # 10 points of top-1 = 1
    assert Candidate(**{**x.__dict__, "proxy": "drop", "drop": None}).available is False
    assert Candidate(**{**x.__dict__, "output_error": math.inf}).available is False


def test_a_speed_difference_inside_the_timing_spread_is_said():
    t1 = Timed("k1", "wsp-r", "cutlass", 4, 0.7, "balanced", "layer", 0.100, 0.095, 0.105)
    t2 = Timed("k2", "wsp-r", "cutlass-grouped", 4, 0.7, "unbalanced", "layer", 0.103, 0.099, 0.110)
    x = cand("R", "balanced", speedup=1 / 0.100, err=0.5, time=t1)
    y = cand("R", "unbalanced", speedup=1 / 0.103, err=0.6, time=t2)
    assert "within the timing spread" in explain(x, [x, y], 0.5)
