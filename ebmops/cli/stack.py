"""``ebmops up`` / ``ebmops down``: the whole control plane on this machine (see ebmops/tools/stack.py)."""

from __future__ import annotations

import typer

from ebmops.cli import context
from ebmops.core.console import console, err_console, print_json, print_table
from ebmops.core.errors import DeployFailed


def up(prefect_port: int = typer.Option(4200, "--prefect-port", min=1, max=65535, help="Port of the Prefect server."),
       mlflow_port: int = typer.Option(5000, "--mlflow-port", min=1, max=65535, help="Port of the MLflow server."),
       deploy: bool = typer.Option(True, "--deploy/--no-deploy",
                                   help="Deploy the flows in prefect.yaml once the worker runs."),
       timeout: float = typer.Option(180.0, "--timeout", min=1,
                                     help="Seconds each server and node may take to answer its health URL."),
       json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Start Prefect and MLflow servers, the `local` work pool and worker, one node per region (in the
    background, pid files and logs under <home>/stack/), then deploy the flows (exit 16 when something is
    already running or a port is taken)."""
    s = context.settings()
    from ebmops.tools.stack import StackOptions
    from ebmops.tools.stack import up as stack_up

    say = (lambda _m: None) if json_out else (lambda m: err_console.print(f"[dim]{m}[/dim]", highlight=False))
    report = stack_up(s, StackOptions(prefect_port=prefect_port, mlflow_port=mlflow_port, deploy=deploy,
                                      timeout_s=timeout), progress=say)
    if json_out:
        print_json(report.to_dict())
    else:
        from rich.table import Table

        table = Table(title=f"ebmops stack ({report.stack_dir}), up in {report.started_in_s:g} s",
                      title_justify="left")
        table.add_column("service", no_wrap=True)
        table.add_column("pid", no_wrap=True)
        table.add_column("url", overflow="fold")
        for svc in report.services:
            table.add_row(svc.what, str(svc.pid), svc.url or "-")
        console.print(table)
        console.print(f"logs: {report.stack_dir}/logs/", highlight=False, soft_wrap=True)
        if report.deployments:
            console.print(f"deployed: {', '.join(report.deployments)}")
        for note in report.notes:
            console.print(f"note: {note}", highlight=False)
        console.print("Prefect UI: " + report.prefect_api_url.removesuffix("/api")
                      + (f"   MLflow UI: {m.url}" if (m := next((x for x in report.services if x.kind == "mlflow"),
                                                                  None)) else ""))
        console.print("For prefect and ebmops commands in this shell:")
        console.print(f"  export PREFECT_API_URL={report.prefect_api_url} EBMOPS_HOME={report.home}",
                      highlight=False, soft_wrap=True)
        console.print("Stop everything with `ebmops down`.")
    if report.deploy_error:
        raise DeployFailed(report.deploy_error)


def down(json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Stop the processes `ebmops up` started (those whose pid files it wrote, while the pid still runs the
    recorded command line) and remove their pid files."""
    s = context.settings()
    from ebmops.tools.stack import down as stack_down

    results = stack_down(s)
    if json_out:
        print_json([r.__dict__ for r in results])
        return
    if not results:
        console.print(f"nothing to stop: no pid files under {s.home / 'stack'}")
        return
    print_table([{"service": r.name, "pid": r.pid, "outcome": r.outcome, "children": r.children or None}
                 for r in results], ["service", "pid", "outcome", "children"], title="ebmops down")
