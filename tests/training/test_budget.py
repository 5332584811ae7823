"""The stop decision, as a pure function of numbers (no clocks)."""

import pytest

from ebmops.core.errors import ConfigError
from training.budget import COST_CEILING, TIME_BUDGET, cost_of, next_epoch_verdict, price_for


def verdict(**kw):
    args = dict(seconds_spent=0.0, epochs_done=0, epochs_planned=10, price_per_hour=3600.0, device_type="cpu",
                time_budget_s=None, cost_ceiling=None)
    return next_epoch_verdict(**{**args, **kw})


def test_no_limits_never_stop():
    assert verdict(seconds_spent=1e6, epochs_done=5) is None


def test_time_budget_stops_once_spent_and_not_before():
    assert verdict(seconds_spent=9.9, epochs_done=3, time_budget_s=10) is None
    stop = verdict(seconds_spent=10.0, epochs_done=3, time_budget_s=10)
    assert stop.reason == TIME_BUDGET and "after epoch 3 of 10" in stop.message


def test_cost_ceiling_projects_the_next_epoch_from_the_mean_so_far():
    # 3 epochs took 3 s at 1 per second: spent 3, next epoch projected to 4.
    assert verdict(seconds_spent=3.0, epochs_done=3, cost_ceiling=4.0) is None
    stop = verdict(seconds_spent=3.0, epochs_done=3, cost_ceiling=3.9)
    assert stop.reason == COST_CEILING and "about 4" in stop.message and "training.cost_ceiling" in stop.message


def test_first_epoch_has_nothing_to_project_from():
    assert verdict(seconds_spent=0.0, epochs_done=0, cost_ceiling=1e-12) is None


def test_finishing_is_not_a_stop_even_over_budget():
    assert verdict(seconds_spent=100.0, epochs_done=10, time_budget_s=1.0, cost_ceiling=1e-9) is None


def test_prices_are_per_device_hour():
    assert cost_of(1800.0, 2.0) == 1.0
    assert price_for("cuda", {"cuda": 2.5}) == 2.5
    with pytest.raises(ConfigError, match="'mps'"):
        price_for("mps", {"cpu": 1.0})
