"""``ebmops models`` (registered models, their versions and aliases) and ``ebmops runs`` (training runs)."""

from __future__ import annotations

import typer

from ebmops.cli import context
from ebmops.core.console import print_json, print_kv, print_table

models_app = typer.Typer(no_args_is_help=True, help="Registered models (one per dataset), their versions and aliases.")
runs_app = typer.Typer(no_args_is_help=True, help="Training runs recorded in the state store.")


def _registry(model: str | None = None):
    from registry import ModelRegistry

    return ModelRegistry.from_settings(context.scope(model=model))


def _row(v) -> dict:
    t = v.tags
    return {"version": v.version, "aliases": sorted(v.aliases), "created": v.created_at,
            "auroc": t.get("ebm_auroc"), "ap": t.get("ebm_ap"), "threshold": v.threshold,
            "gate": t.get("gate.verdict"), "dataset": t.get("dataset"), "run": v.run_id}


@models_app.command("list")
def models_list(model: str = typer.Option(None, "--model", help="List this model's versions instead."),
                json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Every registered model: its dataset, versions, champion and production version per region. With
    --model, that model's versions, newest first, with aliases and key tags."""
    if model is not None:
        reg = _registry(model)
        versions = reg.list_versions()
        if json_out:
            print_json(versions)
            return
        print_table([_row(v) for v in versions], ["version", "aliases", "created", "auroc", "ap", "threshold",
                                                  "gate", "dataset", "run"], title=f"model {reg.model_name}")
        return
    from ebmops.services.models import list_models

    s = context.settings()
    found = list_models(s)
    if json_out:
        print_json(found)
        return
    rows = [{"model": m["model"], "dataset": m["dataset"], "versions": m["versions"],
             "champion": m["champion"] and f"v{m['champion']}",
             **{f"prod-{r}": v and f"v{v}" for r, v in m["prod"].items()}} for m in found]
    print_table(rows, ["model", "dataset", "versions", "champion", *(f"prod-{r}" for r in s.data.regions)],
                title="registered models")


@models_app.command("show")
def models_show(version: str = typer.Argument(..., help="Version number or @alias (e.g. @champion)."),
                model: str = typer.Option(None, "--model", help=context.MODEL_HELP),
                json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """One version with all its tags."""
    reg = _registry(model)
    v = reg.resolve(version)
    if json_out:
        print_json(v)
        return
    print_kv({"version": v.version, "aliases": sorted(v.aliases), "created": v.created_at, "run": v.run_id,
              "source": v.source, "threshold": v.threshold, **{f"tag {k}": val for k, val in sorted(v.tags.items())}},
             title=f"{v.name} v{v.version}")


@runs_app.command("list")
def runs_list(limit: int = typer.Option(20, help="How many runs."),
              json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Training runs, newest first."""
    runs = context.store().list_training_runs(limit=limit)
    if json_out:
        print_json(runs)
        return
    rows = [{"id": r.id[:12], "started": r.created_at, "dataset": r.dataset, "status": r.status, "device": r.device,
             "seconds": r.seconds, "auroc": r.metrics.get("ebm_auroc"), "version": r.model_version} for r in runs]
    print_table(rows, ["id", "started", "dataset", "status", "device", "seconds", "auroc", "version"],
                title="training runs")
