"""Metric names in a PromQL expression (walks promql_parser's AST)."""

from __future__ import annotations

import promql_parser

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
