"""StateStore: typed operations over the SQL state, one short transaction each."""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ebmops.errors import EbmopsError
from ebmops.state.models import Base, GateReportRow, QuarantineRow, SyncRecordRow, TrainingRunRow


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _aware(dt: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything stored is UTC.
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt


@dataclass
class TrainingRunRecord:
    id: str
    created_at: datetime
    dataset: str
    status: str
    finished_at: datetime | None = None
    data_fingerprint: str | None = None
    device: str | None = None
    seconds: float | None = None
    metrics: dict = field(default_factory=dict)
    mlflow_run_id: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    message: str | None = None

    @classmethod
    def from_row(cls, r: TrainingRunRow) -> "TrainingRunRecord":
        return cls(id=r.id, created_at=_aware(r.created_at), finished_at=_aware(r.finished_at), dataset=r.dataset,
                   status=r.status, data_fingerprint=r.data_fingerprint, device=r.device, seconds=r.seconds,
                   metrics=dict(r.metrics or {}), mlflow_run_id=r.mlflow_run_id, model_name=r.model_name,
                   model_version=r.model_version, message=r.message)


@dataclass
class QuarantineRecord:
    id: int
    created_at: datetime
    dataset: str
    region: str | None
    n_rows: int
    path: str
    failures: list

    @classmethod
    def from_row(cls, r: QuarantineRow) -> "QuarantineRecord":
        return cls(id=r.id, created_at=_aware(r.created_at), dataset=r.dataset, region=r.region, n_rows=r.n_rows,
                   path=r.path, failures=list(r.failures or []))


class StateStoreError(EbmopsError):
    pass


class StateStore:
    """The state store over one SQLAlchemy engine. Tables are created on first open."""

    def __init__(self, url: str):
        self.url = url
        kwargs: dict = {"future": True}
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            @event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn, _rec):  # WAL lets the node and the flows read while one writes
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()
        try:
            Base.metadata.create_all(self.engine)
        except SQLAlchemyError as e:
            raise StateStoreError(f"cannot open the state store at {self.safe_url}: {e.__class__.__name__}: "
                                  f"{str(e).splitlines()[0]}; check state_url") from e
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as s:
            yield s

    def close(self) -> None:
        self.engine.dispose()

    # ---- training runs -----------------------------------------------------------------
    def start_training_run(self, dataset: str, *, run_id: str | None = None,
                           data_fingerprint: str | None = None) -> TrainingRunRecord:
        row = TrainingRunRow(id=run_id or uuid.uuid4().hex, created_at=utcnow(), dataset=dataset, status="running",
                             data_fingerprint=data_fingerprint, metrics={})
        with self.session() as s:
            s.add(row)
            s.flush()
            return TrainingRunRecord.from_row(row)

    def finish_training_run(self, run_id: str, *, status: str, **fields) -> TrainingRunRecord:
        allowed = {"device", "seconds", "metrics", "mlflow_run_id", "model_name", "model_version", "message",
                   "data_fingerprint"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown training run fields {sorted(unknown)}")
        with self.session() as s:
            row = s.get(TrainingRunRow, run_id)
            if row is None:
                raise StateStoreError(f"no training run {run_id} in the state store")
            row.status = status
            row.finished_at = utcnow()
            for k, v in fields.items():
                setattr(row, k, v)
            s.flush()
            return TrainingRunRecord.from_row(row)

    def get_training_run(self, run_id: str) -> TrainingRunRecord | None:
        with self.session() as s:
            row = s.get(TrainingRunRow, run_id)
            return TrainingRunRecord.from_row(row) if row else None

    def list_training_runs(self, limit: int = 20) -> list[TrainingRunRecord]:
        with self.session() as s:
            rows = s.scalars(select(TrainingRunRow).order_by(TrainingRunRow.created_at.desc()).limit(limit)).all()
            return [TrainingRunRecord.from_row(r) for r in rows]

    # ---- quarantine ----------------------------------------------------------------------
    def record_quarantine(self, *, dataset: str, region: str | None, n_rows: int, path: str,
                          failures: list[dict]) -> QuarantineRecord:
        row = QuarantineRow(created_at=utcnow(), dataset=dataset, region=region, n_rows=n_rows, path=path,
                            failures=failures)
        with self.session() as s:
            s.add(row)
            s.flush()
            return QuarantineRecord.from_row(row)

    def list_quarantine(self, limit: int = 50) -> list[QuarantineRecord]:
        with self.session() as s:
            rows = s.scalars(select(QuarantineRow).order_by(QuarantineRow.id.desc()).limit(limit)).all()
            return [QuarantineRecord.from_row(r) for r in rows]

    # ---- model syncs to regions -----------------------------------------------------------
    def record_sync(self, *, sync_id: str, model_name: str, version: str, region: str, status: str, seconds: float,
                    bytes_uploaded: int = 0, blobs_uploaded: int = 0, blobs_skipped: int = 0,
                    generation: int | None = None, message: str | None = None) -> "SyncRecord":
        """Record one region's outcome of a sync (``status`` 'ok' or 'failed')."""
        if status not in SYNC_STATUSES:
            raise ValueError(f"sync status must be one of {sorted(SYNC_STATUSES)}, got {status!r}")
        if seconds < 0 or min(bytes_uploaded, blobs_uploaded, blobs_skipped) < 0:
            raise ValueError("sync seconds, bytes and blob counts cannot be negative")
        row = SyncRecordRow(sync_id=sync_id, created_at=utcnow(), model_name=model_name, version=version, region=region,
                            status=status, seconds=float(seconds), bytes_uploaded=int(bytes_uploaded),
                            blobs_uploaded=int(blobs_uploaded), blobs_skipped=int(blobs_skipped),
                            generation=generation, message=message)
        with self.session() as s:
            s.add(row)
            s.flush()
            return SyncRecord.from_row(row)

    def list_syncs(self, *, model_name: str | None = None, version: str | None = None, region: str | None = None,
                   sync_id: str | None = None, limit: int = 50) -> list["SyncRecord"]:
        """Sync records, newest first, optionally filtered."""
        q = select(SyncRecordRow)
        for col, val in ((SyncRecordRow.model_name, model_name), (SyncRecordRow.version, version),
                         (SyncRecordRow.region, region), (SyncRecordRow.sync_id, sync_id)):
            if val is not None:
                q = q.where(col == val)
        with self.session() as s:
            rows = s.scalars(q.order_by(SyncRecordRow.id.desc()).limit(limit)).all()
            return [SyncRecord.from_row(r) for r in rows]


    # ---- gate reports ------------------------------------------------------------------
    def record_gate_report(self, *, model_name: str, version: str, verdict: str, champion_version: str | None,
                           report: dict) -> "GateReportRecord":
        row = GateReportRow(created_at=utcnow(), model_name=model_name, version=str(version), verdict=verdict,
                            champion_version=champion_version, report=report)
        with self.session() as s:
            s.add(row)
            s.flush()
            return GateReportRecord.from_row(row)

    def list_gate_reports(self, *, model_name: str | None = None, version: str | None = None,
                          limit: int = 50) -> list["GateReportRecord"]:
        q = select(GateReportRow).order_by(GateReportRow.id.desc()).limit(limit)
        if model_name is not None:
            q = q.where(GateReportRow.model_name == model_name)
        if version is not None:
            q = q.where(GateReportRow.version == str(version))
        with self.session() as s:
            return [GateReportRecord.from_row(r) for r in s.scalars(q).all()]


def open_store(settings) -> StateStore:
    return StateStore(settings.resolved_state_url)


SYNC_STATUSES = {"ok", "failed"}


@dataclass
class SyncRecord:
    """One region's outcome of publishing a model version (see registry/publish.py)."""

    id: int
    sync_id: str
    created_at: datetime
    model_name: str
    version: str
    region: str
    status: str
    seconds: float
    bytes_uploaded: int
    blobs_uploaded: int
    blobs_skipped: int
    generation: int | None = None
    message: str | None = None

    @classmethod
    def from_row(cls, r: SyncRecordRow) -> "SyncRecord":
        return cls(id=r.id, sync_id=r.sync_id, created_at=_aware(r.created_at), model_name=r.model_name,
                   version=r.version, region=r.region, status=r.status, seconds=r.seconds,
                   bytes_uploaded=r.bytes_uploaded, blobs_uploaded=r.blobs_uploaded, blobs_skipped=r.blobs_skipped,
                   generation=r.generation, message=r.message)


@dataclass
class GateReportRecord:
    id: int
    created_at: datetime
    model_name: str
    version: str
    verdict: str
    champion_version: str | None
    report: dict

    @classmethod
    def from_row(cls, r: GateReportRow) -> "GateReportRecord":
        return cls(id=r.id, created_at=_aware(r.created_at), model_name=r.model_name, version=r.version,
                   verdict=r.verdict, champion_version=r.champion_version, report=dict(r.report or {}))
