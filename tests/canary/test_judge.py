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
    assert j.metric("latency_ms").reason in j.reason  # with its medians and p-value


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


# ---- issue 14: rates relative to their base, calibrated expectations, the power rule -----------------

N_C, N_S = 1800, 2048  # the default plan's first step: 25 % of 40 events/s for 180 s, stable capped by its ring


def grid_pair(seed: int, *, base: float = 0.01, alert: float = 1.0, latency: float = 1.0, error: float = 0.0,
              energy: float = 0.0, n_c: int = N_C, n_s: int = N_S) -> dict:
    rng = np.random.default_rng(seed)

    def draw(n, a, lat, err, en):
        return {"latency_ms": rng.lognormal(np.log(10.0 * lat), 0.3, n),
                "error": (rng.random(n) < 0.001 + err).astype(float),
                "energy": rng.normal(en, 1.0, n), "alert": (rng.random(n) < a).astype(float)}

    c, s = draw(n_c, base * alert, latency, error, energy), draw(n_s, base, 1.0, 0.0, 0.0)
    return {k: (c[k], s[k]) for k in c}


NOT_PASS = {JudgeVerdict.MARGINAL, JudgeVerdict.FAIL}


@pytest.mark.parametrize("effect, kwargs, allowed", [
    ("no change", {}, {JudgeVerdict.PASS}),
    ("silent", {"alert": 0.0}, {JudgeVerdict.FAIL}),
    ("alert x3", {"alert": 3.0}, NOT_PASS),
    ("alert x5", {"alert": 5.0}, {JudgeVerdict.FAIL}),
    ("latency x1.5", {"latency": 1.5}, {JudgeVerdict.MARGINAL}),
    ("latency x3", {"latency": 3.0}, {JudgeVerdict.FAIL}),
    ("error +2pp", {"error": 0.02}, {JudgeVerdict.FAIL}),
    ("energy Δ0.2", {"energy": 0.2}, NOT_PASS),
])
@pytest.mark.parametrize("base", [0.01, 0.05])
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_effect_grid_at_the_default_plans_first_window(effect, kwargs, allowed, base, seed):
    j = judge(grid_pair(seed, base=base, **kwargs), expected={"alert": (base, base)})
    assert j.verdict in allowed, (effect, j.reason)


@pytest.mark.parametrize("alert, word", [(0.0, "silent"), (5.0, "storm")])
def test_silence_and_storms_fail_outright_with_their_name(alert, word):
    j = judge(grid_pair(3, alert=alert), expected={"alert": (0.01, 0.01)})
    m = j.metric("alert")
    assert j.verdict is JudgeVerdict.FAIL and m.beyond_fail_limit and word in m.reason
    assert "alert beyond the fail limit" in j.reason
    # the verdict carries the metric's own numbers: the log line and the rollout's message say why
    assert j.reason.endswith(m.reason) and "Fisher p=" in j.reason
    assert m.details["vs_stable"]["failing"] and m.details["vs_expected"]["failing"]


def test_the_old_absolute_difference_missed_what_the_ratio_catches():
    # 1 % -> 3 %: two points, under the old 5-point band; as a ratio it is a x3 storm
    old = JudgeConfig(power=0.0, metrics={"alert": JudgeConfig().metrics["alert"].model_copy(
        update={"effect": "rate_difference", "effect_size": 0.05, "fail_effect_size": 0.25, "abs_floor": 0.0})})
    pair_ = grid_pair(5, alert=3.0)
    assert judge({"alert": pair_["alert"]}, old).verdict is JudgeVerdict.PASS
    assert judge(pair_, expected={"alert": (0.01, 0.01)}).metric("alert").classification is Classification.HIGH


def test_a_wrong_threshold_is_caught_even_when_stable_is_off_too():
    # both versions alert 3 % where their calibration promises 1 %: against stable the canary looks fine,
    # against its own expectation it is a storm; stable off the same way makes it a human's call
    rng = np.random.default_rng(8)
    c, s = (rng.random(N_C) < 0.03).astype(float), (rng.random(N_S) < 0.03).astype(float)
    j = judge({"alert": (c, s)}, JudgeConfig(), expected={"alert": (0.01, 0.01)})
    m = j.metric("alert")
    assert m.classification is Classification.HIGH and not m.beyond_fail_limit
    assert not m.details["vs_stable"]["failing"] and m.details["vs_expected"]["stable"]["off_the_same_way"]
    assert "a human decides" in m.reason and j.verdict is not JudgeVerdict.PASS
    # stable on its expectation: the canary's storm against its own calibration fails outright
    s_ok = (rng.random(N_S) < 0.01).astype(float)
    j = judge({"alert": (c, s_ok)}, JudgeConfig(), expected={"alert": (0.01, 0.01)})
    assert j.verdict is JudgeVerdict.FAIL and j.metric("alert").beyond_fail_limit


def test_a_canary_on_its_calibration_beside_a_drifted_stable_passes():
    # a hotfix: stable storms at 5 % on drifted traffic, the recalibrated canary alerts its promised 1 %
    rng = np.random.default_rng(9)
    c, s = (rng.random(N_C) < 0.01).astype(float), (rng.random(N_S) < 0.05).astype(float)
    m = judge({"alert": (c, s)}, JudgeConfig(), expected={"alert": (0.01, 0.01)}).metric("alert")
    assert m.classification is Classification.PASS and "the gap is stable's" in m.reason
    # without expectations the same gap is a silence against stable
    m = judge({"alert": (c, s)}, JudgeConfig()).metric("alert")
    assert m.classification is Classification.LOW


@pytest.mark.parametrize("effect, kwargs", [("no change", {}), ("silent", {"alert": 0.0})])
def test_too_little_traffic_is_inconclusive_never_pass(effect, kwargs):
    # 0.1 % base, 1,800 canary events: 1.8 expected alerts; silence cannot be told from luck
    j = judge(grid_pair(4, base=0.001, **kwargs), expected={"alert": (0.001, 0.001)})
    assert j.verdict is JudgeVerdict.INCONCLUSIVE, j.reason
    m = j.metric("alert")
    assert m.classification is Classification.LOW_POWER and not m.power["enough"]
    assert "more canary samples" in m.reason and "too little traffic to judge alert" in j.reason
    assert m.power["needed_scale"] > 1.5 and "alert" in j.power and "needs" in j.power


def test_low_power_never_hides_a_failure():
    j = judge(grid_pair(6, latency=3.0, n_c=150, n_s=150), expected={"alert": (0.01, 0.01)})
    assert j.verdict is JudgeVerdict.FAIL and j.metric("latency_ms").beyond_fail_limit


def test_the_power_rule_can_be_turned_off():
    pair_ = grid_pair(4, base=0.001)
    assert judge(pair_, JudgeConfig(power=0.0), expected={"alert": (0.001, 0.001)}).verdict is JudgeVerdict.PASS
    assert judge(pair_, JudgeConfig(power=0.0)).metric("alert").power is None


def test_a_powered_window_reports_ok():
    j = judge(grid_pair(2), expected={"alert": (0.01, 0.01)})
    assert j.verdict is JudgeVerdict.PASS and j.power.startswith("ok (min power")
    assert json.loads(json.dumps(j.to_dict(), allow_nan=False))["power"] == j.power


def test_rate_ratio_settings_need_factors():
    from pydantic import ValidationError

    from ebmops.core.settings import CanaryMetricSettings

    with pytest.raises(ValidationError, match="must exceed 1"):
        CanaryMetricSettings(effect="rate_ratio", effect_size=0.05)


# ---- energies against each version's own calibration -------------------------------------------------
# In a rollout each version's energies are percentiles within its own calibration energies: a version on the
# traffic it was calibrated for reads about uniform, and its calibration reads exactly uniform.
CALIBRATION = np.linspace(0.0, 1.0, 2001)


def _energy(canary: np.ndarray, stable: np.ndarray):
    cfg = JudgeConfig().metrics["energy"]
    return classify("energy", canary, stable, cfg, expected=(CALIBRATION, CALIBRATION))


def test_a_gap_that_is_stables_drift_is_not_the_canarys_failure():
    # a hotfix recalibrated on traffic that moved: the canary sits on its calibration, stable is far off its own
    rng = np.random.default_rng(5)
    on_its_own, drifted = rng.random(N), rng.beta(2.0, 1.0, N)
    blind = classify("energy", on_its_own, drifted, JudgeConfig().metrics["energy"])
    assert blind.classification is Classification.LOW  # without the calibrations: a gap like any other
    m = _energy(on_its_own, drifted)
    assert m.classification is Classification.PASS and "the gap is stable's" in m.reason, m.reason
    cal = m.details["vs_calibration"]
    assert not cal["canary_off"] and cal["stable_off"] and cal["stable"] > 0.1 > cal["canary"]


@pytest.mark.parametrize("stable_drifted", [False, True])
def test_a_canary_off_its_own_calibration_still_fails(stable_drifted):
    rng = np.random.default_rng(6)
    canary = rng.beta(3.0, 1.0, N)  # its energies moved far above where its calibration put them
    stable = rng.beta(1.5, 1.0, N) if stable_drifted else rng.random(N)
    m = _energy(canary, stable)
    assert m.classification is Classification.HIGH, m.reason
    assert m.details["vs_calibration"]["canary_off"]
