"""The gate engine: measured numbers in, a report with one combined verdict out.

``evaluate_gate`` is pure: it runs every check of ``gates.checks`` over a ``GateMeasurements`` and
combines their verdicts (the worst wins; see ``gates.verdict``). Gathering the numbers (benchmarking
the artifacts, scoring the window and the holdout, building the drift report, reading the training
cost) is the caller's job, and the caller acts on the verdict: promote, hold for a human, reject.

Whether a champion exists is ``champion_version``: with none, comparative checks are skipped; with
one, a champion number left as None makes its comparison inconclusive, never skipped.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ebmops.core.settings import GateSettings
from gates.checks import (DetectionMetrics, check_alert_rate, check_cost, check_data_drift, check_detection,
                          check_energy_drift, check_latency)
from gates.latency import LatencyStats
from gates.report import GateReport
from gates.verdict import CheckResult, Verdict, combine


@dataclass
class GateMeasurements:
    """Everything the gate judges. None means "not measured"; the check that needs it is inconclusive."""

    model_name: str
    model_version: str | None = None
    champion_version: str | None = None           # None: no champion yet, comparisons are skipped
    # 1. latency, both from one benchmark_models run
    candidate_latency: LatencyStats | None = None
    champion_latency: LatencyStats | None = None
    same_network_as_champion: bool = False        # identical weights (a recalibration): latency is the champion's
    # 2. energies: Δ of the window vs the candidate's calibration energies, and alert rates on the window
    energy_shift: float | None = None
    energy_n_reference: int | None = None
    energy_n_current: int | None = None
    candidate_alert_rate: float | None = None
    champion_alert_rate: float | None = None
    alert_window_events: int | None = None
    # 3. detection on the labelled holdout
    candidate_detection: DetectionMetrics | None = None
    champion_detection: DetectionMetrics | None = None
    # 4. feature drift, window vs training data
    feature_drift_share: float | None = None
    n_features: int | None = None
    drifted_features: list[str] | None = None
    drift_report_path: str | None = None
    # 5. cost
    training_cost: float | None = None
    device_hours: float | None = None
    price_per_hour: float | None = None
    # checks deliberately not applied, with why (e.g. a hotfix: the champion's alert rate on drifted
    # traffic is what the fix corrects); they are reported as skipped, never as passed
    waived: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GateMeasurements":
        d = dict(d)
        for k in ("candidate_latency", "champion_latency"):
            if isinstance(d.get(k), dict):
                d[k] = LatencyStats.from_dict(d[k])
        for k in ("candidate_detection", "champion_detection"):
            if isinstance(d.get(k), dict):
                d[k] = DetectionMetrics(**d[k])
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def run_checks(m: GateMeasurements, cfg: GateSettings) -> list[CheckResult]:
    """Every check, in report order: latency, energy drift, alert rate, detection, data drift, cost."""
    expected = m.champion_version is not None
    results: list[CheckResult] = []  # champion numbers without a champion_version are ignored: no champion
    results += check_latency(m.candidate_latency, m.champion_latency if expected else None, cfg,
                             champion_expected=expected, same_network=m.same_network_as_champion)
    results.append(check_energy_drift(m.energy_shift, cfg, n_reference=m.energy_n_reference,
                                      n_current=m.energy_n_current))
    results += check_alert_rate(m.candidate_alert_rate, m.champion_alert_rate if expected else None, cfg,
                                n_events=m.alert_window_events, champion_expected=expected)
    results += check_detection(m.candidate_detection, m.champion_detection if expected else None, cfg,
                               champion_expected=expected)
    results.append(check_data_drift(m.feature_drift_share, m.n_features, cfg, drifted=m.drifted_features,
                                    report_path=m.drift_report_path))
    results.append(check_cost(m.training_cost, cfg, device_hours=m.device_hours, price_per_hour=m.price_per_hour))
    return [CheckResult(r.name, Verdict.SKIPPED, r.value, r.threshold, f"waived: {m.waived[r.name]}", r.details)
            if r.name in m.waived else r for r in results]


def evaluate_gate(measurements: GateMeasurements, cfg: GateSettings | None = None, *,
                  now: datetime | None = None) -> GateReport:
    """Judge ``measurements`` against ``cfg`` (default GateSettings()); the report's verdict is the worst check's."""
    cfg = cfg or GateSettings()
    checks = run_checks(measurements, cfg)
    created = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    return GateReport(model_name=measurements.model_name, model_version=measurements.model_version,
                      champion_version=measurements.champion_version, checks=checks, verdict=combine(checks),
                      created_at=created, measurements=measurements.to_dict(), settings=cfg.model_dump())
