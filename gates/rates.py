"""How far one event rate is from another: the ratio, with an absolute floor, both directions bad.

One definition for every 0/1 rate this project compares: the gate's candidate-vs-champion alert
rate (gates/checks.py) and the canary judge's alert and error rates (canary/judge.py).

Security detectors run at low base rates (0.1-2 % of events alert). There an absolute difference
says nothing: 1 % -> 3 % is a storm that triples on-call's pages, yet only 2 points; 1 % -> 0 %
is a silent detector, yet only 1 point. So the effect is the **rate ratio** ``rate / base``,
and it counts when

* it lies outside ``[1/max_ratio, max_ratio]`` in a bad direction (``increase``: storms,
  ``decrease``: silence, ``either``: both), **and**
* the absolute gap ``|rate - base|`` exceeds ``abs_floor``: 0.01 % vs 0.02 % is a doubling of two
  events in twenty thousand, noise, not a page.

A ratio beyond ``fail_ratio`` (same floor) is a storm or silence big enough to stop a rollout
outright. A zero base rate gives ratio 1 when the rate is zero too, else infinity (the floor decides).

Pure numbers in, a frozen record out; significance (how sure we are) is the caller's test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Direction = Literal["increase", "decrease", "either"]


@dataclass(frozen=True)
class RateRule:
    """When a rate's change against its base counts. ``max_ratio`` and ``fail_ratio`` are > 1 and
    apply both ways (x r up, / r down); ``abs_floor`` is a share of events (0.002 = 0.2 points)."""

    max_ratio: float
    abs_floor: float = 0.0
    fail_ratio: float | None = None
    direction: Direction = "either"

    def __post_init__(self) -> None:
        if not self.max_ratio > 1:
            raise ValueError(f"max_ratio must exceed 1 (a factor either way); got {self.max_ratio}")
        if self.fail_ratio is not None and not self.fail_ratio > 1:
            raise ValueError(f"fail_ratio must exceed 1; got {self.fail_ratio}")
        if not 0 <= self.abs_floor <= 1:
            raise ValueError(f"abs_floor is a share of events in [0, 1]; got {self.abs_floor}")


@dataclass(frozen=True)
class RateEffect:
    """The effect of ``rate`` against ``base`` under a ``RateRule``."""

    rate: float
    base: float
    ratio: float          # rate / base; 1 when both are 0, inf when only base is 0
    gap: float            # rate - base
    beyond_ratio: bool    # outside [1/max_ratio, max_ratio] and |gap| > abs_floor, either direction
    bad_side: bool        # the change lies in the rule's bad direction
    material: bool        # beyond_ratio and bad_side
    beyond_fail: bool     # material and outside [1/fail_ratio, fail_ratio]

    @property
    def kind(self) -> str | None:
        """'alert storm' / 'silent model' wording for a material change, else None."""
        if not self.material:
            return None
        return "storm" if self.gap > 0 else "silence"

    def describe(self) -> str:
        return f"x{self.ratio:.2f} ({self.rate:.3%} vs {self.base:.3%}, gap {self.gap:+.3%})"


def rate_ratio(rate: float, base: float) -> float:
    if base > 0:
        return rate / base
    return 1.0 if rate == 0 else math.inf


def _outside(ratio: float, limit: float) -> bool:
    return ratio > limit or ratio < 1.0 / limit


def rate_effect(rate: float, base: float, rule: RateRule) -> RateEffect:
    """Classify ``rate`` against ``base`` (both shares in [0, 1]) by ``rule`` (see the module docstring)."""
    for name, v in (("rate", rate), ("base", base)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= 1):
            raise ValueError(f"{name} must be a share of events in [0, 1]; got {v!r}")
    ratio, gap = rate_ratio(rate, base), rate - base
    over_floor = abs(gap) > rule.abs_floor
    beyond = _outside(ratio, rule.max_ratio) and over_floor
    bad = {"increase": gap > 0, "decrease": gap < 0, "either": gap != 0}[rule.direction]
    material = beyond and bad
    fail = material and rule.fail_ratio is not None and _outside(ratio, rule.fail_ratio)
    return RateEffect(rate=float(rate), base=float(base), ratio=ratio, gap=gap, beyond_ratio=beyond, bad_side=bad,
                      material=material, beyond_fail=fail)


def alternative_rates(base: float, rule: RateRule, ratio: float) -> dict[str, float]:
    """The rates a window must be able to tell from ``base`` (the power rule of canary/power.py):
    ``up`` is ``ratio`` times the base, and at least twice the floor above it (so that the change
    counts in full, not only when noise helps); ``silent`` is a rate of zero (the down direction
    that pages on-call: a detector that stopped alerting). Only the rule's bad directions."""
    out: dict[str, float] = {}
    if rule.direction in ("increase", "either"):
        out["up"] = min(1.0, max(base * ratio, base + 2 * rule.abs_floor))
    if rule.direction in ("decrease", "either") and base > rule.abs_floor:
        out["silent"] = 0.0
    return out
