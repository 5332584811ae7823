"""``ebmops node``: run a region's inference node."""

from __future__ import annotations

import typer

from ebmops.cli import context
from ebmops.core.console import console


def node(region: str = typer.Option(..., "--region", help="Region to serve; one of data.regions."),
         port: int = typer.Option(None, "--port", min=1, max=65535,
                                  help="Port (default serving.base_port + the region's index in data.regions)."),
         host: str = typer.Option(None, "--host", help="Bind address (default serving.host).")) -> None:
    """Serve the region's desired model versions over HTTP until interrupted (exits 2 on an unknown region)."""
    s = context.settings()
    from serving.node import check_region, run_node

    check_region(s, region)
    console.print(f"node {region}: http://{host or s.serving.host}:{port or s.node_port(region)} "
                  f"(model {s.registry.model_name}, polling every {s.serving.poll_interval_s:g} s)")
    run_node(s, region, port=port, host=host)
