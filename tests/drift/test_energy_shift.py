"""Δ = W1(ref, cur) / IQR-sigma(ref): exactness, gauge invariance, sensitivity, degenerate inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from drift import alert_rate, effective_size, energy_shift, noise_floor, robust_spread, wasserstein_1d


def energies(rng, n):
    """Right-skewed, energy-like: a Gumbel bulk plus a few far anomalies."""
    e = rng.gumbel(loc=2.0, scale=0.7, size=n)
    e[: max(1, n // 200)] += 8.0
    return e


@pytest.mark.parametrize("seed", range(8))
def test_invariant_under_common_shift_and_positive_scale(seed):
    rng = np.random.default_rng(seed)
    ref = energies(rng, int(rng.integers(500, 5000)))
    cur = energies(rng, int(rng.integers(500, 5000))) * rng.uniform(0.8, 1.3) + rng.uniform(-0.5, 0.5)
    base = energy_shift(ref, cur)
    a, b = 10 ** rng.uniform(-3, 3), rng.uniform(-1e3, 1e3)
    assert energy_shift(a * ref + b, a * cur + b) == pytest.approx(base, rel=1e-6)
    assert energy_shift(ref + b, cur + b) == pytest.approx(base, rel=1e-6)
    assert energy_shift(a * ref, a * cur) == pytest.approx(base, rel=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_w1_is_exact_against_scipy(seed):
    rng = np.random.default_rng(100 + seed)
    x = rng.normal(size=int(rng.integers(1, 300)))
    y = rng.exponential(size=int(rng.integers(1, 300)))
    assert wasserstein_1d(x, y) == pytest.approx(wasserstein_distance(x, y), rel=1e-12, abs=1e-12)
    assert wasserstein_1d(x, x[::-1]) == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_planted_half_spread_shift_is_caught(seed):
    rng = np.random.default_rng(200 + seed)
    ref = energies(rng, 5000)
    cur = energies(rng, 8000) + 0.5 * robust_spread(ref)
    assert energy_shift(ref, cur) > 0.10
    assert energy_shift(ref, cur) == pytest.approx(0.5, abs=0.08)


def test_spread_change_without_mean_change_is_caught():
    rng = np.random.default_rng(3)
    ref = rng.normal(size=20000)
    assert energy_shift(ref, 1.5 * rng.normal(size=20000)) > 0.10


def test_normal_mean_shift_reads_in_sigmas():
    rng = np.random.default_rng(4)
    assert energy_shift(rng.normal(0, 2, 50000), rng.normal(0.6, 2, 50000)) == pytest.approx(0.3, abs=0.02)


@pytest.mark.parametrize("seed", range(6))
def test_same_distribution_is_near_zero_and_below_noise_floor(seed):
    rng = np.random.default_rng(300 + seed)
    ref, cur = energies(rng, 5000), energies(rng, 10000)
    d = energy_shift(ref, cur)
    assert d < noise_floor(5000, 10000) < 0.10
    assert energy_shift(ref, ref) == 0.0
    assert energy_shift(ref, rng.permutation(ref)) == 0.0


def test_zero_spread_reference():
    const = np.full(100, 3.0)
    assert energy_shift(const, np.full(7, 3.0)) == 0.0
    assert energy_shift(const, [3.0, 3.5]) == math.inf
    # IQR 0 but not constant: the standard deviation takes over and Δ stays finite.
    ref = np.r_[np.zeros(90), np.ones(10)]
    assert robust_spread(ref) == pytest.approx(np.std(ref))
    assert 0 < energy_shift(ref, np.r_[np.zeros(80), np.ones(20)]) < math.inf


def test_rejects_empty_and_non_finite():
    with pytest.raises(ValueError, match="empty"):
        energy_shift([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        energy_shift([1.0, 2.0], [1.0, float("nan")])
    with pytest.raises(ValueError, match="threshold"):
        alert_rate([1.0], float("nan"))


def test_alert_rate_counts_strictly_above_threshold():
    assert alert_rate([1, 2, 3, 4], 2) == 0.5
    assert alert_rate([1, 2, 3, 4], 4) == 0.0
    assert alert_rate(np.arange(1000.0), 989.5) == 0.01


def test_effective_size_and_noise_floor():
    assert effective_size(1000, 1000) == 500
    assert effective_size(0, 10) == 0
    assert noise_floor(0, 10) == math.inf
    assert noise_floor(4000, 4000) == pytest.approx(2.5 / math.sqrt(2000))


def test_trimmed_shift_ignores_a_heavy_tail_but_catches_a_bulk_shift():
    """Two samples of one heavy-tailed distribution: the extreme tail alone must not read as drift."""
    import numpy as np

    from drift.delta import energy_shift

    rng = np.random.default_rng(3)

    def energies(n):  # a normal bulk plus 0.5 % of events far out in a Pareto tail, as EBM energies are
        e = rng.normal(size=n)
        tail = rng.random(n) < 0.005
        e[tail] = 20 + 20 * rng.pareto(1.0, size=tail.sum())
        return e

    ref, cur = energies(5000), energies(20000)
    assert energy_shift(ref, cur, trim=0.0) > energy_shift(ref, cur)  # the tail inflates untrimmed W1
    assert energy_shift(ref, cur) < 0.10
    assert energy_shift(ref, cur + 0.5) > 0.10


def test_trim_is_validated():
    import pytest

    from drift.delta import energy_shift

    with pytest.raises(ValueError, match="trim"):
        energy_shift([1.0, 2.0], [1.0, 2.0], trim=0.7)
