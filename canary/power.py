"""Can this window see the effects the judge is asked to catch? Power and minimum detectable effects.

A canary window that holds 120 events at a 1 % alert rate expects 1.2 alerts: a detector that went
silent shows 0, which happens 30 % of the time by chance. No test can call that a failure, and a
judge that then says "pass" has not looked. So before a metric may pass, the judge asks whether
the window could have detected the metric's ``power_effect`` (rollout.analysis.metrics.*) at the
configured ``alpha`` with probability ``rollout.analysis.power``. When it could not, the metric is
*low-power* and the analysis INCONCLUSIVE (never a pass), with the traffic that would do:
``needed_scale`` is how many times the present window (events, or bake time at the same split)
reaches the power.

The alternatives per metric kind:

* **rates** (0/1, Fisher's exact test): a storm of ``power_effect`` times the base rate (and at
  least two floors above it) and, when decreases are bad, silence (rate 0); see
  ``gates.rates.alternative_rates``. Canary against stable uses the conditional binomial test
  (given the total count, the canary's share of events is binomial; Fisher's test conditions the
  same way), with the counts Poisson; canary against its calibrated expectation the exact binomial
  test. A window is powered when either comparison reaches the power.
* **relative_median / relative_mean** (Mann-Whitney U): a shift of ``log(1 + power_effect)`` in
  log units against the stable sample's robust log spread, normal approximation with the U test's
  efficiency 3/pi.
* **energy_shift**: Δ must clear its 99 % noise floor (drift/delta.py) at these sizes, and the U
  test must see a shift of ``power_effect`` robust standard deviations.

Pure functions of counts and sizes; no sampling, so the same numbers give the same answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from drift.delta import effective_size, noise_floor

MAX_SCALE = 1024.0
MW_EFFICIENCY = 3.0 / math.pi  # Mann-Whitney U against the t-test on normal data


@dataclass(frozen=True)
class Power:
    """The power of a window against one metric's target effect."""

    power: float            # the smallest power over the alternatives (0-1)
    target: float           # rollout.analysis.power
    effect: float           # the power_effect it was computed for
    alternatives: dict      # per alternative: its rate/shift and power
    needed_scale: float     # x the present window reaches the target (1.0: already does; inf: never)

    @property
    def enough(self) -> bool:
        return self.power >= self.target

    def to_dict(self) -> dict:
        return {"power": round(self.power, 4), "target": self.target, "effect": self.effect,
                "alternatives": self.alternatives,
                "needed_scale": None if math.isinf(self.needed_scale) else round(self.needed_scale, 3),
                "enough": self.enough}


def _one_sided_level(alpha: float, two_sided: bool) -> float:
    return alpha / 2 if two_sided else alpha


def two_sample_rate_power(n_c: float, n_s: float, base: float, alt: float, alpha: float, *,
                          two_sided: bool) -> float:
    """Power of the conditional binomial test (~ Fisher) that the canary's rate ``alt`` differs from
    stable's ``base`` on ``n_c`` canary and ``n_s`` stable events."""
    if n_c <= 0 or n_s <= 0 or alt == base:
        return 0.0
    a = _one_sided_level(alpha, two_sided)
    mu = n_c * alt + n_s * base
    if mu <= 0:
        return 0.0
    k = np.arange(0, int(mu + 12 * math.sqrt(mu) + 30))
    w = stats.poisson.pmf(k, mu)
    pi0 = n_c / (n_c + n_s)
    pi1 = n_c * alt / mu
    if alt > base:
        x = stats.binom.isf(a, k, pi0)          # reject when the canary's count exceeds x
        p = stats.binom.sf(x, k, pi1)
    else:
        x = stats.binom.ppf(a, k, pi0)           # reject when the canary's count is at most x'
        x = np.where(stats.binom.cdf(x, k, pi0) > a, x - 1, x)
        p = np.where(x >= 0, stats.binom.cdf(x, k, pi1), 0.0)
    return float(np.clip(np.sum(w * p), 0.0, 1.0))


def one_sample_rate_power(n: float, expected: float, alt: float, alpha: float, *, two_sided: bool) -> float:
    """Power of the exact binomial test that a rate ``alt`` differs from ``expected`` on ``n`` events."""
    n = int(n)
    if n <= 0 or alt == expected or not 0 < expected < 1:
        return 0.0
    a = _one_sided_level(alpha, two_sided)
    if alt > expected:
        x = stats.binom.isf(a, n, expected)
        return float(stats.binom.sf(x, n, alt))
    x = stats.binom.ppf(a, n, expected)
    if stats.binom.cdf(x, n, expected) > a:
        x -= 1
    return float(stats.binom.cdf(x, n, alt)) if x >= 0 else 0.0


def shift_power(n_c: float, n_s: float, shift_sd: float, alpha: float, *, two_sided: bool) -> float:
    """Power of the U test to see a location shift of ``shift_sd`` standard deviations."""
    if n_c <= 0 or n_s <= 0 or shift_sd <= 0:
        return 0.0
    n_eff = effective_size(n_s, n_c)
    z = abs(shift_sd) * math.sqrt(MW_EFFICIENCY * n_eff) - stats.norm.isf(_one_sided_level(alpha, two_sided))
    return float(stats.norm.cdf(z))


def needed_scale(power_at, target: float) -> float:
    """The smallest factor m >= 1 with ``power_at(m) >= target`` (bisection after doubling); inf when
    even ``MAX_SCALE`` times the window does not reach it."""
    if power_at(1.0) >= target:
        return 1.0
    hi = 2.0
    while power_at(hi) < target:
        hi *= 2
        if hi > MAX_SCALE:
            return math.inf
    lo = hi / 2
    for _ in range(20):
        mid = (lo + hi) / 2
        if power_at(mid) >= target:
            hi = mid
        else:
            lo = mid
        if hi - lo < 0.02 * lo:
            break
    return hi


def rate_power(n_c: int, n_s: int, stable_rate: float | None, expected: float | None, alternatives: dict,
               *, alpha: float, two_sided: bool, target: float, effect: float,
               alternatives_expected: dict | None = None) -> Power:
    """Power of a 0/1 metric: for each alternative the better of canary-vs-stable (base
    ``stable_rate``, alternatives ``alternatives``) and canary-vs-expectation (``expected``,
    alternatives ``alternatives_expected``); the window's power is the worst alternative's."""
    names = sorted(set(alternatives) | set(alternatives_expected or {}))

    def power_at(m: float) -> tuple[float, dict]:
        per = {}
        for name in names:
            p_s = (two_sample_rate_power(m * n_c, m * n_s, stable_rate, alternatives[name], alpha,
                                         two_sided=two_sided)
                   if stable_rate is not None and name in alternatives else 0.0)
            p_e = (one_sample_rate_power(m * n_c, expected, alternatives_expected[name], alpha, two_sided=two_sided)
                   if expected is not None and alternatives_expected and name in alternatives_expected else 0.0)
            per[name] = max(p_s, p_e)
        return (min(per.values()) if per else 1.0), per

    pw, per = power_at(1.0)
    alts = {name: {"rate": (alternatives or {}).get(name, (alternatives_expected or {}).get(name)),
                   "power": round(per[name], 4)} for name in names}
    scale = needed_scale(lambda m: power_at(m)[0], target)
    return Power(power=pw, target=target, effect=effect, alternatives=alts, needed_scale=scale)


def continuous_power(n_c: int, n_s: int, shift_sd: float, *, alpha: float, two_sided: bool, target: float,
                     effect: float, min_noise_effect: float | None = None) -> Power:
    """Power of a continuous metric to see ``shift_sd`` standard deviations; with ``min_noise_effect``
    (energy) the effect must also clear Δ's noise floor at these sizes, else the power is 0."""

    def power_at(m: float) -> float:
        if min_noise_effect is not None and noise_floor(int(m * n_s), int(m * n_c)) >= min_noise_effect:
            return 0.0
        return shift_power(m * n_c, m * n_s, shift_sd, alpha, two_sided=two_sided)

    pw = power_at(1.0)
    return Power(power=pw, target=target, effect=effect, alternatives={"shift": {"sd": round(shift_sd, 4),
                                                                                  "power": round(pw, 4)}},
                 needed_scale=needed_scale(power_at, target))


def log_spread(x: np.ndarray) -> float:
    """Robust standard deviation (IQR / 1.349) of log values; latencies are log-normal-ish."""
    lx = np.log(np.clip(np.asarray(x, dtype=np.float64), 1e-9, None))
    q75, q25 = np.percentile(lx, [75, 25])
    sd = (q75 - q25) / 1.349
    return float(sd) if sd > 0 else float(np.std(lx)) or 1e-9
