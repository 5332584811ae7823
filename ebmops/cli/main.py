"""Entry point of the ``ebmops`` command."""

from __future__ import annotations

import sys

import typer

from ebmops.cli import audit as audit_cmd
from ebmops.cli import data as data_cmd
from ebmops.cli import drift as drift_cmd
from ebmops.cli import gate as gate_cmd
from ebmops.cli import models as models_cmd
from ebmops.cli import node as node_cmd
from ebmops.cli import operator as operator_cmd
from ebmops.cli import rollout as rollout_cmd
from ebmops.cli import score as score_cmd
from ebmops.cli import stack as stack_cmd
from ebmops.cli import sync as sync_cmd
from ebmops.cli import train as train_cmd
from ebmops.core.console import err_console
from ebmops.core.errors import EbmopsError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="ebmops: validate, train, gate, register and roll out energy-based anomaly models.")
app.add_typer(data_cmd.data_app, name="data")
app.add_typer(data_cmd.config_app, name="config")
app.add_typer(data_cmd.quarantine_app, name="quarantine")
app.add_typer(models_cmd.models_app, name="models")
app.add_typer(models_cmd.runs_app, name="runs")
app.command("validate")(data_cmd.validate)
app.command("train")(train_cmd.train)
app.command("gate")(gate_cmd.gate)
app.command("score")(score_cmd.score)
app.command("sync")(sync_cmd.sync)
app.add_typer(sync_cmd.regions_app, name="regions")
app.command("demo")(train_cmd.demo)
app.add_typer(node_cmd.node_app, name="node")
app.add_typer(audit_cmd.audit_app, name="audit")
app.add_typer(operator_cmd.operator_app, name="operator")
app.add_typer(drift_cmd.drift_app, name="drift")
app.add_typer(rollout_cmd.rollout_app, name="rollout")
app.command("approve")(rollout_cmd.approve)
app.command("reject")(rollout_cmd.reject)
app.command("rollback")(rollout_cmd.rollback)
app.command("up")(stack_cmd.up)
app.command("down")(stack_cmd.down)


def main() -> None:
    try:
        app(standalone_mode=False)
    except EbmopsError as e:
        err_console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except Exception as e:  # noqa: BLE001 - last line of defence: one readable line, not a traceback
        # typer >= 0.29 vendors click: its exceptions are not click's, so match both by shape.
        from pydantic import ValidationError

        name = type(e).__name__
        if name == "Exit" and hasattr(e, "exit_code"):
            sys.exit(e.exit_code)
        if name == "Abort":
            sys.exit(130)
        if hasattr(e, "show") and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, ValidationError):
            err_console.print(f"[red]invalid settings:[/red] {e}", highlight=False, soft_wrap=True)
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
