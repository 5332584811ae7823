"""The power rule's arithmetic (canary/power.py): exact-test power of rate windows, U-test power of shifts."""

import math

import pytest

from canary.power import (continuous_power, needed_scale, one_sample_rate_power, rate_power, shift_power,
                          two_sample_rate_power)


@pytest.mark.parametrize("n_c, expected, power_at_least, power_below", [
    (120, 0.01, 0.0, 0.01),     # 1.2 expected alerts: silence is indistinguishable from luck
    (600, 0.01, 0.99, 1.01),    # 6 expected: 0 of 600 has p 0.0024 < 0.025, always detected
])
def test_silence_against_the_calibrated_rate(n_c, expected, power_at_least, power_below):
    p = one_sample_rate_power(n_c, expected, 0.0, 0.05, two_sided=True)
    assert power_at_least <= p < power_below


def test_power_grows_with_the_window_and_the_effect():
    small = two_sample_rate_power(300, 2048, 0.01, 0.03, 0.05, two_sided=True)
    large = two_sample_rate_power(1800, 2048, 0.01, 0.03, 0.05, two_sided=True)
    bigger_effect = two_sample_rate_power(300, 2048, 0.01, 0.05, 0.05, two_sided=True)
    assert small < large and small < bigger_effect and large > 0.95
    assert two_sample_rate_power(1800, 2048, 0.01, 0.01, 0.05, two_sided=True) == 0.0  # no effect: no power
    assert two_sample_rate_power(0, 2048, 0.01, 0.03, 0.05, two_sided=True) == 0.0


def test_two_sample_power_matches_simulation():
    import numpy as np
    from scipy import stats

    rng = np.random.default_rng(7)
    n_c, n_s, base, alt, hits = 1000, 2000, 0.01, 0.025, 0
    for _ in range(400):
        kc, ks = rng.binomial(n_c, alt), rng.binomial(n_s, base)
        hits += stats.fisher_exact([[kc, n_c - kc], [ks, n_s - ks]], alternative="greater").pvalue < 0.025
    p = two_sample_rate_power(n_c, n_s, base, alt, 0.05, two_sided=True)
    assert p == pytest.approx(hits / 400, abs=0.08)


def test_needed_scale_finds_the_window_that_reaches_the_target():
    f = lambda m: one_sample_rate_power(120 * m, 0.01, 0.0, 0.05, two_sided=True)  # noqa: E731
    m = needed_scale(f, 0.8)
    assert f(m) >= 0.8 and f(m * 0.9) < 0.8 and 2.5 < m < 4
    assert needed_scale(lambda m: 0.0, 0.8) == math.inf and needed_scale(lambda m: 1.0, 0.8) == 1.0


def test_rate_power_takes_the_better_comparison_per_alternative():
    pw = rate_power(600, 2048, 0.01, 0.01, {"up": 0.03, "silent": 0.0}, alpha=0.025, two_sided=True, target=0.8,
                    effect=3.0, alternatives_expected={"up": 0.03, "silent": 0.0})
    assert pw.enough and set(pw.alternatives) == {"up", "silent"} and pw.needed_scale == 1.0
    thin = rate_power(600, 2048, 0.001, 0.001, {"up": 0.003, "silent": 0.0}, alpha=0.025, two_sided=True,
                      target=0.8, effect=3.0, alternatives_expected={"up": 0.003, "silent": 0.0})
    assert not thin.enough and 3 < thin.needed_scale < 20
    assert thin.to_dict()["enough"] is False


def test_shift_power_and_the_energy_noise_floor():
    assert shift_power(2000, 2000, 0.2, 0.05, two_sided=True) > 0.99
    assert shift_power(20, 20, 0.2, 0.05, two_sided=True) < 0.3
    # Δ 0.2 below the 99 % noise floor (2.5 / sqrt(n_eff)) at 100 vs 100: no power however clear the U test
    assert continuous_power(100, 100, 0.2, alpha=0.05, two_sided=True, target=0.8, effect=0.2,
                            min_noise_effect=0.2).power == 0.0
