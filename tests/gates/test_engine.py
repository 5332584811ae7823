"""Gate engine: waived checks."""

def test_a_waived_check_is_reported_skipped_with_its_reason_never_passed():
    from gates.engine import GateMeasurements, evaluate_gate
    from gates.verdict import Verdict

    m = GateMeasurements(model_name="m", model_version="2", champion_version="1", candidate_alert_rate=0.05,
                         champion_alert_rate=0.001, alert_window_events=100_000)
    plain = {c.name: c for c in evaluate_gate(m).checks}
    assert plain["alert_rate_vs_champion"].verdict is Verdict.FAIL
    m.waived["alert_rate_vs_champion"] = "hotfix gate"
    waived = {c.name: c for c in evaluate_gate(m).checks}
    assert waived["alert_rate_vs_champion"].verdict is Verdict.SKIPPED
    assert waived["alert_rate_vs_champion"].reason == "waived: hotfix gate"
    assert waived["alert_rate_ceiling"].verdict == plain["alert_rate_ceiling"].verdict  # the ceiling still applies
