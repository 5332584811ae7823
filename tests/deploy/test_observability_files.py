"""Alert rules and the dashboard: every expression parses, the dashboard JSON is what its generator makes."""

from __future__ import annotations

import json
from pathlib import Path

import promql_parser
import pytest

from tests.deploy.promql import alert_rules, all_expressions, dashboard_module, metric_names

ROOT = Path(__file__).resolve().parents[2]
REQUIRED_ALERTS = {"EbmopsNodeLatencyP95OverSLA", "EbmopsNodeErrorRatio", "EbmopsEnergyShiftOverHotfixLevel",
                   "EbmopsServedVersionNotDesired", "EbmopsNodeNotReady", "EbmopsRateLimitRejectionsSurging"}


def test_every_alert_expression_parses_and_the_required_alerts_exist():
    rules = alert_rules()
    assert REQUIRED_ALERTS <= {r["alert"] for r in rules}
    for r in rules:
        promql_parser.parse(r["expr"])
        assert r["annotations"]["summary"]
    by_name = {r["alert"]: r for r in rules}
    assert by_name["EbmopsNodeLatencyP95OverSLA"]["for"] == "5m" and "0.1" in by_name["EbmopsNodeLatencyP95OverSLA"]["expr"]
    assert by_name["EbmopsServedVersionNotDesired"]["for"] == "10m"


def test_a_broken_expression_is_refused_by_the_parser():
    with pytest.raises(ValueError):
        promql_parser.parse("sum by (region) (rate(ebmops_node_events_total[5m])")


def test_every_dashboard_query_parses_and_the_json_is_generated_from_the_module():
    dash = dashboard_module()
    for q in dash.QUERIES:
        promql_parser.parse(q.replace("$region", ".*"))
    committed = json.loads((ROOT / "deploy" / "grafana" / "ebmops-nodes.json").read_text())
    assert committed == dash.build(), "deploy/grafana/ebmops-nodes.json is stale: run python deploy/grafana/dashboard.py"
    exprs = [t["expr"] for p in committed["panels"] for t in p.get("targets", [])]
    assert sorted(exprs) == sorted(q for q in dash.QUERIES if q != "ebmops_node_region_info")
    titles = " ".join(p["title"] for p in committed["panels"])
    for needed in ("all regions", "by region", "Energy shift", "version", "Canary weight"):
        assert needed in titles


def test_metric_names_are_extracted_from_every_expression():
    names = set().union(*(metric_names(e) for e in all_expressions()))
    assert {"ebmops_node_request_seconds_bucket", "ebmops_node_energy_shift", "ebmops_node_canary_weight",
            "ebmops_node_client_requests_total", "ebmops_node_target_generation"} <= names
