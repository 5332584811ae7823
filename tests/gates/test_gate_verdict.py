"""Verdict order and the worst-wins combine."""

from __future__ import annotations

import math

import pytest

from gates.verdict import CheckResult, Verdict, combine

P, S, I, F = Verdict.PASS, Verdict.SKIPPED, Verdict.INCONCLUSIVE, Verdict.FAIL


def r(v, name="c"):
    return CheckResult(name, v, 1.0, 2.0, "reason")


def test_order_is_by_severity():
    assert P < S < I < F
    assert sorted([F, P, I, S]) == [P, S, I, F]
    assert F.worse_than(I) and I.worse_than(S) and S.worse_than(P) and not P.worse_than(S)


@pytest.mark.parametrize("verdicts, expected", [
    ([P, P], P),
    ([P, S], S),
    ([P, S, I], I),
    ([I, F, P], F),
    ([F, S], F),
    ([S, S], I),   # nothing measured
    ([], I),
])
def test_combine_worst_wins(verdicts, expected):
    assert combine([r(v) for v in verdicts]) is expected
    assert combine(verdicts) is expected


def test_what_each_verdict_does():
    assert P.promotes and S.promotes and not I.promotes and not F.promotes
    assert (P.action, S.action, I.action, F.action) == ("promote", "promote", "hold for a human", "reject")


def test_check_result_round_trip_with_non_finite_numbers():
    c = CheckResult("energy_shift", F, math.inf, 0.1, "why", {"nested": [math.nan, 1.0], "x": -math.inf})
    back = CheckResult.from_dict(c.to_dict())
    assert back.value == math.inf and back.threshold == 0.1 and back.verdict is F
    assert math.isnan(back.details["nested"][0]) and back.details["x"] == -math.inf
