"""``ebmops train`` and ``ebmops demo``."""

from __future__ import annotations


import typer

from ebmops.cli import context
from ebmops.cli.gate import raise_for_verdict
from ebmops.tools.views import mlflow_ui_hint, print_gate, train_result_tables
from ebmops.core.console import console, print_json


def train(dataset: str = typer.Option(None, help="Dataset name: a built-in one (kdd99, covertype, shuttle, ...) or "
                                                "one under data.sources; it is trained as its own model "
                                                "(data.sources.NAME.model, else ebm-NAME)."),
          model: str = typer.Option(None, "--model", help="Model to train (default: the dataset's); alone, it "
                                                          "names its configured dataset."),
          epochs: int = typer.Option(None, min=1, help="Override training.epochs."),
          device: str = typer.Option(None, help="auto | cpu | cuda | mps (overrides training.device)."),
          seed: int = typer.Option(None, help="Override training.seed."),
          gate: bool = typer.Option(True, "--gate/--no-gate", help="Gate the new version at the end."),
          json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Run the train flow locally: validate, train, evaluate, register the challenger, gate it.

    Exits 3 when a batch fails validation, 4 when the gate fails, 5 when it holds for review."""
    if device is not None and device not in ("auto", "cpu", "cuda", "mps"):
        raise typer.BadParameter(f"--device must be auto, cpu, cuda or mps, not '{device}'")
    from ebmops.services.train import settings_for_run
    from flows.train import train as train_flow

    s = settings_for_run(context.settings(), dataset=dataset, model=model)  # a bad name fails before a flow run
    with context.flow_server():
        res = train_flow(dataset=dataset, model=model, epochs=epochs, device=device, seed=seed,
                         progress=not json_out, run_gate=gate)
    if json_out:
        print_json(res)
    else:
        train_result_tables(res, s)
        if res.get("gate"):
            print_gate(res["gate"]["report"])
        console.print(f"MLflow UI: [bold]{mlflow_ui_hint(s)}[/bold]")
    if res.get("gate"):
        raise_for_verdict(res["gate"])


def demo() -> None:
    """The lifecycle end to end on embedded defaults: train, gate, sync, serve, canary rollouts, a bad
    candidate rolled back, drift detected and hotfixed (SQLite, local MLflow, temporary Prefect)."""
    context.settings()
    from ebmops.tools.demo import run_demo

    with context.flow_server():
        run_demo()
