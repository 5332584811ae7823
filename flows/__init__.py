"""Prefect flows. Each flow only wires: every task is a one-line call into ``ebmops.services``
or a lifecycle package, none of which imports Prefect."""
