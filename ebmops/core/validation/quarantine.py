"""Moving a failed batch aside, whole or not at all.

A quarantined batch is a folder ``<quarantine_dir>/<UTC timestamp>-<dataset>-<region>/``:

* ``batch.parquet``: the batch exactly as it arrived (index included). A batch that
  Parquet cannot hold (e.g. a column mixing strings and numbers) is kept as
  ``batch.pkl`` (pandas pickle) instead, and ``summary.md`` says so;
* ``validation.json``: the full :class:`ValidationResult`, with dataset, region and time;
* ``summary.md``: what a person reads first: dataset, region, rows, one line per failure.

Everything is written into a hidden temp folder next to the target and renamed into place
last, so a crash leaves either a complete quarantine or none (at most a ``.tmp-*`` folder,
which nothing reads). Nothing in ebmops reads a quarantined batch back: to release one,
fix or accept it and feed it in again; to discard it, delete the folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from ebmops.core.validation.suite import ValidationResult

BATCH_FILE = "batch.parquet"
FALLBACK_BATCH_FILE = "batch.pkl"
RESULT_FILE = "validation.json"
SUMMARY_FILE = "summary.md"


def _slug(text: str | None) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text or "all")).strip("_") or "all"


def quarantine_batch(frame: pd.DataFrame, result: ValidationResult, *, quarantine_dir: Path, dataset: str,
                     region: str | None, sample_of: str | None = None) -> Path:
    """Write the batch and its verdict into a new quarantine folder; return the folder.

    ``sample_of`` names the streamed source when ``frame`` is only its seeded sample (a source
    too large to copy): the summary says so, and the source stays where it is."""
    quarantine_dir = Path(quarantine_dir)
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.now(timezone.utc)
    tmp = Path(tempfile.mkdtemp(dir=quarantine_dir, prefix=".tmp-"))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; people inspect quarantines
        batch_file = _write_batch(frame, tmp)
        record = {"dataset": dataset, "region": region, "quarantined_at": now.isoformat(),
                  "batch_file": batch_file, "sample_of": sample_of, **result.to_dict()}
        (tmp / RESULT_FILE).write_text(json.dumps(record, indent=2, allow_nan=False, default=str))
        (tmp / SUMMARY_FILE).write_text(summary_markdown(result, dataset=dataset, region=region, when=now,
                                                         batch_file=batch_file, sample_of=sample_of,
                                                         sample_rows=len(frame)))
        return _rename_into_place(tmp, quarantine_dir, f"{now:%Y%m%dT%H%M%S%fZ}-{_slug(dataset)}-{_slug(region)}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_batch(frame: pd.DataFrame, folder: Path) -> str:
    try:
        frame.to_parquet(folder / BATCH_FILE)
        return BATCH_FILE
    except (ValueError, TypeError, NotImplementedError):  # pyarrow refuses mixed-type columns, odd names
        (folder / BATCH_FILE).unlink(missing_ok=True)
        frame.to_pickle(folder / FALLBACK_BATCH_FILE)
        return FALLBACK_BATCH_FILE


def _rename_into_place(tmp: Path, parent: Path, name: str) -> Path:
    for attempt in range(100):
        target = parent / (name if attempt == 0 else f"{name}-{attempt}")
        try:
            os.rename(tmp, target)  # atomic; fails if a non-empty folder of that name exists
            return target
        except OSError:
            if not target.exists():
                raise
    raise FileExistsError(f"could not find a free quarantine folder name for {parent / name}")


def summary_markdown(result: ValidationResult, *, dataset: str, region: str | None, when: datetime,
                     batch_file: str = BATCH_FILE, sample_of: str | None = None, sample_rows: int = 0) -> str:
    lines = [f"# Quarantined batch: {dataset} / {region or 'all regions'}", "",
             f"- dataset: {dataset}", f"- region: {region or 'all regions'}", f"- rows: {result.n_rows}",
             f"- quarantined at: {when.isoformat(timespec='seconds')}",
             f"- validated in: {result.seconds:.3f} s", f"- batch: `{batch_file}`"
             + (" (Parquet could not hold this batch; load it with pandas.read_pickle)"
                if batch_file != BATCH_FILE else ""),
             ]
    if sample_of:
        lines.append(f"- streamed source `{sample_of}`: `{batch_file}` holds a seeded sample of {sample_rows:,} of "
                     f"its {result.n_rows:,} rows in this region; the counts below are exact")
    lines += ["", f"## Failed expectations ({len(result.failures)})", ""]
    lines += [f"- {f['message']}" for f in result.failures]
    lines += ["", "## What next", "",
              f"Details are in `{RESULT_FILE}`. Nothing reads this folder back. To release the batch, fix the",
              "source (or, when the data is right and the reference is outdated, delete the dataset's reference",
              "profile to re-baseline) and feed the data in again; then delete or move this folder.", ""]
    return "\n".join(lines)
