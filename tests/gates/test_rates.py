"""The shared rate rule (gates/rates.py): ratio with an absolute floor, both directions, a fail limit."""

import math

import pytest

from ebmops.core.settings import GateSettings
from gates.checks import check_alert_rate
from gates.rates import RateRule, alternative_rates, rate_effect

RULE = RateRule(max_ratio=2.0, abs_floor=0.0005, fail_ratio=3.0)


@pytest.mark.parametrize("rate, base, material, beyond_fail, kind", [
    (0.010, 0.010, False, False, None),        # no change
    (0.015, 0.010, False, False, None),        # x1.5: inside the ratio
    (0.025, 0.010, True, False, "storm"),      # x2.5: material, not past the fail limit
    (0.030, 0.010, True, False, "storm"),      # x3 exactly: the limit is strict
    (0.050, 0.010, True, True, "storm"),       # x5
    (0.000, 0.010, True, True, "silence"),     # silent detector
    (0.004, 0.010, True, False, "silence"),    # /2.5
    (0.0002, 0.0001, False, False, None),      # x2 of nothing: 0.01 % vs 0.02 % never pages
    (0.0004, 0.0001, False, False, None),      # x4 but 0.03 points: under the floor
    (0.003, 0.001, True, False, "storm"),      # x3 at a 0.1 % base: 0.2 points, over the floor
    (0.000, 0.000, False, False, None),        # nothing either side
    (0.002, 0.000, True, True, "storm"),       # alerts from a base of zero: ratio inf, over the floor
])
def test_rate_effect_grid(rate, base, material, beyond_fail, kind):
    e = rate_effect(rate, base, RULE)
    assert (e.material, e.beyond_fail, e.kind) == (material, beyond_fail, kind)
    assert e.gap == pytest.approx(rate - base)


def test_direction_limits_what_is_bad():
    up = RateRule(max_ratio=2.0, abs_floor=0.0, direction="increase")
    assert rate_effect(0.03, 0.01, up).material and not rate_effect(0.0, 0.01, up).material
    down = RateRule(max_ratio=2.0, abs_floor=0.0, direction="decrease")
    assert rate_effect(0.0, 0.01, down).material and not rate_effect(0.03, 0.01, down).material
    assert rate_effect(0.0, 0.0, up).ratio == 1.0 and math.isinf(rate_effect(0.1, 0.0, up).ratio)


def test_bad_rules_and_rates_are_refused():
    with pytest.raises(ValueError, match="exceed 1"):
        RateRule(max_ratio=1.0)
    with pytest.raises(ValueError, match="fail_ratio"):
        RateRule(max_ratio=2.0, fail_ratio=0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rate_effect(1.5, 0.01, RULE)


def test_alternatives_the_power_rule_asks_for():
    assert alternative_rates(0.01, RULE, 3.0) == {"up": pytest.approx(0.03), "silent": 0.0}
    # at a tiny base the up alternative is two floors above it, and silence is under the floor: not asked
    assert alternative_rates(0.0002, RULE, 3.0) == {"up": pytest.approx(0.0012)}
    inc = RateRule(max_ratio=2.0, abs_floor=0.005, direction="increase")
    assert alternative_rates(0.001, inc, 2.0) == {"up": pytest.approx(0.011)}


@pytest.mark.parametrize("cand, champ", [(c, b) for b in (0.0, 0.0004, 0.001, 0.005, 0.01, 0.05)
                                         for c in (0.0, 0.0004, 0.001, 0.003, 0.009, 0.011, 0.02, 0.05, 0.2)])
def test_the_gate_uses_the_same_rule(cand, champ):
    cfg = GateSettings()
    rule = RateRule(max_ratio=cfg.alert_rate_max_ratio, abs_floor=cfg.alert_rate_abs_tolerance)
    gate = [r for r in check_alert_rate(cand, champ, cfg, n_events=10_000) if r.name == "alert_rate_vs_champion"][0]
    assert (gate.verdict.value == "fail") == rate_effect(cand, champ, rule).material
