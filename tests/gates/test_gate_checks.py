"""Every check on constructed numbers: pass, fail, inconclusive, and skipped without a champion."""

from __future__ import annotations

import math

import pytest

from ebmops.core.settings import GateSettings
from gates.checks import (DetectionMetrics, check_alert_rate, check_cost, check_data_drift, check_detection,
                          check_energy_drift, check_latency)
from gates.latency import LatencyStats
from gates.verdict import Verdict

P, S, I, F = Verdict.PASS, Verdict.SKIPPED, Verdict.INCONCLUSIVE, Verdict.FAIL
CFG = GateSettings()


def lat(p95=0.07, tput=300_000.0, run_id="run1", iterations=3000, model="m"):
    return LatencyStats(model=model, p50_ms=p95 * 0.6, p95_ms=p95, p99_ms=p95 * 1.3, mean_ms=p95 * 0.7,
                        iterations=iterations, throughput_b64_eps=tput * 0.8, throughput_b1024_eps=tput,
                        flops_per_event=152_064, flop_bound_eps=500_000, ratio_to_flop_bound=tput / 500_000,
                        run_id=run_id)


def by_name(results):
    return {r.name: r for r in results}


# ---- latency ----------------------------------------------------------------------------------------------

def test_latency_passes_within_budget_and_tolerance():
    res = by_name(check_latency(lat(0.07), lat(0.065), CFG))
    assert res["latency_p95_budget"].verdict is P
    assert res["latency_p95_budget"].details["ratio_to_flop_bound"] == pytest.approx(0.6)
    assert res["latency_vs_champion"].verdict is P
    assert res["latency_vs_champion"].value == pytest.approx(0.07 / 0.065)
    assert res["latency_vs_champion"].threshold == pytest.approx(1.2)


def test_latency_fails_over_budget_even_without_champion():
    res = by_name(check_latency(lat(150.0), None, CFG))
    assert res["latency_p95_budget"].verdict is F and res["latency_p95_budget"].value == 150.0
    assert res["latency_vs_champion"].verdict is S
    assert "skipped" in res["latency_vs_champion"].reason


def test_latency_fails_when_slower_than_champion():
    res = by_name(check_latency(lat(0.10), lat(0.07), CFG))
    assert res["latency_vs_champion"].verdict is F
    # same p95 but batch throughput 30 % lower: still slower
    res = by_name(check_latency(lat(0.07, tput=200_000), lat(0.07, tput=300_000), CFG))
    assert res["latency_vs_champion"].verdict is F
    assert res["latency_vs_champion"].value == pytest.approx(1.5)
    assert "throughput" in res["latency_vs_champion"].reason


def test_latency_inconclusive_cases():
    assert by_name(check_latency(None, None, CFG))["latency_p95_budget"].verdict is I
    few = by_name(check_latency(lat(iterations=50), lat(), CFG))
    assert few["latency_p95_budget"].verdict is I and few["latency_vs_champion"].verdict is I
    other_run = by_name(check_latency(lat(run_id="a"), lat(run_id="b"), CFG))["latency_vs_champion"]
    assert other_run.verdict is I and "same benchmark run" in other_run.reason
    expected = by_name(check_latency(lat(), None, CFG, champion_expected=True))["latency_vs_champion"]
    assert expected.verdict is I and "champion exists" in expected.reason
    assert by_name(check_latency(lat(p95=math.nan), None, CFG))["latency_p95_budget"].verdict is I


# ---- energy drift -----------------------------------------------------------------------------------------

def test_energy_drift():
    assert check_energy_drift(0.04, CFG).verdict is P
    assert check_energy_drift(0.10, CFG).verdict is P
    r = check_energy_drift(0.25, CFG, n_reference=5000, n_current=10000)
    assert r.verdict is F and r.value == 0.25 and r.threshold == 0.10
    assert r.details["noise_floor_99"] < 0.10
    assert check_energy_drift(math.inf, CFG).verdict is F
    assert check_energy_drift(None, CFG).verdict is I
    assert check_energy_drift(math.nan, CFG).verdict is I
    small = check_energy_drift(0.02, CFG, n_reference=300, n_current=300)
    assert small.verdict is I and "too small" in small.reason


# ---- alert rate -------------------------------------------------------------------------------------------

def test_alert_rate_pass_and_skip_without_champion():
    res = by_name(check_alert_rate(0.006, None, CFG, n_events=10_000))
    assert res["alert_rate_ceiling"].verdict is P
    assert res["alert_rate_vs_champion"].verdict is S


@pytest.mark.parametrize("cand, champ, verdict, word", [
    (0.006, 0.005, P, "within"),
    (0.009, 0.005, P, "within"),          # x1.8: inside the ratio
    (0.020, 0.005, F, "alert storm"),     # x4 and +1.5 points
    (0.0005, 0.005, F, "silent model"),   # x0.1 and -0.45 points
    (0.0, 0.005, F, "silent model"),
    (0.0012, 0.0004, P, "within"),        # x3 but only +0.08 points: Poisson noise, not a storm
    (0.0, 0.0, P, "within"),
    (0.003, 0.0, F, "alert storm"),
])
def test_alert_rate_against_champion(cand, champ, verdict, word):
    r = by_name(check_alert_rate(cand, champ, CFG, n_events=10_000))["alert_rate_vs_champion"]
    assert r.verdict is verdict and word in r.reason


def test_alert_rate_ceiling_fails_a_storm_without_champion():
    r = by_name(check_alert_rate(0.12, None, CFG))["alert_rate_ceiling"]
    assert r.verdict is F and "storm" in r.reason


def test_alert_rate_inconclusive():
    res = by_name(check_alert_rate(0.005, 0.005, CFG, n_events=100))
    assert res["alert_rate_ceiling"].verdict is I and res["alert_rate_vs_champion"].verdict is I
    res = by_name(check_alert_rate(None, None, CFG, champion_expected=True))
    assert res["alert_rate_ceiling"].verdict is I and res["alert_rate_vs_champion"].verdict is I
    assert by_name(check_alert_rate(1.5, None, CFG))["alert_rate_ceiling"].verdict is I
    assert by_name(check_alert_rate(0.005, math.nan, CFG))["alert_rate_vs_champion"].verdict is I


# ---- detection --------------------------------------------------------------------------------------------

def det(auroc=0.98, ap=0.40, n_pos=100, n_neg=20_000, holdout="h1"):
    return DetectionMetrics(auroc=auroc, ap=ap, n_positive=n_pos, n_negative=n_neg, holdout_id=holdout)


def test_detection_pass_with_champion():
    res = by_name(check_detection(det(0.984, 0.39), det(0.986, 0.40), CFG))
    assert {r.verdict for r in res.values()} == {P}
    assert res["auroc_vs_champion"].value == pytest.approx(0.002)


def test_detection_fails_on_drop_or_floor():
    res = by_name(check_detection(det(0.975, 0.35), det(0.986, 0.40), CFG))
    assert res["auroc_vs_champion"].verdict is F and res["ap_vs_champion"].verdict is F
    assert res["auroc_floor"].verdict is P
    res = by_name(check_detection(det(0.90, 0.10), None, CFG))
    assert res["auroc_floor"].verdict is F and res["ap_floor"].verdict is F
    assert res["auroc_vs_champion"].verdict is S and res["ap_vs_champion"].verdict is S


def test_detection_inconclusive():
    res = by_name(check_detection(det(n_pos=3), det(), CFG))
    assert {r.verdict for r in res.values()} == {I}
    res = by_name(check_detection(None, None, CFG, champion_expected=True))
    assert {r.verdict for r in res.values()} == {I}
    res = by_name(check_detection(det(holdout="h2"), det(holdout="h1"), CFG))
    assert res["auroc_vs_champion"].verdict is I and res["auroc_floor"].verdict is P
    assert by_name(check_detection(det(), det(auroc=math.nan), CFG))["auroc_vs_champion"].verdict is I


# ---- data drift and cost ----------------------------------------------------------------------------------

def test_data_drift():
    assert check_data_drift(0.1, 40, CFG).verdict is P
    r = check_data_drift(0.5, 40, CFG, drifted=[f"f{i}" for i in range(20)], report_path="r.html")
    assert r.verdict is F and "20/40" in r.reason and r.details["report"] == "r.html"
    assert check_data_drift(None, 40, CFG).verdict is I
    assert check_data_drift(0.1, 0, CFG).verdict is I


def test_cost():
    assert check_cost(0.02, CFG, device_hours=0.4, price_per_hour=0.05).verdict is P
    assert check_cost(1.0, CFG).verdict is P
    r = check_cost(2.5, CFG)
    assert r.verdict is F and r.threshold == 1.0
    assert check_cost(None, CFG).verdict is I
    assert check_cost(-1.0, CFG).verdict is I


def test_thresholds_come_from_settings():
    strict = GateSettings(latency_p95_budget_ms=0.05, energy_shift_max=0.01, cost_ceiling=0.001)
    assert by_name(check_latency(lat(0.07), None, strict))["latency_p95_budget"].verdict is F
    assert check_energy_drift(0.04, strict).verdict is F
    assert check_cost(0.02, strict).verdict is F


def test_latency_against_the_champions_own_network_passes_whatever_the_noise():
    cand, champ = lat(p95=0.13, model="candidate"), lat(p95=0.10, model="champion")
    noisy = by_name(check_latency(cand, champ, CFG, champion_expected=True))
    assert noisy["latency_vs_champion"].verdict is F  # x1.3 between two different networks
    same = by_name(check_latency(cand, champ, CFG, champion_expected=True, same_network=True))
    assert same["latency_vs_champion"].verdict is P and "champion's network" in same["latency_vs_champion"].reason
    # without a champion there is nothing to be the same as: skipped as before
    alone = by_name(check_latency(cand, None, CFG, champion_expected=False, same_network=True))
    assert alone["latency_vs_champion"].verdict is S
