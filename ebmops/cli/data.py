"""``ebmops data``, ``ebmops validate``, ``ebmops quarantine`` and ``ebmops config``."""

from __future__ import annotations

from pathlib import Path

import typer

from ebmops.cli import context
from ebmops.core.console import print_json, print_kv, print_table

data_app = typer.Typer(no_args_is_help=True, help="Datasets: fetch and inspect.")
quarantine_app = typer.Typer(no_args_is_help=True, help="Batches that failed validation.")
config_app = typer.Typer(no_args_is_help=True, help="Resolved configuration.")


@data_app.command("fetch")
def fetch(dataset: str = typer.Option(None, help="Dataset name (default: data.dataset)."),
          json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Fetch (or read from cache) a dataset and show its regional batches."""
    from ebmops.core.data import load_dataset, region_batches

    s = context.settings()
    ds = load_dataset(dataset or s.data.dataset, s)
    rows = [{"region": r, "events": len(b), "anomalies": int(b["label"].sum()) if "label" in b else None}
            for r, b in region_batches(ds).items()]
    info = {"dataset": ds.name, "events": len(ds.frame), "features": ds.schema.n_features,
            "fingerprint": ds.fingerprint(), "source": ds.meta.get("source"), "regions": rows}
    if json_out:
        print_json(info)
        return
    print_kv({k: v for k, v in info.items() if k != "regions"}, title=f"dataset {ds.name}")
    print_table(rows, ["region", "events", "anomalies"])


def validate(path: Path = typer.Argument(..., help="Parquet or CSV batch to validate."),
             dataset: str = typer.Option(None, help="Dataset whose schema and reference apply (default: data.dataset)."),
             region: str = typer.Option(None, help="Region the batch comes from (recorded with a quarantine)."),
             json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Validate an event batch; a failing batch is quarantined and the command exits 3."""
    from ebmops.core.validation import validate_file

    s = context.settings()
    result = validate_file(path, dataset or s.data.dataset, s, store=context.store(), region=region)
    if json_out:
        print_json({"success": result.success, "rows": result.n_rows, "failures": result.failures})
    else:
        print(f"{path}: {result.n_rows} rows passed validation ({result.seconds:.2f} s)")


@quarantine_app.command("list")
def quarantine_list(json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Quarantined batches, newest first."""
    recs = context.store().list_quarantine()
    rows = [{"id": q.id, "when": q.created_at, "dataset": q.dataset, "region": q.region, "rows": q.n_rows,
             "failed": len(q.failures), "path": q.path} for q in recs]
    if json_out:
        print_json([{**r, "failures": q.failures} for r, q in zip(rows, recs)])
    else:
        print_table(rows, ["id", "when", "dataset", "region", "rows", "failed", "path"], title="quarantine")


@config_app.command("show")
def config_show(json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """The resolved settings (environment > ebmops.yaml > defaults)."""
    from ebmops.core.settings import config_path

    s = context.settings()
    dump = s.model_dump(mode="json")
    dump["_config_file"] = str(config_path()) if config_path() else None
    dump["_state_url"] = s.resolved_state_url
    dump["_tracking_uri"] = s.resolved_tracking_uri
    if json_out:
        print_json(dump)
        return
    flat: dict = {}

    def walk(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict) and v and k != "sources":
                walk(v, f"{prefix}{k}.")
            else:
                flat[f"{prefix}{k}"] = v

    walk(dump)
    print_kv(flat, title="settings")
