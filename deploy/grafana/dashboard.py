"""The Grafana dashboard of the regional nodes, as code (grafana-foundation-sdk).

    python deploy/grafana/dashboard.py        # rewrites deploy/grafana/ebmops-nodes.json

Import the JSON in Grafana (Dashboards > New > Import) or provision it from a ConfigMap. Global
and per-region SLO views side by side, because a healthy global p95 can hide a struggling region;
then models (Δ per model and version, versions served, canary weight, generations) and clients
(rate limits, rejected tokens). Series carry ``region`` from the scrape config
(deploy/prometheus/scrape.yaml). ``QUERIES`` lists every expression: the tests parse each one and
check every metric name against a live node.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "ebmops-nodes.json"
SLA_S = 0.1
R = 'region=~"$region"'


def _p(q: float, by: str) -> str:
    return f"histogram_quantile({q}, sum by ({by}) (rate(ebmops_node_request_seconds_bucket{{{R}}}[5m])))"


# (row, title, unit, [(expr, legend)])
PANELS: list[tuple[str, str, str, list[tuple[str, str]]]] = [
    ("SLO: all regions", "p95 / p99 latency, all regions", "s",
     [(_p(0.95, "le"), "p95"), (_p(0.99, "le"), "p99")]),
    ("SLO: all regions", "Events scored per second, all regions", "ops",
     [(f"sum(rate(ebmops_node_events_total{{{R}}}[5m]))", "events/s")]),
    ("SLO: all regions", "Error ratio (5xx), all regions", "percentunit",
     [(f'sum(rate(ebmops_node_requests_total{{status=~"5..",{R}}}[5m])) / '
       f"sum(rate(ebmops_node_requests_total{{{R}}}[5m]))", "5xx ratio")]),
    ("SLO: per region", "p95 latency by region (SLA 100 ms)", "s",
     [(_p(0.95, "region, le"), "{{region}}")]),
    ("SLO: per region", "p99 latency by region", "s",
     [(_p(0.99, "region, le"), "{{region}}")]),
    ("SLO: per region", "Events per second by region", "ops",
     [(f"sum by (region) (rate(ebmops_node_events_total{{{R}}}[5m]))", "{{region}}")]),
    ("SLO: per region", "Errors by region and kind", "ops",
     [(f"sum by (region, kind) (rate(ebmops_node_errors_total{{{R}}}[5m]))", "{{region}} {{kind}}"),
      (f'sum by (region, status) (rate(ebmops_node_requests_total{{status!="200",{R}}}[5m]))',
       "{{region}} HTTP {{status}}")]),
    ("SLO: per region", "Ready replicas by region and model", "short",
     [(f"sum by (region, model) (ebmops_node_ready{{{R}}})", "{{region}} {{model}}")]),
    ("Models", "Energy shift Δ by model and version (hotfix level 0.10)", "none",
     [(f"max by (region, model, version) (ebmops_node_energy_shift{{{R}}})", "{{region}} {{model}} v{{version}}")]),
    ("Models", "Replicas serving each version", "short",
     [(f"count by (region, model, version, role) (ebmops_node_loaded_version_info{{{R}}})",
       "{{region}} {{model}} v{{version}} ({{role}})")]),
    ("Models", "Canary weight by region and model", "percentunit",
     [(f"max by (region, model) (ebmops_node_canary_weight{{{R}}})", "{{region}} {{model}}")]),
    ("Models", "Served and desired generation", "short",
     [(f"min by (region, model) (ebmops_node_desired_generation{{{R}}})", "{{region}} {{model}} served (oldest replica)"),
      (f"max by (region, model) (ebmops_node_target_generation{{{R}}})", "{{region}} {{model}} desired")]),
    ("Clients", "Requests by client and outcome", "reqps",
     [(f"sum by (region, client, outcome) (rate(ebmops_node_client_requests_total{{{R}}}[5m]))",
       "{{region}} {{client}} {{outcome}}")]),
    ("Clients", "Events admitted by client", "ops",
     [(f"sum by (client) (rate(ebmops_node_client_events_total{{{R}}}[5m]))", "{{client}}")]),
]
VARIABLE_QUERY = "label_values(ebmops_node_region_info, region)"
QUERIES: list[str] = [expr for *_, targets in PANELS for expr, _ in targets] + [
    "ebmops_node_region_info"]  # the region variable's source


def build() -> dict:
    from grafana_foundation_sdk.builders import dashboard as db
    from grafana_foundation_sdk.builders import prometheus, timeseries
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import DataSourceRef

    ds = DataSourceRef(type_val="prometheus", uid="${datasource}")
    d = (db.Dashboard("ebmops: regional nodes").uid("ebmops-nodes").tags(["ebmops", "slo"])
         .refresh("30s").time("now-6h", "now").timezone("utc")
         .with_variable(db.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
         .with_variable(db.QueryVariable("region").label("Region").datasource(ds).query(VARIABLE_QUERY)
                        .multi(True).include_all(True).all_value(".*")))
    row = None
    for row_title, title, unit, targets in PANELS:
        if row_title != row:
            d = d.with_row(db.Row(row_title))
            row = row_title
        panel = timeseries.Panel().title(title).unit(unit).datasource(ds).height(8).span(12 if "per region" in
                                                                                          row_title else 8)
        for i, (expr, legend) in enumerate(targets):
            panel = panel.with_target(prometheus.Dataquery().expr(expr).legend_format(legend).ref_id("ABCD"[i]))
        d = d.with_panel(panel)
    return json.loads(json.dumps(d.build(), cls=JSONEncoder))


def main() -> int:
    OUT.write_text(json.dumps(build(), indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
