"""The canary judge on constructed samples: per-metric classification and the combined verdict."""

import json

import numpy as np
import pytest

from canary.judge import Classification, JudgeConfig, Judgement, JudgeVerdict, classify, judge

N = 2000


def sample(seed: int, *, latency: float = 1.0, error_rate: float = 0.002, energy_shift: float = 0.0,
           alert_rate: float = 0.005, n: int = N) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "latency_ms": rng.lognormal(np.log(10.0 * latency), 0.3, n),
        "error": (rng.random(n) < error_rate).astype(float),
        "energy": rng.normal(energy_shift, 1.0, n),
        "alert": (rng.random(n) < alert_rate).astype(float),
    }


def pair(canary: dict, stable: dict) -> dict:
    return {k: (canary[k], stable[k]) for k in canary}


STABLE = sample(1)


def test_identical_distributions_pass():
    j = judge(pair(sample(2), STABLE))
    assert j.verdict is JudgeVerdict.PASS and j.score == 100.0
    assert all(m.classification is Classification.PASS for m in j.metrics)
    assert j.failed_metrics == []


def test_the_same_sample_passes_with_zero_effect():
    j = judge(pair(STABLE, STABLE))
    assert j.verdict is JudgeVerdict.PASS
    # no change: a shift of 0, a rate ratio of 1
    assert all(m.effect == (1.0 if m.name in ("error", "alert") else 0.0) for m in j.metrics)


def test_triple_latency_fails_with_latency_high():
    j = judge(pair(sample(2, latency=3.0), STABLE))
    assert j.verdict is JudgeVerdict.FAIL
    lat = j.metric("latency_ms")
    assert lat.classification is Classification.HIGH and lat.beyond_fail_limit
    assert lat.effect == pytest.approx(2.0, rel=0.1) and lat.p_value < 1e-10
    assert "latency_ms" in j.reason and "fail limit" in j.reason
    assert j.failed_metrics == ["latency_ms"]


def test_moderate_latency_shift_is_marginal():
    j = judge(pair(sample(2, latency=1.4), STABLE))
    assert j.verdict is JudgeVerdict.MARGINAL
    assert j.metric("latency_ms").classification is Classification.HIGH
    assert not j.metric("latency_ms").beyond_fail_limit
    assert j.score == pytest.approx(100 * 5 / 7)  # latency's weight 2 of 7 lost
    assert "marginal" in j.reason and "latency_ms high" in j.reason


def test_two_metrics_failing_fail_on_score():
    j = judge(pair(sample(2, latency=1.4, energy_shift=0.5), STABLE))
    assert j.verdict is JudgeVerdict.FAIL and j.score == pytest.approx(100 * 3 / 7)
    assert set(j.failed_metrics) == {"latency_ms", "energy"}
    assert "below marginal score" in j.reason


def test_faster_canary_is_not_a_failure():
    j = judge(pair(sample(2, latency=0.5), STABLE))
    lat = j.metric("latency_ms")
    assert j.verdict is JudgeVerdict.PASS and lat.classification is Classification.PASS
    assert lat.effect < -0.4 and "good direction" in lat.reason


def test_energy_shift_either_way_is_caught_with_its_sign():
    up = judge(pair(sample(2, energy_shift=0.5), STABLE)).metric("energy")
    down = judge(pair(sample(2, energy_shift=-0.5), STABLE)).metric("energy")
    assert up.classification is Classification.HIGH and up.effect > 0.3
    assert down.classification is Classification.LOW and down.effect < -0.3
    assert "noise_floor" in up.details


def test_error_rate_jump_fails_even_with_a_good_score():
    j = judge(pair(sample(2, error_rate=0.05), STABLE))
    err = j.metric("error")
    assert err.classification is Classification.HIGH and err.test == "fisher_exact"
    assert err.effect == pytest.approx(25, rel=0.9) and err.p_value < 1e-6  # a rate ratio: 5 % over ~0.2 %
    assert j.verdict is JudgeVerdict.FAIL and "critical metric(s) error failed" in j.reason
    assert j.score == pytest.approx(100 * 6 / 7)


def test_zero_errors_on_both_sides_pass_without_nan():
    z = np.zeros(500)
    m = classify("error", z, z, JudgeConfig().metrics["error"])
    assert m.classification is Classification.PASS and m.p_value == 1.0 and m.effect == 1.0


def test_small_error_difference_is_not_significant():
    # 2 errors in 300 against 0 in 300: large relative change, no evidence; Fisher p is about 0.25.
    c = np.r_[np.ones(2), np.zeros(298)]
    m = classify("error", c, np.zeros(300), JudgeConfig().metrics["error"], default_min_samples=50)
    assert m.classification is Classification.PASS and m.p_value > 0.05


def test_too_few_samples_is_inconclusive():
    j = judge(pair(sample(2, n=20), sample(3, n=20)))
    assert j.verdict is JudgeVerdict.INCONCLUSIVE
    assert all(m.classification is Classification.NO_DATA for m in j.metrics)
    assert "error" in j.reason and "too few samples" in j.reason


def test_no_data_on_most_of_the_weight_is_inconclusive_never_pass():
    c, s = sample(2), STABLE
    j = judge({"latency_ms": (c["latency_ms"], s["latency_ms"]), "error": (c["error"], s["error"])})
    assert j.verdict is JudgeVerdict.INCONCLUSIVE and j.score == 100.0
    assert "carry 4 of 7 weight" in j.reason


def test_no_data_on_a_minor_share_still_scores():
    c, s = sample(2), STABLE
    j = judge({k: (c[k], s[k]) for k in ("latency_ms", "error", "energy")})
    assert j.verdict is JudgeVerdict.PASS and j.metric("alert").classification is Classification.NO_DATA
    assert "no data: alert" in j.reason


def test_critical_failure_outranks_missing_data():
    c, s = sample(2, error_rate=0.05), STABLE
    j = judge({"error": (c["error"], s["error"])})
    assert j.verdict is JudgeVerdict.FAIL


def test_non_finite_values_are_dropped_and_counted():
    c = STABLE["latency_ms"].copy()
    c[:5] = np.nan
    m = classify("latency_ms", c, STABLE["latency_ms"], JudgeConfig().metrics["latency_ms"])
    assert m.n_canary == N - 5 and m.details["dropped_non_finite"] == {"canary": 5, "stable": 0}


def test_unconfigured_metric_and_non_binary_rates_are_errors():
    with pytest.raises(ValueError, match="no judge configuration for metrics \\['cpu'\\]"):
        judge({"cpu": ([1.0], [1.0])})
    with pytest.raises(ValueError, match="0/1"):
        classify("error", np.full(100, 0.5), np.zeros(100), JudgeConfig().metrics["error"])


def test_config_thresholds_change_the_verdict():
    cfg = JudgeConfig(pass_score=70)
    j = judge(pair(sample(2, latency=1.4), STABLE), cfg)
    assert j.verdict is JudgeVerdict.PASS and j.score > 70


def test_judgement_is_frozen_and_json_ready():
    j = judge(pair(sample(2, latency=3.0), STABLE))
    assert isinstance(j, Judgement)
    with pytest.raises(Exception):
        j.verdict = JudgeVerdict.PASS  # type: ignore[misc]
    d = json.loads(json.dumps(j.to_dict(), allow_nan=False))
    assert d["verdict"] == "fail" and d["failed_metrics"] == ["latency_ms"]
    lat = next(m for m in d["metrics"] if m["name"] == "latency_ms")
    assert lat["classification"] == "high" and lat["test"] == "mann_whitney_u"
