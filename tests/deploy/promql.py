"""The alert rules and the dashboard's queries, and the metric names in a PromQL expression (walks
promql_parser's AST): shared by the file checks and the live-node scrape."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import promql_parser
import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"

SYNTHETIC = {"up"}  # made by Prometheus itself, not by a node


def metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            return
        for attr in ("lhs", "rhs", "expr", "vector_selector", "param"):
            child = getattr(node, attr, None)
            if child is not None and not isinstance(child, (str, int, float)):
                walk(child)
        for arg in getattr(node, "args", None) or []:
            walk(arg)

    walk(promql_parser.parse(expr))
    return names


def dashboard_module():
    spec = importlib.util.spec_from_file_location("ebmops_dashboard", ROOT / "deploy" / "grafana" / "dashboard.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def alert_rules() -> list[dict]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def all_expressions() -> list[str]:
    dash = dashboard_module()
    return [r["expr"] for r in alert_rules()] + list(dash.QUERIES)
