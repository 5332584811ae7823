"""Batch scoring: a stored source scored out of core with one verified model version, resumable.

Which version: ``--version V`` names one; otherwise the region's production version, the stable
version of the region's signed desired state (what its nodes serve). Either way the bundle is
fetched from the region's store and verified exactly as a node does it
(:func:`serving.model.load_verified`), never taken from the registry unverified.

How: the source is opened as a stream (:mod:`ebmops.core.data.stream`); each **partition** is one
task that reads it in bounded record batches, scores them (:mod:`serving.batch`) and writes
``part-NNNNN.parquet`` (event_id, energy, anomalous, model, version). Memory per task is one
record batch plus one TorchScript call, whatever the size of the source.

Resume: the output folder holds ``_scores.json`` (source fingerprint, model, version, threshold,
partitions) and, per finished partition, ``_done/part-NNNNN.json``. A partition's file is written
under ``_tmp/`` and renamed into place, then its record is written (also by rename), so a killed
run leaves either a finished partition or nothing that counts: a rerun scores exactly the
partitions without a record, and, reading the same rows in the same batches, writes the same
bytes a run without the kill would have. A folder made for another source, model or version is
refused (``ScoreOutputConflict``) rather than mixed.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ebmops.core.errors import ConfigError, DatasetError, NoProductionVersion, ScoreError, ScoreOutputConflict
from ebmops.core.settings import Settings

SCORES_TYPE = "ebmops.scores/1"
MANIFEST = "_scores.json"
DONE_DIR = "_done"
TMP_DIR = "_tmp"
# Dictionary pages only for the two constant columns: trying them on unique ids and energies tripled the
# write time (0.64 s against 0.18 s per million rows here) for larger files.
WRITE_OPTIONS = {"use_dictionary": ["model", "version"], "compression": "snappy"}


@dataclass(frozen=True)
class ModelChoice:
    """The version to score with and where it came from."""

    model: str
    version: str
    region: str   # whose store the bundle is fetched from
    why: str      # "production of us-east (desired state generation 4)" | "named with --version"


@dataclass
class ScoreJob:
    """Everything a partition task needs (picklable: tasks may run on Dask workers)."""

    settings: Settings
    source: object            # ebmops.core.data.stream.StreamSource
    choice: ModelChoice
    threshold: float
    out: str
    pending: list[int] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.source.partitions)


def default_out(settings: Settings, source: str) -> str:
    """``<home>/scores/<source name>``: where a run without --out (a deployment) writes."""
    name = Path(source.rstrip("/")).name.replace("*", "_") or "source"
    return str(settings.home / "scores" / name)


def part_name(index: int) -> str:
    return f"part-{index:05d}"


# ---- the version ---------------------------------------------------------------------------


def choose_version(settings: Settings, model: str | None, region: str | None, version: str | None) -> ModelChoice:
    """The named version, else the production (stable) version of ``region`` (default: the first region).
    ``model`` None (a path source, no ``--model``): the configured default model when the configuration
    names one, else the one model the region's store has a desired state for; several: ModelAmbiguous."""
    from registry.desired_state import read_desired
    from registry.objectstore.factory import store_for_region
    from registry.signing import signing_key
    from serving.node import check_region

    region = region or settings.data.regions[0]
    check_region(settings, region)
    store = store_for_region(settings, region)
    if model is None:
        model = _default_model(settings, store, region)
    if version:
        return ModelChoice(model, str(version).removeprefix("v"), region, "named with --version")
    desired = read_desired(store, model, signing_key(settings, verify_only=True))
    if desired is None:
        raise NoProductionVersion(f"region {region} has no desired state for model {model}: no version was synced "
                                  f"there; sync one (`ebmops sync --region {region}`) or pass --version")
    return ModelChoice(model, desired.stable_version, region,
                       f"production of {region} (desired state generation {desired.generation})")


def _default_model(settings: Settings, store, region: str) -> str:
    from ebmops.core.errors import ModelAmbiguous
    from ebmops.services.models import default_named
    from registry.desired_state import desired_models

    if default_named(settings):
        return str(settings.registry.model_name)
    served = desired_models(store)
    if len(served) > 1:
        raise ModelAmbiguous(f"--model: region {region} serves several models ({', '.join(served)}) and the "
                             "source is a path, not a dataset of one of them; name one with --model")
    return served[0] if served else str(settings.registry.model_name)


def load_model(settings: Settings, choice: ModelChoice):
    """The verified model (cached in this process): fetched from the region store as a node fetches it."""
    from registry.objectstore.factory import store_for_region
    from registry.signing import signing_key
    from serving.batch import cached_model

    return cached_model(store_for_region(settings, choice.region), choice.model, choice.version,
                        signing_key(settings, verify_only=True), settings.home / "scoring" / choice.region,
                        settings.blob_cache_dir)


# ---- the source ----------------------------------------------------------------------------


def open_scoring_source(settings: Settings, source: str, features: tuple[str, ...], event_id: str | None):
    """``source``: a dataset name (kdd99 or data.sources) or a path (file, directory, glob) read with the
    model's features; ``event_id`` names the id column of a path (default: ``event_id`` when present)."""
    from ebmops.core.data.stream import open_path, open_source

    if source == "kdd99" or source in settings.data.sources:
        src = open_source(source, settings)
        if tuple(src.schema.features) != tuple(features):
            raise ConfigError(f"SOURCE: dataset '{source}' declares features {list(src.schema.features)[:6]}... "
                              f"but the model scores {list(features)[:6]}... ({len(features)} in this order); "
                              "declare the model's features under data.sources or pass a path")
        return src
    from ebmops.core.data.stream import budget

    if not source.startswith("s3://"):
        source = str(Path(source).expanduser().absolute())  # the output folder names it the same from any cwd
    rows = budget(settings, len(features)).batch_rows
    common = dict(name="score-source", features=list(features), regions=list(settings.data.regions), batch_rows=rows)
    try:
        return open_path(source, event_id=event_id or "event_id", **common)
    except DatasetError as e:
        if event_id or "'event_id'" not in str(e):
            raise
    return open_path(source, **common)  # no id column: ids are global row numbers


# ---- planning ------------------------------------------------------------------------------


def plan(settings: Settings, source: str, out: str | Path, *, model: str | None = None, region: str | None = None,
         version: str | None = None, event_id: str | None = None) -> ScoreJob:
    """Choose and verify the version, open the source, and claim (or resume) the output folder. A dataset
    source is scored by its own model (``ebm-<dataset>`` or the source's ``model``) unless ``model`` is named."""
    if model is None and not Path(source).suffix and "/" not in source and "*" not in source:
        from ebmops.core.models import model_of

        model = model_of(settings, source)
    choice = choose_version(settings, model, region, version)
    loaded = load_model(settings, choice)
    src = open_scoring_source(settings, source, tuple(loaded.features), event_id)
    out = Path(out).expanduser().resolve()
    identity = {"type": SCORES_TYPE, "source": src.uri, "fingerprint": src.fingerprint(), "model": choice.model,
                "version": choice.version, "threshold": loaded.threshold, "features": list(loaded.features),
                "partitions": [p.path for p in src.partitions]}
    _claim(out, identity)
    finished = [i for i in range(len(src.partitions)) if is_finished(out, i)]
    pending = [i for i in range(len(src.partitions)) if i not in set(finished)]
    return ScoreJob(settings=settings, source=src, choice=choice, threshold=loaded.threshold, out=str(out),
                    pending=pending, finished=finished)


def _claim(out: Path, identity: dict) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; name a folder (it will hold one Parquet file per partition)")
    path = out / MANIFEST
    if path.is_file():
        try:
            had = json.loads(path.read_text())
        except ValueError as e:
            raise ScoreOutputConflict(f"--out {out}: {MANIFEST} is unreadable ({e}); choose another folder") from e
        for k, v in identity.items():
            if had.get(k) != v:
                raise ScoreOutputConflict(f"--out {out} holds scores of another run: {k} was {str(had.get(k))[:120]!r}, "
                                          f"now {str(v)[:120]!r}; choose another folder or remove it")
    else:
        if out.is_dir() and any(p.name.startswith("part-") for p in out.iterdir()):
            raise ScoreOutputConflict(f"--out {out} holds part files but no {MANIFEST}; choose another folder")
        out.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, json.dumps({**identity, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                                       indent=2).encode())
    (out / DONE_DIR).mkdir(exist_ok=True)
    shutil.rmtree(out / TMP_DIR, ignore_errors=True)  # what a killed run left half written never counts
    (out / TMP_DIR).mkdir(exist_ok=True)


def is_finished(out: Path, index: int) -> bool:
    return (Path(out) / DONE_DIR / f"{part_name(index)}.json").is_file() and \
        (Path(out) / f"{part_name(index)}.parquet").is_file()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---- one partition -------------------------------------------------------------------------


def score_partition(job: ScoreJob, index: int) -> dict:
    """Score partition ``index`` into ``part-NNNNN.parquet`` (atomically) and record it; returns the record.
    A partition already recorded is not scored again."""
    import pyarrow.parquet as pq

    out = Path(job.out)
    name = part_name(index)
    done = out / DONE_DIR / f"{name}.json"
    if is_finished(out, index):
        return {**json.loads(done.read_text()), "skipped": True}
    s = job.settings
    if s.score.torch_threads > 0:
        import torch

        torch.set_num_threads(s.score.torch_threads)
    from serving.batch import output_schema, score_rows

    model = load_model(s, job.choice)
    t0 = time.monotonic()
    tmp = out / TMP_DIR / f"{name}.{uuid.uuid4().hex}.parquet"
    writer, rows, anomalous, esum = None, 0, 0, 0.0
    part = job.source.partitions[index]
    try:
        for batch in read_ahead(job.source.iter_batches(partitions=[index], regions=False)):  # output has no region
            table = score_rows(model, batch.event_id, batch.x, s.score.call_rows, batch.cats)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, **WRITE_OPTIONS)
            writer.write_table(table)
            rows += table.num_rows
            e = table.column("energy").to_numpy()
            anomalous += int(table.column("anomalous").to_numpy(zero_copy_only=False).sum())
            esum += float(e.sum(dtype=np.float64))
        if writer is None:  # an empty partition still gets its (empty) file
            import pyarrow as pa

            writer = pq.ParquetWriter(tmp, output_schema(pa.int64()), **WRITE_OPTIONS)
        writer.close()
        writer = None
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out / f"{name}.parquet")
    except (OSError, ValueError, RuntimeError) as e:
        raise ScoreError(f"partition {index} ({part.path}): {type(e).__name__}: {e}") from e
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    record = {"partition": index, "source": part.path, "file": f"{name}.parquet", "events": rows,
              "anomalous": anomalous, "energy_mean": esum / rows if rows else None,
              "seconds": round(time.monotonic() - t0, 3), "host": socket.gethostname(), "pid": os.getpid()}
    _write_atomic(done, json.dumps(record).encode())
    return record


def read_ahead(batches: Iterator, depth: int = 1) -> Iterator:
    """``batches``, read by a thread up to ``depth`` batches ahead of the consumer: Parquet decoding and
    TorchScript both release the GIL, so reading the next batch overlaps scoring this one (measured: the
    read took longer than the scoring). Holds at most ``depth`` + 1 batches; a reader error is re-raised here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def pump() -> None:
        try:
            for item in batches:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(end)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put(e)

    t = threading.Thread(target=pump, name="score-read-ahead", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        t.join()


def progress(job: ScoreJob) -> tuple[int, int]:
    """(finished partitions, all partitions) as the output folder shows them now."""
    return sum(1 for i in range(job.total) if is_finished(Path(job.out), i)), job.total


# ---- the end -------------------------------------------------------------------------------


def summary(job: ScoreJob, results: list[dict] | None = None) -> dict:
    """Totals over every finished partition (this run's and earlier runs')."""
    out = Path(job.out)
    records = [json.loads((out / DONE_DIR / f"{part_name(i)}.json").read_text())
               for i in range(job.total) if is_finished(out, i)]
    missing = [i for i in range(job.total) if not is_finished(out, i)]
    if missing:
        raise ScoreError(f"partitions {missing[:10]} of {job.total} were not scored; run the command again to "
                         "score what is missing")
    events = sum(r["events"] for r in records)
    anomalous = sum(r["anomalous"] for r in records)
    ran = [r for r in (results or []) if not r.get("skipped")]
    return {"out": str(out), "model": job.choice.model, "version": job.choice.version, "why": job.choice.why,
            "region": job.choice.region, "threshold": job.threshold, "source": job.source.uri,
            "partitions": job.total, "scored_now": len(ran), "resumed_from": len(job.finished),
            "events": events, "anomalous": anomalous, "anomalous_rate": anomalous / events if events else None,
            "seconds_scoring": round(sum(r["seconds"] for r in ran), 3)}

