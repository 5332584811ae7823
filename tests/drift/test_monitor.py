"""Drift monitor decisions on constructed numbers: levels, references, cooldowns, modes."""

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from drift.delta import energy_shift
from drift.monitor import (HOTFIX, NO_DATA, OK, WARN, choose_reference, hotfix_decision, hotfix_mode, level_of,
                           observe, sketch)

NOW = datetime(2026, 11, 26, 12, tzinfo=timezone.utc)


@dataclass
class Obs:
    created_at: datetime
    quantiles: list


def _ref(n=20000, seed=0):
    return np.random.default_rng(seed).gamma(2.0, 1.0, n)


@pytest.mark.parametrize("shift,expected", [(0.0, OK), (0.06, WARN), (0.2, HOTFIX)])
def test_planted_shifts_are_classified(shift, expected):
    ref = _ref()
    iqr = np.subtract(*np.quantile(ref, [0.75, 0.25]))
    cur = _ref(seed=1) + shift * iqr  # a shift of `shift` reference spreads
    reference = choose_reference([], NOW, age_h=168, tolerance_h=12, calibration=ref)
    delta, level = observe(cur, reference, min_events=200, warn=0.05, hotfix=0.10)
    assert level == expected, delta
    # Δ is a shift in units of the reference's robust spread: proportional to the planted shift
    assert shift <= delta + 0.02 and delta <= 1.5 * shift + 0.02


def test_levels_and_no_data():
    assert level_of(0.049, warn=0.05, hotfix=0.1) == OK
    assert level_of(0.05, warn=0.05, hotfix=0.1) == WARN
    assert level_of(0.1, warn=0.05, hotfix=0.1) == HOTFIX
    assert level_of(None, warn=0.05, hotfix=0.1) == NO_DATA
    ref = choose_reference([], NOW, age_h=168, tolerance_h=12, calibration=_ref())
    assert observe(_ref(n=50), ref, min_events=200, warn=0.05, hotfix=0.1) == (None, NO_DATA)
    assert observe(_ref(), None, min_events=200, warn=0.05, hotfix=0.1) == (None, NO_DATA)


def test_a_sketch_stands_in_for_the_sample():
    a, b = _ref(seed=2), _ref(seed=3) * 1.3 + 0.2
    assert energy_shift(np.asarray(sketch(a, 201)), b) == pytest.approx(energy_shift(a, b), abs=0.01)
    assert sketch([np.nan, np.inf], 11) == []


def test_reference_is_the_observation_a_week_earlier_else_calibration():
    week = NOW - timedelta(hours=168)
    obs = [Obs(week - timedelta(hours=20), [1.0] * 5), Obs(week + timedelta(hours=3), [2.0] * 5),
           Obs(week - timedelta(hours=1), [3.0] * 5)]
    ref = choose_reference(obs, NOW, age_h=168, tolerance_h=12, calibration=np.ones(10))
    assert ref.kind == "week-earlier" and ref.energies[0] == 3.0 and ref.at == week - timedelta(hours=1)
    far = [Obs(week - timedelta(hours=30), [1.0] * 5)]
    assert choose_reference(far, NOW, age_h=168, tolerance_h=12, calibration=np.ones(10)).kind == "calibration"
    assert choose_reference(far, NOW, age_h=168, tolerance_h=12, calibration=None) is None


def test_no_hotfix_storms():
    kw = dict(now=NOW, cooldown_s=3600, growth=0.25)
    assert hotfix_decision(0.2, running=False, last_started=None, last_delta=None, **kw).start
    running = hotfix_decision(0.2, running=True, last_started=None, last_delta=None, **kw)
    assert not running.start and "already running" in running.reason
    recent = NOW - timedelta(minutes=10)
    cool = hotfix_decision(0.22, running=False, last_started=recent, last_delta=0.2, **kw)
    assert not cool.start and "cooldown" in cool.reason
    grew = hotfix_decision(0.3, running=False, last_started=recent, last_delta=0.2, **kw)
    assert grew.start and "grew" in grew.reason
    later = hotfix_decision(0.11, running=False, last_started=NOW - timedelta(hours=2), last_delta=0.2, **kw)
    assert later.start


def test_hotfix_mode():
    assert hotfix_mode(0.12, setting="auto", retrain_delta=0.5) == "recalibrate"
    assert hotfix_mode(0.7, setting="auto", retrain_delta=0.5) == "retrain"
    assert hotfix_mode(0.7, setting="recalibrate", retrain_delta=0.5) == "recalibrate"
    assert hotfix_mode(0.1, setting="retrain", retrain_delta=0.5) == "retrain"
