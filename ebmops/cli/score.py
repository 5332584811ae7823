"""``ebmops score``: batch-score a stored source with a region's production version (or a named one)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import typer

from ebmops.cli import context
from ebmops.core.console import err_console, print_json, print_kv


def _watch(out: Path, stop: threading.Event) -> None:
    """A progress bar from the output folder (partition records appear as tasks finish, wherever they run)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("scoring partitions"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = None
        while not stop.wait(0.5):
            try:
                total = len(json.loads((out / "_scores.json").read_text())["partitions"])
            except (OSError, ValueError, KeyError):
                continue
            done = sum(1 for p in (out / "_done").glob("part-*.json") if (out / p.name.replace(".json", ".parquet"))
                       .is_file()) if (out / "_done").is_dir() else 0
            if task is None:
                task = bar.add_task("score", total=total)
            bar.update(task, completed=done)


def score(source: str = typer.Argument(..., help="A dataset name (a built-in one or one under data.sources), "
                                                 "or a Parquet/CSV file, a directory or a glob of Parquet files."),
          out: Path = typer.Option(..., "--out", help="Output folder: one Parquet file per source partition; "
                                                      "rerunning with the same folder resumes."),
          model: str = typer.Option(None, "--model", help="Registered model name (default: a dataset's own model; for a "
                                                          "path, the one model the region serves, or "
                                                          "registry.model_name when configured)."),
          region: str = typer.Option(None, "--region", help="Score with this region's production version, fetched "
                                                            "from its store (default: the first of data.regions)."),
          version: str = typer.Option(None, "--version", help="Score with this version instead (fetched and "
                                                              "verified from the region's store)."),
          event_id: str = typer.Option(None, "--event-id", help="Id column of a path source (default event_id when "
                                                                "present, else the row number)."),
          json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Score every event of SOURCE out of core: Parquet with event_id, energy, anomalous, model, version.

    Partitions run in parallel (on a Dask cluster when orchestration.dask_address is set); a killed run
    resumes where it stopped. Exits 15 when the region has no production version."""
    context.settings()
    from flows.score import score as score_flow

    stop = threading.Event()
    watcher = None if json_out else threading.Thread(target=_watch, args=(out.expanduser().resolve(), stop),
                                                      daemon=True)
    with context.flow_server():
        if watcher:
            watcher.start()
        try:
            res = score_flow(source=source, out=str(out), model=model, region=region, version=version,
                             event_id=event_id)
        finally:
            stop.set()
            if watcher:
                watcher.join()
    if json_out:
        print_json(res)
        return
    print_kv({"model": f"{res['model']} v{res['version']} ({res['why']})", "source": res["source"],
              "partitions": f"{res['partitions']} ({res['scored_now']} scored now, {res['resumed_from']} from an "
                            "earlier run)",
              "events": f"{res['events']:,}", "anomalous": f"{res['anomalous']:,} ({(res['anomalous_rate'] or 0):.3%})",
              "threshold": res["threshold"], "output": res["out"]}, title="batch scoring")
