"""``ebmops drift check``: run the drift monitor once and show Δ per region and version."""

from __future__ import annotations

from typing import List, Optional

import typer

from ebmops.cli import context
from ebmops.core.console import console, print_json, print_table

drift_app = typer.Typer(no_args_is_help=True, help="Live energy drift per region.")


@drift_app.command("check")
def check(region: Optional[List[str]] = typer.Option(None, "--region", "-r", help="Region (repeat); default all."),
          model: str = typer.Option(None, "--model", help="Watch only this model (default: every registered one)."),
          json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Run the drift-monitor flow now: Δ per model and region, breaches emitted as ebmops.drift.breached."""
    s = context.settings()
    from ebmops.services.sync import check_regions
    from flows.drift_monitor import drift_monitor

    check_regions(s, region)
    if model is not None:
        context.scope(model=model)  # an unknown model fails before a flow run starts
    with context.flow_server():
        out = drift_monitor(regions=region or None, model=model)
    if json_out:
        print_json(out)
        return
    print_table(out["observations"], ["model", "region", "version", "role", "delta", "level", "reference_kind", "n_events"],
                title=f"energy shift Δ (warn {s.drift.warn_delta}, hotfix {s.drift.hotfix_delta})")
    for b in out["breaches"]:
        console.print(f"[red]breach[/red] {b['model']} {b['region']} v{b['version']} Δ={b['delta']:.3f}: "
                      f"{'hotfix event emitted' if b['start_hotfix'] else 'no hotfix: ' + b['decision']}"
                      + (f"; report {b['report']}" if b.get("report") else ""))
