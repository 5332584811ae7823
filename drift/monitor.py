"""Live drift decisions as pure functions: the level of a Δ, the reference to compare with, and
whether a breach may start a hotfix (no hotfix storms).

The drift-monitor flow gathers the numbers (node ``/stats``, the state store, MLflow) and acts;
everything it decides is decided here, so it is tested on constructed numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable, Sequence

import numpy as np

from drift.delta import energy_shift

OK, WARN, HOTFIX, NO_DATA = "ok", "warn", "hotfix", "no-data"


def level_of(delta: float | None, *, warn: float, hotfix: float) -> str:
    """ok below ``warn``, warn below ``hotfix``, hotfix at or above it; no-data without a Δ."""
    if delta is None or not np.isfinite(delta):
        return NO_DATA
    if delta >= hotfix:
        return HOTFIX
    if delta >= warn:
        return WARN
    return OK


def sketch(energies: Sequence[float] | np.ndarray, n: int = 201) -> list[float]:
    """``n`` evenly spaced quantiles (0..1) of ``energies``: what is kept of an observation as a later
    reference. W1 between two samples is the mean gap of their quantile functions, so Δ against a
    sketch equals Δ against the full sample up to the sketch's resolution."""
    e = np.asarray(energies, dtype=np.float64)
    e = e[np.isfinite(e)]
    if len(e) == 0:
        return []
    return np.quantile(e, np.linspace(0.0, 1.0, n)).tolist()


@dataclass(frozen=True)
class Reference:
    kind: str                   # "week-earlier" or "calibration"
    energies: np.ndarray
    at: datetime | None = None  # when the week-earlier observation was made


def choose_reference(earlier: Iterable, now: datetime, *, age_h: float, tolerance_h: float,
                     calibration: np.ndarray | None) -> Reference | None:
    """The observation (``created_at``, ``quantiles``) closest to ``now - age_h`` within
    ``tolerance_h``; else the model's calibration energies; else None."""
    target = now - timedelta(hours=age_h)
    best = None
    for o in earlier:
        gap = abs((o.created_at - target).total_seconds())
        if gap <= tolerance_h * 3600 and o.quantiles and (best is None or gap < best[0]):
            best = (gap, o)
    if best is not None:
        return Reference("week-earlier", np.asarray(best[1].quantiles, dtype=np.float64), best[1].created_at)
    if calibration is not None and len(calibration):
        return Reference("calibration", np.asarray(calibration, dtype=np.float64))
    return None


def observe(current: np.ndarray, reference: Reference | None, *, min_events: int, warn: float,
            hotfix: float) -> tuple[float | None, str]:
    """Δ of ``current`` against ``reference`` and its level (no-data with too few events)."""
    current = np.asarray(current, dtype=np.float64)
    current = current[np.isfinite(current)]
    if reference is None or len(current) < min_events:
        return None, NO_DATA
    d = float(energy_shift(reference.energies, current))
    return d, level_of(d, warn=warn, hotfix=hotfix)


@dataclass(frozen=True)
class HotfixDecision:
    start: bool
    reason: str


def hotfix_decision(delta: float, *, running: bool, last_started: datetime | None, last_delta: float | None,
                    now: datetime, cooldown_s: float, growth: float) -> HotfixDecision:
    """One hotfix per model and region in flight, and none within the cooldown of the last one
    unless Δ keeps growing (beyond the last hotfix's Δ by ``growth``)."""
    if running:
        return HotfixDecision(False, "a hotfix for this model and region is already running")
    if last_started is not None:
        age = (now - last_started).total_seconds()
        if age < cooldown_s:
            if last_delta is not None and delta > last_delta * (1.0 + growth):
                return HotfixDecision(True, f"within the cooldown ({age:.0f} of {cooldown_s:.0f} s) but Δ grew from "
                                            f"{last_delta:.3f} to {delta:.3f}")
            return HotfixDecision(False, f"cooldown: the last hotfix started {age:.0f} s ago (< {cooldown_s:.0f} s) "
                                         f"and Δ {delta:.3f} did not grow past {1 + growth:.2f} x {last_delta}")
    return HotfixDecision(True, f"Δ {delta:.3f} breached the hotfix threshold")


def hotfix_mode(delta: float, *, setting: str, retrain_delta: float) -> str:
    """recalibrate (same network, new threshold) or retrain, as settings and severity decide."""
    if setting in ("recalibrate", "retrain"):
        return setting
    return "retrain" if delta >= retrain_delta else "recalibrate"
