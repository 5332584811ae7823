"""Entry point of the ``ebmops`` command."""

from __future__ import annotations

import sys

import typer

from ebmops.cli import data as data_cmd
from ebmops.cli import gate as gate_cmd
from ebmops.cli import models as models_cmd
from ebmops.cli import train as train_cmd
from ebmops.cli.output import err_console
from ebmops.errors import EbmopsError

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
app.command("demo")(train_cmd.demo)


def main() -> None:
    try:
        app(standalone_mode=False)
    except EbmopsError as e:
        err_console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except Exception as e:  # noqa: BLE001 - last line of defence: one readable line, not a traceback
        import click
        from pydantic import ValidationError

        if isinstance(e, click.exceptions.Exit):
            sys.exit(e.exit_code)
        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(130)
        if isinstance(e, ValidationError):
            err_console.print(f"[red]invalid settings:[/red] {e}", highlight=False, soft_wrap=True)
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
