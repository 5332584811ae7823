"""Deciding whether training may start another epoch: wall-time budget and cost ceiling.

Training is metered in device-hours (one device per run) and priced per device type from
``training.price_per_device_hour``. Two limits stop it cleanly, always between epochs so the
model and its checkpoint are whole:

* ``time_budget_s``: once the seconds spent reach the budget, no further epoch starts (the
  epoch that crossed it completes, so a run may pass the budget by up to one epoch);
* ``cost_ceiling``: no epoch starts whose projected cost (spent so far plus the mean epoch
  cost so far) would pass the ceiling, so the ceiling is respected from the second epoch on
  (the first epoch has no measurement to project from).

Both count the whole run, across resumes: the checkpoint carries the seconds spent, so a
killed and resumed job cannot spend more than one that ran straight through (the part of an
epoch cut short by a kill is not counted: it left no checkpoint to record it in).

The decision is a pure function of numbers, tested without clocks; the trainer only acts on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ebmops.core.errors import ConfigError

TIME_BUDGET = "time_budget"
COST_CEILING = "cost_ceiling"


@dataclass(frozen=True)
class StopDecision:
    reason: str  # TIME_BUDGET or COST_CEILING
    message: str


def price_for(device_type: str, prices: dict[str, float]) -> float:
    """Price per device-hour for ``device_type``; a missing price is a configuration error."""
    if device_type not in prices:
        raise ConfigError(f"training.price_per_device_hour has no price for device type '{device_type}' "
                          f"(it lists {sorted(prices)}); add one, e.g. EBMOPS_TRAINING__PRICE_PER_DEVICE_HOUR="
                          f"'{{\"{device_type}\": 1.0}}'")
    return float(prices[device_type])


def cost_of(seconds: float, price_per_hour: float) -> float:
    return seconds / 3600.0 * price_per_hour


def next_epoch_verdict(*, seconds_spent: float, epochs_done: int, epochs_planned: int, price_per_hour: float,
                       device_type: str, time_budget_s: float | None, cost_ceiling: float | None) -> StopDecision | None:
    """None when epoch ``epochs_done + 1`` may start, else why not (with a message that says what to do)."""
    if epochs_done >= epochs_planned:
        return None  # nothing left to start; finishing is not a stop
    where = f"training stopped after epoch {epochs_done} of {epochs_planned}"
    usable = ("the model from that epoch is usable" if epochs_done else "the model is untrained")
    if time_budget_s is not None and seconds_spent >= time_budget_s:
        return StopDecision(TIME_BUDGET, f"{where}: the wall-time budget training.time_budget_s={time_budget_s:g} s "
                                         f"is used up ({seconds_spent:.1f} s spent); {usable}. To train further, raise "
                                         f"training.time_budget_s and run again: training resumes from its checkpoint.")
    if cost_ceiling is not None and epochs_done > 0:
        spent = cost_of(seconds_spent, price_per_hour)
        projected = spent + spent / epochs_done
        if projected > cost_ceiling:
            return StopDecision(COST_CEILING, f"{where}: another epoch would bring the cost to about {projected:.4g}, "
                                              f"over training.cost_ceiling={cost_ceiling:g} ({spent:.4g} spent at "
                                              f"{price_per_hour:g} per {device_type}-hour); {usable}. To train further, "
                                              f"raise training.cost_ceiling and run again: training resumes from its "
                                              f"checkpoint.")
    return None
