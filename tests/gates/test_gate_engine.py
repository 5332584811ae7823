"""The engine combines every check; the report round-trips through JSON and lists every check in markdown."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import datetime, timezone

from ebmops.core.settings import GateSettings, load_settings
from gates.checks import DetectionMetrics
from gates.engine import GateMeasurements, evaluate_gate
from gates.latency import LatencyStats
from gates.report import GateReport
from gates.verdict import Verdict

P, S, I, F = Verdict.PASS, Verdict.SKIPPED, Verdict.INCONCLUSIVE, Verdict.FAIL
ALL_CHECKS = ["latency_p95_budget", "latency_vs_champion", "energy_shift", "alert_rate_ceiling",
              "alert_rate_vs_champion", "auroc_floor", "ap_floor", "auroc_vs_champion", "ap_vs_champion",
              "feature_drift", "training_cost"]


def lat(p95, model):
    return LatencyStats(model=model, p50_ms=p95 / 2, p95_ms=p95, p99_ms=p95 * 1.5, mean_ms=p95 / 2, iterations=3000,
                        throughput_b64_eps=2e5, throughput_b1024_eps=3e5, flops_per_event=152_064,
                        flop_bound_eps=5e5, ratio_to_flop_bound=0.6, run_id="r")


def good(champion=True) -> GateMeasurements:
    return GateMeasurements(
        model_name="ebm-anomaly", model_version="7", champion_version="5" if champion else None,
        candidate_latency=lat(0.07, "candidate"), champion_latency=lat(0.068, "champion") if champion else None,
        energy_shift=0.03, energy_n_reference=5000, energy_n_current=10_000,
        candidate_alert_rate=0.006, champion_alert_rate=0.005 if champion else None, alert_window_events=10_000,
        candidate_detection=DetectionMetrics(0.985, 0.40, 100, 20_000, "h"),
        champion_detection=DetectionMetrics(0.986, 0.41, 100, 20_000, "h") if champion else None,
        feature_drift_share=0.05, n_features=40, drifted_features=["f3", "f7"], drift_report_path="drift.html",
        training_cost=0.02, device_hours=0.4, price_per_hour=0.05)


def test_all_pass_with_champion():
    rep = evaluate_gate(good(), GateSettings())
    assert [c.name for c in rep.checks] == ALL_CHECKS
    assert rep.verdict is P and rep.verdict.promotes
    assert rep.champion_version == "5" and not rep.skipped


def test_first_model_skips_comparisons_and_still_applies_absolute_checks():
    rep = evaluate_gate(good(champion=False))
    assert rep.skipped == ["latency_vs_champion", "alert_rate_vs_champion", "auroc_vs_champion", "ap_vs_champion"]
    assert rep.verdict is S and rep.verdict.promotes and rep.verdict.action == "promote"
    bad = evaluate_gate(replace(good(champion=False), training_cost=5.0))
    assert bad.verdict is F and bad.failed == ["training_cost"]


def test_champion_numbers_without_champion_version_are_ignored():
    m = replace(good(), champion_version=None)
    assert evaluate_gate(m).check("latency_vs_champion").verdict is S


def test_missing_champion_measurement_holds_for_a_human():
    rep = evaluate_gate(replace(good(), champion_alert_rate=None))
    assert rep.check("alert_rate_vs_champion").verdict is I
    assert rep.verdict is I and not rep.verdict.promotes and rep.verdict.action == "hold for a human"


def test_worst_verdict_wins():
    m = replace(good(), energy_shift=0.3, champion_latency=None)   # one fail, one inconclusive
    rep = evaluate_gate(m)
    assert rep.failed == ["energy_shift"] and rep.inconclusive == ["latency_vs_champion"]
    assert rep.verdict is F and rep.verdict.action == "reject"


def test_settings_carry_the_gate_thresholds(monkeypatch, tmp_path):
    monkeypatch.setenv("EBMOPS_GATE__ENERGY_SHIFT_MAX", "0.02")
    cfg = load_settings(home=tmp_path).gate
    assert cfg.energy_shift_max == 0.02
    assert all(f.description for f in GateSettings.model_fields.values())
    rep = evaluate_gate(good(), cfg)
    assert rep.check("energy_shift").verdict is F and rep.settings["energy_shift_max"] == 0.02


def test_report_json_round_trip(tmp_path):
    m = replace(good(), energy_shift=math.inf)
    rep = evaluate_gate(m, now=datetime(2026, 1, 2, tzinfo=timezone.utc))
    text = rep.to_json()
    json.loads(text)  # strict JSON: no bare Infinity/NaN
    assert "Infinity" not in text and "NaN" not in text
    back = GateReport.from_json(text)
    assert back == rep
    assert back.check("energy_shift").value == math.inf and back.verdict is F
    d = json.loads(text)
    assert d["champion_version"] == "5" and d["created_at"].startswith("2026-01-02")
    assert {c["name"] for c in d["checks"]} == set(ALL_CHECKS)
    assert all({"value", "threshold", "verdict", "reason"} <= c.keys() for c in d["checks"])
    assert d["measurements"]["candidate_latency"]["ratio_to_flop_bound"] == 0.6
    j, md = rep.write(tmp_path)
    assert GateReport.from_json(j.read_text()) == rep and md.read_text() == rep.to_markdown()


def test_markdown_lists_every_check_and_shows_skips():
    md = evaluate_gate(good(champion=False)).to_markdown()
    for name in ALL_CHECKS:
        assert f"| {name} |" in md
    assert "| latency_vs_champion | SKIPPED |" in md
    assert "Champion: none yet" in md and "Skipped: latency_vs_champion" in md
    assert md.splitlines()[0].endswith("SKIPPED (promote)")
