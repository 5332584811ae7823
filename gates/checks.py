"""The gate's checks: pure functions from measured numbers to ``CheckResult``.

No check measures, reads a file or talks to a service; the caller gathers the numbers (see
``gates.engine.GateMeasurements``) and the checks only judge them, so every branch is tested on
constructed numbers. Conventions shared by all checks:

* a missing, non-finite or too-small measurement is INCONCLUSIVE, with the reason saying which;
* an *absolute* check (budget, floor, ceiling) always applies;
* a *comparative* check (against the champion) is SKIPPED when there is no champion, and
  INCONCLUSIVE when a champion exists (``champion_expected=True``) but its number is missing or not
  comparable (another benchmark run, another holdout).

Results carry ``value`` and ``threshold`` in the unit the reason names, and the checked inequality is
always "value beyond threshold fails": above for budgets, ceilings, ratios and drops, below for floors.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from drift.delta import effective_size, noise_floor
from ebmops.core.settings import GateSettings
from gates.latency import LatencyStats
from gates.rates import RateRule, rate_effect
from gates.verdict import CheckResult, Verdict

PASS, SKIPPED, INCONCLUSIVE, FAIL = Verdict.PASS, Verdict.SKIPPED, Verdict.INCONCLUSIVE, Verdict.FAIL


@dataclass(frozen=True)
class DetectionMetrics:
    """Detection quality on a labelled holdout. ``holdout_id`` names the holdout (e.g. a data hash)."""

    auroc: float
    ap: float
    n_positive: int | None = None
    n_negative: int | None = None
    holdout_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bad(x: float | None) -> bool:
    return x is None or not math.isfinite(float(x))


def _skip_or_hold(name: str, threshold: float | None, champion_expected: bool, what: str) -> CheckResult:
    """The comparative result when the champion's number is absent."""
    if champion_expected:
        return CheckResult(name, INCONCLUSIVE, None, threshold, f"a champion exists but its {what} was not measured")
    return CheckResult(name, SKIPPED, None, threshold, f"no champion yet: {what} not compared (skipped, not passed)")


# ---- 1. latency ---------------------------------------------------------------------------------------

def check_latency(candidate: LatencyStats | None, champion: LatencyStats | None, cfg: GateSettings, *,
                  champion_expected: bool = False, same_network: bool = False) -> list[CheckResult]:
    """p95 single-event latency under budget, and no slower than the champion by more than the tolerance.

    Slowdown is the worse of the p95 ratio and the inverse batch-1024 throughput ratio, so a model
    whose single calls hide behind per-call overhead but whose batches are slower is still caught.
    ``same_network``: the candidate runs the champion's network, weights and all (a hotfix that only
    recalibrates the threshold); a ratio of two timings of one network measures the machine's noise, so
    the comparison passes as such instead of failing one run in a few on a loaded host.
    """
    budget, limit = cfg.latency_p95_budget_ms, 1.0 + cfg.latency_tolerance
    results = []
    if candidate is None or _bad(candidate.p95_ms):
        results.append(CheckResult("latency_p95_budget", INCONCLUSIVE, None, budget, "no latency measurement for the candidate"))
    elif candidate.iterations < cfg.latency_min_iterations:
        results.append(CheckResult("latency_p95_budget", INCONCLUSIVE, candidate.p95_ms, budget,
                                   f"only {candidate.iterations} timed calls, fewer than {cfg.latency_min_iterations} "
                                   "needed for a stable p95/p99"))
    else:
        details = {"p50_ms": candidate.p50_ms, "p99_ms": candidate.p99_ms, "iterations": candidate.iterations,
                   "throughput_b64_eps": candidate.throughput_b64_eps,
                   "throughput_b1024_eps": candidate.throughput_b1024_eps,
                   "ratio_to_flop_bound": candidate.ratio_to_flop_bound, "flop_bound_eps": candidate.flop_bound_eps}
        ok = candidate.p95_ms <= budget
        results.append(CheckResult(
            "latency_p95_budget", PASS if ok else FAIL, candidate.p95_ms, budget,
            f"p95 {candidate.p95_ms:.3f} ms {'within' if ok else 'over'} the {budget:g} ms budget "
            f"(p99 {candidate.p99_ms:.3f} ms, {candidate.throughput_b1024_eps:,.0f} events/s at batch 1024)", details))

    name = "latency_vs_champion"
    if same_network and champion_expected:
        results.append(CheckResult(name, PASS, 1.0, limit, "the candidate runs the champion's network (identical "
                                   "weights, another threshold): no slowdown to measure"))
    elif champion is None:
        results.append(_skip_or_hold(name, limit, champion_expected, "latency"))
    elif candidate is None or _bad(candidate.p95_ms):
        results.append(CheckResult(name, INCONCLUSIVE, None, limit, "no latency measurement for the candidate"))
    elif candidate.run_id is None or candidate.run_id != champion.run_id:
        results.append(CheckResult(name, INCONCLUSIVE, None, limit,
                                   "candidate and champion were not timed in the same benchmark run; "
                                   "their ratio would compare machine conditions, not models"))
    elif min(candidate.iterations, champion.iterations) < cfg.latency_min_iterations:
        results.append(CheckResult(name, INCONCLUSIVE, None, limit,
                                   f"fewer than {cfg.latency_min_iterations} timed calls per model"))
    elif _bad(champion.p95_ms) or _bad(champion.throughput_b1024_eps) or _bad(candidate.throughput_b1024_eps) \
            or min(champion.p95_ms, candidate.p95_ms, candidate.throughput_b1024_eps) <= 0:
        results.append(CheckResult(name, INCONCLUSIVE, None, limit, "a latency or throughput figure is zero or missing"))
    else:
        p95_ratio = candidate.p95_ms / champion.p95_ms
        tput_ratio = champion.throughput_b1024_eps / candidate.throughput_b1024_eps  # > 1: candidate slower
        ratio = max(p95_ratio, tput_ratio)
        which = "p95 latency" if p95_ratio >= tput_ratio else "batch-1024 throughput"
        ok = ratio <= limit
        results.append(CheckResult(
            name, PASS if ok else FAIL, ratio, limit,
            f"candidate/champion slowdown x{ratio:.2f} ({which}) {'within' if ok else 'beyond'} the "
            f"{cfg.latency_tolerance:.0%} tolerance",
            {"p95_ratio": p95_ratio, "throughput_b1024_slowdown": tput_ratio,
             "champion_p95_ms": champion.p95_ms, "champion_throughput_b1024_eps": champion.throughput_b1024_eps,
             "run_id": candidate.run_id}))
    return results


# ---- 2. energy drift and alert rate ---------------------------------------------------------------------

def check_energy_drift(delta: float | None, cfg: GateSettings, *, n_reference: int | None = None,
                       n_current: int | None = None) -> CheckResult:
    """Δ between the candidate's calibration energies and its window energies under ``energy_shift_max``."""
    name, limit = "energy_shift", cfg.energy_shift_max
    if delta is None or math.isnan(delta):
        return CheckResult(name, INCONCLUSIVE, None, limit, "no energy shift measured (missing energies)")
    details: dict[str, Any] = {}
    if n_reference is not None and n_current is not None:
        n_eff = effective_size(n_reference, n_current)
        details = {"n_reference": n_reference, "n_current": n_current, "n_effective": n_eff,
                   "noise_floor_99": noise_floor(n_reference, n_current)}
        if n_eff < cfg.energy_min_effective_samples:
            return CheckResult(name, INCONCLUSIVE, delta, limit,
                               f"samples too small (n_eff {n_eff:.0f} < {cfg.energy_min_effective_samples}): "
                               f"Δ noise alone reaches {details['noise_floor_99']:.3f}", details)
    ok = delta <= limit
    return CheckResult(name, PASS if ok else FAIL, delta, limit,
                       f"energy shift Δ {delta:.3f} {'within' if ok else 'over'} {limit:g} "
                       "(tail-trimmed W1 / reference IQR-sigma, window vs calibration)", details)


def check_alert_rate(candidate_rate: float | None, champion_rate: float | None, cfg: GateSettings, *,
                     n_events: int | None = None, champion_expected: bool = False) -> list[CheckResult]:
    """No alert storm, no silent model: an absolute ceiling, and closeness to the champion's rate.

    Against the champion, the rate fails only when it is off by more than ``alert_rate_max_ratio``
    (either way) *and* by more than ``alert_rate_abs_tolerance`` in absolute terms: the ratio catches
    order-of-magnitude changes at any base rate, the absolute gap keeps Poisson noise on a small
    count (tens of alerts) from failing a model. The rule is gates/rates.py's, shared with the canary judge.
    """
    ceil_name, cmp_name = "alert_rate_ceiling", "alert_rate_vs_champion"
    ceiling, r = cfg.alert_rate_ceiling, cfg.alert_rate_max_ratio
    unusable = None
    if candidate_rate is None or _bad(candidate_rate) or not 0 <= candidate_rate <= 1:
        unusable = f"candidate alert rate missing or not a share in [0, 1] ({candidate_rate!r})"
    elif n_events is not None and n_events < cfg.alert_min_events:
        unusable = f"benchmark window has {n_events} events, fewer than {cfg.alert_min_events}"
    details = {"n_events": n_events} if n_events is not None else {}
    if unusable:
        results = [CheckResult(ceil_name, INCONCLUSIVE, candidate_rate, ceiling, unusable, details)]
    else:
        ok = candidate_rate <= ceiling
        results = [CheckResult(ceil_name, PASS if ok else FAIL, candidate_rate, ceiling,
                               f"alert rate {candidate_rate:.3%} {'under' if ok else 'over'} the {ceiling:.1%} ceiling"
                               + ("" if ok else ": alert storm"), details)]

    if champion_rate is None:
        results.append(_skip_or_hold(cmp_name, r, champion_expected, "alert rate"))
        return results
    if unusable:
        results.append(CheckResult(cmp_name, INCONCLUSIVE, None, r, unusable, details))
        return results
    if _bad(champion_rate) or not 0 <= champion_rate <= 1:
        results.append(CheckResult(cmp_name, INCONCLUSIVE, None, r, f"champion alert rate unusable ({champion_rate!r})"))
        return results
    eff = rate_effect(candidate_rate, champion_rate,
                      RateRule(max_ratio=r, abs_floor=cfg.alert_rate_abs_tolerance, direction="either"))
    ratio, gap = eff.ratio, eff.gap
    ok = not eff.material
    kind = "" if ok else (": alert storm" if gap > 0 else ": silent model")
    details = {**details, "champion_rate": champion_rate, "gap": gap, "abs_tolerance": cfg.alert_rate_abs_tolerance}
    results.append(CheckResult(cmp_name, PASS if ok else FAIL, ratio, r,
                               f"alert rate {candidate_rate:.3%} vs champion {champion_rate:.3%} (x{ratio:.2f}, gap "
                               f"{gap:+.3%}) {'within' if ok else 'beyond'} x{r:g} / ±{cfg.alert_rate_abs_tolerance:.2%}"
                               + kind, details))
    return results


# ---- 3. detection quality --------------------------------------------------------------------------------

def check_detection(candidate: DetectionMetrics | None, champion: DetectionMetrics | None, cfg: GateSettings, *,
                    champion_expected: bool = False) -> list[CheckResult]:
    """AUROC and AP above their floors, and not below the champion's by more than the allowed drop."""
    specs = [("auroc", cfg.auroc_floor, cfg.auroc_max_drop, "AUROC"), ("ap", cfg.ap_floor, cfg.ap_max_drop, "AP")]
    unusable = None
    if candidate is None:
        unusable = "no detection metrics for the candidate"
    elif candidate.n_positive is not None and candidate.n_positive < cfg.detection_min_positives:
        unusable = f"holdout has {candidate.n_positive} labelled anomalies, fewer than {cfg.detection_min_positives}"
    elif candidate.n_negative is not None and candidate.n_negative < cfg.detection_min_positives:
        unusable = f"holdout has {candidate.n_negative} normal events, fewer than {cfg.detection_min_positives}"
    results = []
    for key, floor, _, label in specs:
        name = f"{key}_floor"
        value = None if candidate is None else getattr(candidate, key)
        if unusable or _bad(value):
            results.append(CheckResult(name, INCONCLUSIVE, value, floor, unusable or f"candidate {label} missing"))
            continue
        ok = value >= floor
        results.append(CheckResult(name, PASS if ok else FAIL, value, floor,
                                   f"{label} {value:.4f} {'at or above' if ok else 'below'} the {floor:g} floor"))
    for key, _, max_drop, label in specs:
        name = f"{key}_vs_champion"
        if champion is None:
            results.append(_skip_or_hold(name, max_drop, champion_expected, label))
            continue
        cand, champ = (None if candidate is None else getattr(candidate, key)), getattr(champion, key)
        if unusable or _bad(cand):
            results.append(CheckResult(name, INCONCLUSIVE, None, max_drop, unusable or f"candidate {label} missing"))
        elif _bad(champ):
            results.append(CheckResult(name, INCONCLUSIVE, None, max_drop, f"champion {label} missing"))
        elif candidate.holdout_id and champion.holdout_id and candidate.holdout_id != champion.holdout_id:
            results.append(CheckResult(name, INCONCLUSIVE, None, max_drop,
                                       f"champion scored on holdout {champion.holdout_id}, candidate on "
                                       f"{candidate.holdout_id}: not comparable"))
        else:
            drop = champ - cand
            ok = drop <= max_drop
            results.append(CheckResult(name, PASS if ok else FAIL, drop, max_drop,
                                       f"{label} {cand:.4f} vs champion {champ:.4f}: drop {drop:+.4f} "
                                       f"{'within' if ok else 'beyond'} {max_drop:g}",
                                       {"candidate": cand, "champion": champ}))
    return results


# ---- 4. data drift ----------------------------------------------------------------------------------------

def check_data_drift(share_drifted: float | None, n_features: int | None, cfg: GateSettings, *,
                     drifted: list[str] | None = None, report_path: str | None = None) -> CheckResult:
    """The share of features drifted (window vs training data) at most ``max_drifted_share``."""
    name, limit = "feature_drift", cfg.max_drifted_share
    details: dict[str, Any] = {"method": cfg.feature_drift_method, "feature_threshold": cfg.feature_drift_threshold}
    if drifted is not None:
        details["drifted"] = list(drifted)
    if report_path is not None:
        details["report"] = str(report_path)
    if not n_features or n_features <= 0:
        return CheckResult(name, INCONCLUSIVE, share_drifted, limit, "no features were compared", details)
    if share_drifted is None or _bad(share_drifted) or not 0 <= share_drifted <= 1:
        return CheckResult(name, INCONCLUSIVE, None, limit, f"drift share missing or invalid ({share_drifted!r})", details)
    ok = share_drifted <= limit
    n = round(share_drifted * n_features)
    return CheckResult(name, PASS if ok else FAIL, share_drifted, limit,
                       f"{n}/{n_features} features drifted ({share_drifted:.0%}) {'within' if ok else 'over'} the "
                       f"{limit:.0%} limit ({cfg.feature_drift_method} {cfg.feature_drift_threshold:g})", details)


# ---- 5. cost ------------------------------------------------------------------------------------------------

def check_cost(cost: float | None, cfg: GateSettings, *, device_hours: float | None = None,
               price_per_hour: float | None = None) -> CheckResult:
    """Training cost (device-hours x price) at most ``cost_ceiling``."""
    name, limit = "training_cost", cfg.cost_ceiling
    details = {k: v for k, v in (("device_hours", device_hours), ("price_per_hour", price_per_hour)) if v is not None}
    if cost is None or _bad(cost) or cost < 0:
        return CheckResult(name, INCONCLUSIVE, cost, limit, f"training cost missing or invalid ({cost!r})", details)
    ok = cost <= limit
    return CheckResult(name, PASS if ok else FAIL, cost, limit,
                       f"training cost {cost:.4g} {'within' if ok else 'over'} the {limit:g} ceiling", details)
