"""StateStore: typed operations over the SQL state, one short transaction each."""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from sqlalchemy import create_engine, event, inspect, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ebmops.core.errors import EbmopsError, HotfixConflict, RolloutConflict
from ebmops.core.phases import Phase, TransitionRefused, check_transition, is_terminal
from ebmops.core.state import lease as leases
from ebmops.core.state.audit_key import AuditKey, audit_key_from_settings
from ebmops.core.state.models import (
    ADDED_COLUMNS,
    Base,
    DriftObservationRow,
    HotfixRow,
    DecisionRow,
    GateReportRow,
    QuarantineRow,
    RolloutRegionRow,
    RolloutRow,
    SyncRecordRow,
    TrainingRunRow,
)


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
    """The state store over one SQLAlchemy engine. Tables are created on first open, and columns added
    since a table's first release are added to an existing database (``ADDED_COLUMNS``).

    ``audit_key`` MACs the audit records this store appends (ebmops/core/state/audit_key.py): a key, a
    function returning one (resolved on first use; ``open_store`` passes the settings' key this way), or
    None (records get no MAC)."""

    def __init__(self, url: str, *, audit_key: AuditKey | Callable[[], AuditKey | None] | None = None):
        self.url = url
        self._audit_key = audit_key
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
            self._add_missing_columns()
        except SQLAlchemyError as e:
            raise StateStoreError(f"cannot open the state store at {self.safe_url}: {e.__class__.__name__}: "
                                  f"{str(e).splitlines()[0]}; check state_url") from e
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def _add_missing_columns(self) -> None:
        """Add each of ``ADDED_COLUMNS`` an existing table lacks; safe when several processes open at once."""
        tables = {t for t, _, _ in ADDED_COLUMNS}
        existing = {t: {c["name"] for c in inspect(self.engine).get_columns(t)} for t in tables}
        pg = self.engine.dialect.name == "postgresql"
        for table, column, sql_type in ADDED_COLUMNS:
            if column in existing[table]:
                continue
            try:
                with self.engine.begin() as c:
                    exists_ok = "IF NOT EXISTS " if pg else ""
                    c.execute(text(f"ALTER TABLE {table} ADD COLUMN {exists_ok}{column} {sql_type}"))
            except (OperationalError, ProgrammingError) as e:  # another process added it first (SQLite)
                if "duplicate column" not in str(e).lower():
                    raise

    @property
    def audit_key(self) -> AuditKey | None:
        """The key that MACs this store's audit records (resolved once), or None."""
        if callable(self._audit_key):
            self._audit_key = self._audit_key()
        return self._audit_key

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


    # ---- canary rollouts ---------------------------------------------------------------------
    def create_rollout(self, *, model_name: str, version: str, plan: dict, stable_before: dict[str, str | None],
                       created_by: str, kind: str = "standard", rollout_id: str | None = None) -> "RolloutRecord":
        """Create a rollout in phase pending, with one pending row per region of ``plan['waves']``.

        Refused with ``RolloutConflict`` (naming the active rollout) while the model has a rollout that
        is not terminal; the unique ``active_model`` column makes the refusal hold under concurrent
        creates on SQLite and PostgreSQL alike."""
        waves = plan.get("waves") if isinstance(plan, dict) else None
        if not waves or not all(waves):
            raise ValueError("plan['waves'] must list at least one non-empty wave of regions")
        now = utcnow()
        rid = rollout_id or uuid.uuid4().hex
        row = RolloutRow(id=rid, model_name=model_name, version=str(version), kind=kind,
                         stable_before=dict(stable_before), phase=Phase.PENDING.value, plan=plan, created_at=now,
                         updated_at=now, created_by=created_by, active_model=model_name)
        regions = [RolloutRegionRow(rollout_id=rid, region=r, wave=w, phase=Phase.PENDING.value, step_index=None,
                                    weight=0.0, failed_checks=[], stable_version=stable_before.get(r),
                                    canary_version=str(version), updated_at=now)
                   for w, wave in enumerate(waves) for r in wave]
        active = self.active_rollout(model_name)
        if active is not None:
            raise _conflict(model_name, active.id)
        try:
            with self.session() as s:
                s.add(row)
                s.flush()  # the rollout row first: region rows reference it
                s.add_all(regions)
                s.flush()
                return RolloutRecord.from_rows(row, regions)
        except IntegrityError as e:  # a concurrent create won between the check and the insert
            active = self.active_rollout(model_name)
            if active is None:  # not the active-rollout constraint (e.g. a reused rollout id)
                raise StateStoreError(f"cannot create rollout {rid} of {model_name}: "
                                      f"{str(e.orig).splitlines()[0]}") from e
            raise _conflict(model_name, active.id) from None

    def get_rollout(self, rollout_id: str) -> "RolloutRecord | None":
        with self.session() as s:
            row = s.get(RolloutRow, rollout_id)
            return self._rollout_record(s, row) if row else None

    def _rollout_record(self, s: Session, row: RolloutRow) -> "RolloutRecord":
        regions = s.scalars(select(RolloutRegionRow).where(RolloutRegionRow.rollout_id == row.id)
                            .order_by(RolloutRegionRow.wave, RolloutRegionRow.id)).all()
        return RolloutRecord.from_rows(row, regions)

    def _require_rollout(self, s: Session, rollout_id: str) -> RolloutRow:
        row = s.get(RolloutRow, rollout_id)
        if row is None:
            raise StateStoreError(f"no rollout {rollout_id} in the state store; list them with the rollouts command")
        return row

    def list_rollouts(self, *, model_name: str | None = None, active: bool | None = None,
                      limit: int = 50) -> list["RolloutRecord"]:
        """Rollouts, newest first; ``active`` True keeps non-terminal ones, False terminal ones."""
        q = select(RolloutRow)
        if model_name is not None:
            q = q.where(RolloutRow.model_name == model_name)
        if active is True:
            q = q.where(RolloutRow.active_model.is_not(None))
        elif active is False:
            q = q.where(RolloutRow.active_model.is_(None))
        with self.session() as s:
            rows = s.scalars(q.order_by(RolloutRow.created_at.desc(), RolloutRow.id.desc()).limit(limit)).all()
            return [self._rollout_record(s, r) for r in rows]

    def active_rollout(self, model_name: str) -> "RolloutRecord | None":
        """The model's rollout that is not terminal yet, if any (at most one exists)."""
        with self.session() as s:
            row = s.scalars(select(RolloutRow).where(RolloutRow.active_model == model_name)).first()
            return self._rollout_record(s, row) if row else None

    def update_rollout_phase(self, rollout_id: str, new: "Phase | str", *, expected_old: "Phase | str | None" = None,
                             message: str | None = None, lease: "leases.Lease | None" = None) -> "RolloutRecord":
        """Move a rollout to ``new``: refused (``TransitionRefused``) when the table does not allow it, or
        when ``expected_old`` is given and the phase is no longer that (a lost update). The change is a
        compare-and-set on the phase read, so two writers racing from one phase cannot both win. With
        ``lease`` (a driver's), refused (``LeaseLost``) unless it is still the rollout's lease."""
        with self.session() as s:
            if lease is not None:
                leases.fence(s, lease)
            row = self._require_rollout(s, rollout_id)
            current = row.phase
            _check_expected("rollout", rollout_id, current, expected_old)
            target = check_transition(current, new, what=f"rollout {rollout_id}")
            values: dict = {"phase": target.value, "updated_at": utcnow()}
            if message is not None:
                values["message"] = message
            if is_terminal(target):
                values["active_model"] = None
            res = s.execute(update(RolloutRow).where(RolloutRow.id == rollout_id, RolloutRow.phase == current)
                            .values(**values).execution_options(synchronize_session=False))
            if res.rowcount != 1:
                raise _lost_update("rollout", rollout_id, current, target)
            s.flush()
            s.refresh(row)
            return self._rollout_record(s, row)

    _REGION_FIELDS = {"step_index", "weight", "last_analysis", "failed_checks", "stable_version", "canary_version",
                      "awaiting_since", "approval_deadline", "message"}

    def update_region(self, rollout_id: str, region: str, *, phase: "Phase | str | None" = None,
                      expected_phase: "Phase | str | None" = None, lease: "leases.Lease | None" = None,
                      **fields) -> "RolloutRegionRecord":
        """Update one region of a rollout. A ``phase`` change is checked against the transition table
        and compare-and-set like ``update_rollout_phase``; ``expected_phase`` guards any update against
        a concurrent writer; ``lease`` fences it like ``update_rollout_phase``. Other fields: step_index,
        weight, last_analysis, failed_checks, stable_version, canary_version, awaiting_since,
        approval_deadline, message."""
        unknown = set(fields) - self._REGION_FIELDS
        if unknown:
            raise ValueError(f"unknown rollout region fields {sorted(unknown)}; fields: {sorted(self._REGION_FIELDS)}")
        if "weight" in fields and fields["weight"] is not None and not 0 <= float(fields["weight"]) <= 1:
            raise ValueError(f"weight must be within [0, 1], got {fields['weight']!r}")
        with self.session() as s:
            if lease is not None:
                leases.fence(s, lease)
            self._require_rollout(s, rollout_id)
            row = s.scalars(select(RolloutRegionRow).where(RolloutRegionRow.rollout_id == rollout_id,
                                                           RolloutRegionRow.region == region)).first()
            if row is None:
                raise StateStoreError(f"rollout {rollout_id} has no region {region!r}")
            current = row.phase
            what = f"region {region} of rollout {rollout_id}"
            _check_expected(what, None, current, expected_phase)
            values = dict(fields, updated_at=utcnow())
            if phase is not None:
                values["phase"] = check_transition(current, phase, what=what).value
            res = s.execute(update(RolloutRegionRow)
                            .where(RolloutRegionRow.id == row.id, RolloutRegionRow.phase == current)
                            .values(**values).execution_options(synchronize_session=False))
            if res.rowcount != 1:
                raise _lost_update(what, None, current, phase or current)
            s.execute(update(RolloutRow).where(RolloutRow.id == rollout_id).values(updated_at=values["updated_at"])
                      .execution_options(synchronize_session=False))
            s.flush()
            s.refresh(row)
            return RolloutRegionRecord.from_row(row)

    def record_decision(self, rollout_id: str, *, kind: str, actor: str, region: str | None = None,
                        wave: int | None = None, comment: str | None = None, analysis: dict | None = None,
                        accepted: bool = True, refusal_reason: str | None = None,
                        lease: "leases.Lease | None" = None) -> "DecisionRecord":
        """Record a decision on a rollout; a refused one (``accepted=False``) must say why. With ``lease``
        (the driver's), refused (``LeaseLost``) unless it is still the rollout's lease."""
        if kind not in DECISION_KINDS:
            raise ValueError(f"decision kind must be one of {sorted(DECISION_KINDS)}, got {kind!r}")
        if not accepted and not refusal_reason:
            raise ValueError("a refused decision needs a refusal_reason")
        row = DecisionRow(rollout_id=rollout_id, region=region, wave=wave, kind=kind, actor=actor,
                          created_at=utcnow(), comment=comment, analysis=analysis, accepted=bool(accepted),
                          refusal_reason=refusal_reason)
        with self.session() as s:
            if lease is not None:
                leases.fence(s, lease)
            self._require_rollout(s, rollout_id)
            s.add(row)
            s.flush()
            return DecisionRecord.from_row(row)

    def list_decisions(self, rollout_id: str | None = None, *, region: str | None = None, kind: str | None = None,
                       limit: int = 100) -> list["DecisionRecord"]:
        """Decisions in the order they were made (oldest first), optionally filtered."""
        q = select(DecisionRow)
        for col, val in ((DecisionRow.rollout_id, rollout_id), (DecisionRow.region, region), (DecisionRow.kind, kind)):
            if val is not None:
                q = q.where(col == val)
        with self.session() as s:
            return [DecisionRecord.from_row(r) for r in s.scalars(q.order_by(DecisionRow.id).limit(limit)).all()]

    # ---- drift observations and hotfixes ---------------------------------------------------------
    def record_drift(self, *, model_name: str, version: str, region: str, delta: float | None, level: str,
                     reference_kind: str, reference_at: datetime | None, n_events: int,
                     quantiles: list[float], created_at: datetime | None = None) -> "DriftObservationRecord":
        row = DriftObservationRow(created_at=created_at or utcnow(), model_name=model_name, version=str(version),
                                  region=region, delta=delta, level=level, reference_kind=reference_kind,
                                  reference_at=reference_at, n_events=int(n_events), quantiles=list(quantiles))
        with self.session() as s:
            s.add(row)
            s.flush()
            return DriftObservationRecord.from_row(row)

    def list_drift(self, *, model_name: str | None = None, version: str | None = None, region: str | None = None,
                   since: datetime | None = None, until: datetime | None = None,
                   limit: int = 200) -> list["DriftObservationRecord"]:
        """Observations, newest first."""
        q = select(DriftObservationRow)
        for col, val in ((DriftObservationRow.model_name, model_name), (DriftObservationRow.version, version),
                         (DriftObservationRow.region, region)):
            if val is not None:
                q = q.where(col == str(val))
        if since is not None:
            q = q.where(DriftObservationRow.created_at >= since)
        if until is not None:
            q = q.where(DriftObservationRow.created_at <= until)
        with self.session() as s:
            rows = s.scalars(q.order_by(DriftObservationRow.created_at.desc(), DriftObservationRow.id.desc())
                             .limit(limit)).all()
            return [DriftObservationRecord.from_row(r) for r in rows]

    def start_hotfix(self, *, model_name: str, region: str, version: str, delta: float,
                     hotfix_id: str | None = None) -> "HotfixRecord":
        """Record a running hotfix; refused (``HotfixConflict``) while one runs for this model and region."""
        key = f"{model_name}|{region}"
        row = HotfixRow(id=hotfix_id or uuid.uuid4().hex, created_at=utcnow(), model_name=model_name, region=region,
                        version=str(version), delta=float(delta), status="running", timeline=[], active_key=key)
        try:
            with self.session() as s:
                s.add(row)
                s.flush()
                return HotfixRecord.from_row(row)
        except IntegrityError:
            running = self.list_hotfixes(model_name=model_name, region=region, status="running", limit=1)
            rid = running[0].id if running else "?"
            raise HotfixConflict(f"a hotfix of {model_name} in {region} is already running ({rid}); one at a time",
                                 active_id=rid) from None

    def update_hotfix(self, hotfix_id: str, *, status: str | None = None, event: str | None = None,
                      **fields) -> "HotfixRecord":
        """Append ``event`` to the timeline (with the time), set fields; a final status frees the slot."""
        with self.session() as s:
            row = s.get(HotfixRow, hotfix_id)
            if row is None:
                raise StateStoreError(f"no hotfix {hotfix_id}")
            if event:
                row.timeline = [*(row.timeline or []), {"at": utcnow().isoformat(), "event": event}]
            for k, v in fields.items():
                if k not in ("mode", "new_version", "message"):
                    raise ValueError(f"unknown hotfix field {k!r}")
                setattr(row, k, v)
            if status is not None:
                row.status = status
                if status != "running":
                    row.active_key = None
                    row.finished_at = utcnow()
            s.flush()
            return HotfixRecord.from_row(row)

    def list_hotfixes(self, *, model_name: str | None = None, region: str | None = None, status: str | None = None,
                      limit: int = 50) -> list["HotfixRecord"]:
        q = select(HotfixRow)
        for col, val in ((HotfixRow.model_name, model_name), (HotfixRow.region, region), (HotfixRow.status, status)):
            if val is not None:
                q = q.where(col == val)
        with self.session() as s:
            return [HotfixRecord.from_row(r) for r in
                    s.scalars(q.order_by(HotfixRow.created_at.desc()).limit(limit)).all()]

    # ---- audit log (see ebmops/core/state/audit.py for the hash chain) --------------------------------------
    def append_audit(self, kind: str, *, model: str | None = None, version: str | None = None,
                     region: str | None = None, actor: str, payload: dict | None = None,
                     lease: "leases.Lease | None" = None):
        """Append to the audit log; with ``lease`` (a driver's) in a transaction fenced by it."""
        from ebmops.core.state.audit import append

        target = self if lease is None else leases.FencedStore(self, lease)
        return append(target, kind, model=model, version=version, region=region, actor=actor, payload=payload)

    # ---- rollout leases (see ebmops/core/state/lease.py: one driver per rollout) ----------------------
    def acquire_lease(self, rollout_id: str, *, ttl_s: float, now: datetime | None = None) -> "leases.Lease":
        """Take the rollout's lease, or raise ``RolloutLeaseHeld`` naming the process that holds it."""
        return leases.acquire(self, rollout_id, ttl_s=ttl_s, now=now)

    def renew_lease(self, lease: "leases.Lease", *, now: datetime | None = None) -> "leases.Lease":
        """Extend the lease; ``LeaseLost`` when another driver took the rollout over."""
        return leases.renew(self, lease, now=now)

    def release_lease(self, lease: "leases.Lease") -> bool:
        return leases.release(self, lease)

    def get_lease(self, rollout_id: str) -> "leases.LeaseRecord | None":
        """The rollout's lease row (held when ``expires_at`` is in the future), None when never taken."""
        return leases.current(self, rollout_id)

    def list_audit(self, *, model: str | None = None, limit: int = 50):
        from ebmops.core.state.audit import list_entries

        return list_entries(self, model=model, limit=limit)


def open_store(settings) -> StateStore:
    """The configured state store; its audit records are MACed with the control plane's audit key."""
    return StateStore(settings.resolved_state_url, audit_key=lambda: audit_key_from_settings(settings))


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


# ---- rollouts ------------------------------------------------------------------------------------

DECISION_KINDS = {"approve", "reject", "timeout", "rollback", "auto"}


def _conflict(model_name: str, active_id: str) -> RolloutConflict:
    return RolloutConflict(f"model {model_name} already has an active rollout {active_id}; wait for it to finish, "
                           f"or abort or roll it back first", model_name=model_name, active_id=active_id)


def _check_expected(what: str, rid: str | None, current: str, expected: "Phase | str | None") -> None:
    if expected is not None and Phase(expected).value != current:
        name = f"{what} {rid}" if rid else what
        raise TransitionRefused(f"{name} is {current}, not {Phase(expected).value} as expected: another writer "
                                "changed it first; re-read it and decide again", old=current, new=None)


def _lost_update(what: str, rid: str | None, current: str, target) -> TransitionRefused:
    name = f"{what} {rid}" if rid else what
    return TransitionRefused(f"{name} left phase {current} before it could move to {Phase(target).value}: another "
                             "writer changed it first; re-read it and decide again", old=current, new=target)


@dataclass(frozen=True)
class RolloutRegionRecord:
    id: int
    rollout_id: str
    region: str
    wave: int
    phase: str
    step_index: int | None
    weight: float
    last_analysis: dict | None
    failed_checks: list
    stable_version: str | None
    canary_version: str
    awaiting_since: datetime | None
    approval_deadline: datetime | None
    updated_at: datetime
    message: str | None = None

    @classmethod
    def from_row(cls, r: RolloutRegionRow) -> "RolloutRegionRecord":
        return cls(id=r.id, rollout_id=r.rollout_id, region=r.region, wave=r.wave, phase=r.phase,
                   step_index=r.step_index, weight=float(r.weight or 0.0),
                   last_analysis=dict(r.last_analysis) if r.last_analysis is not None else None,
                   failed_checks=list(r.failed_checks or []), stable_version=r.stable_version,
                   canary_version=r.canary_version, awaiting_since=_aware(r.awaiting_since),
                   approval_deadline=_aware(r.approval_deadline), updated_at=_aware(r.updated_at), message=r.message)


@dataclass(frozen=True)
class RolloutRecord:
    id: str
    model_name: str
    version: str
    kind: str
    phase: str
    stable_before: dict
    plan: dict
    created_at: datetime
    updated_at: datetime
    created_by: str
    active: bool
    message: str | None = None
    regions: tuple[RolloutRegionRecord, ...] = ()

    @classmethod
    def from_rows(cls, r: RolloutRow, regions) -> "RolloutRecord":
        return cls(id=r.id, model_name=r.model_name, version=r.version, kind=r.kind, phase=r.phase,
                   stable_before=dict(r.stable_before or {}), plan=dict(r.plan or {}), created_at=_aware(r.created_at),
                   updated_at=_aware(r.updated_at), created_by=r.created_by, active=r.active_model is not None,
                   message=r.message, regions=tuple(RolloutRegionRecord.from_row(x) for x in regions))

    def region(self, name: str) -> RolloutRegionRecord:
        for r in self.regions:
            if r.region == name:
                return r
        raise KeyError(f"rollout {self.id} has no region {name!r}")


@dataclass(frozen=True)
class DecisionRecord:
    id: int
    rollout_id: str
    kind: str
    actor: str
    created_at: datetime
    accepted: bool
    region: str | None = None
    wave: int | None = None
    comment: str | None = None
    analysis: dict | None = None
    refusal_reason: str | None = None

    @classmethod
    def from_row(cls, r: DecisionRow) -> "DecisionRecord":
        return cls(id=r.id, rollout_id=r.rollout_id, kind=r.kind, actor=r.actor, created_at=_aware(r.created_at),
                   accepted=bool(r.accepted), region=r.region, wave=r.wave, comment=r.comment,
                   analysis=dict(r.analysis) if r.analysis is not None else None, refusal_reason=r.refusal_reason)


@dataclass(frozen=True)
class DriftObservationRecord:
    id: int
    created_at: datetime
    model_name: str
    version: str
    region: str
    delta: float | None
    level: str
    reference_kind: str
    reference_at: datetime | None
    n_events: int
    quantiles: list

    @classmethod
    def from_row(cls, r: DriftObservationRow) -> "DriftObservationRecord":
        return cls(id=r.id, created_at=_aware(r.created_at), model_name=r.model_name, version=r.version,
                   region=r.region, delta=r.delta, level=r.level, reference_kind=r.reference_kind,
                   reference_at=_aware(r.reference_at) if r.reference_at else None, n_events=r.n_events,
                   quantiles=list(r.quantiles or []))


@dataclass(frozen=True)
class HotfixRecord:
    id: str
    created_at: datetime
    finished_at: datetime | None
    model_name: str
    region: str
    version: str
    delta: float
    status: str
    mode: str | None
    new_version: str | None
    timeline: list
    message: str | None

    @classmethod
    def from_row(cls, r: HotfixRow) -> "HotfixRecord":
        return cls(id=r.id, created_at=_aware(r.created_at), finished_at=_aware(r.finished_at) if r.finished_at else None,
                   model_name=r.model_name, region=r.region, version=r.version, delta=r.delta, status=r.status,
                   mode=r.mode, new_version=r.new_version, timeline=list(r.timeline or []), message=r.message)
