"""ORM tables. Add a table per concept; keep JSON columns for open-ended payloads."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class TrainingRunRow(Base):
    __tablename__ = "training_runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    dataset: Mapped[str] = mapped_column(String(200))
    data_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(32), index=True)
    device: Mapped[str | None] = mapped_column(String(32), nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    model_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)


class QuarantineRow(Base):
    __tablename__ = "quarantined_batches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    dataset: Mapped[str] = mapped_column(String(200))
    region: Mapped[str | None] = mapped_column(String(64), nullable=True)
    n_rows: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    failures: Mapped[list] = mapped_column(JSON, default=list)


class SyncRecordRow(Base):
    """One region's part of one model sync: how long it took and what it moved."""

    __tablename__ = "sync_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sync_id: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    model_name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[str] = mapped_column(String(128))
    region: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))
    seconds: Mapped[float] = mapped_column(Float)
    bytes_uploaded: Mapped[int] = mapped_column(BigInteger, default=0)
    blobs_uploaded: Mapped[int] = mapped_column(Integer, default=0)
    blobs_skipped: Mapped[int] = mapped_column(Integer, default=0)
    generation: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)


class GateReportRow(Base):
    """One gate verdict on one model version, with the whole report as JSON."""

    __tablename__ = "gate_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    model_name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[str] = mapped_column(String(128), index=True)
    verdict: Mapped[str] = mapped_column(String(16))
    champion_version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    report: Mapped[dict] = mapped_column(JSON, default=dict)


class RolloutRow(Base):
    """One canary rollout of a model version across regions (canary/). ``active_model`` holds the model
    name while the rollout is not terminal and NULL after: its unique constraint lets the database
    itself refuse a second active rollout of one model (NULLs never collide, on SQLite or PostgreSQL)."""

    __tablename__ = "rollouts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16), default="standard")
    stable_before: Mapped[dict] = mapped_column(JSON, default=dict)
    phase: Mapped[str] = mapped_column(String(32), index=True)
    plan: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(200))
    active_model: Mapped[str | None] = mapped_column(String(200), nullable=True, unique=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)


class RolloutRegionRow(Base):
    """One region's progress inside a rollout."""

    __tablename__ = "rollout_regions"
    __table_args__ = (UniqueConstraint("rollout_id", "region", name="uq_rollout_region"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rollout_id: Mapped[str] = mapped_column(String(64), ForeignKey("rollouts.id"), index=True)
    region: Mapped[str] = mapped_column(String(64))
    wave: Mapped[int] = mapped_column(Integer)
    phase: Mapped[str] = mapped_column(String(32))
    step_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    weight: Mapped[float] = mapped_column(Float, default=0.0)
    last_analysis: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    failed_checks: Mapped[list] = mapped_column(JSON, default=list)
    stable_version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    canary_version: Mapped[str] = mapped_column(String(128))
    awaiting_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    approval_deadline: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    message: Mapped[str | None] = mapped_column(Text, nullable=True)


class RolloutLeaseRow(Base):
    """Which process drives a rollout (ebmops/core/state/lease.py): one row per rollout, kept after release
    so that ``token`` (the fencing token) only grows, by one on every acquisition."""

    __tablename__ = "rollout_leases"

    rollout_id: Mapped[str] = mapped_column(String(64), ForeignKey("rollouts.id"), primary_key=True)
    token: Mapped[int] = mapped_column(BigInteger)
    holder: Mapped[str] = mapped_column(String(200))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    renewed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DecisionRow(Base):
    """A decision on a rollout (approve, reject, timeout, rollback, auto), accepted or refused."""

    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rollout_id: Mapped[str] = mapped_column(String(64), ForeignKey("rollouts.id"), index=True)
    region: Mapped[str | None] = mapped_column(String(64), nullable=True)
    wave: Mapped[int | None] = mapped_column(Integer, nullable=True)
    kind: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    analysis: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    accepted: Mapped[bool] = mapped_column(Boolean, default=True)
    refusal_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class AuditLogRow(Base):
    """One record of the tamper-evident audit log (ebmops/core/state/audit.py): a sha256 hash chain over ``seq``,
    each record MACed with the audit key (audit_key.py), which the database does not hold. ``mac`` is NULL on
    records written before MACs existed (or by a process without a key)."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    kind: Mapped[str] = mapped_column(String(32), index=True)
    model_name: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    region: Mapped[str | None] = mapped_column(String(64), nullable=True)
    actor: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    mac: Mapped[str | None] = mapped_column(String(64), nullable=True)
    mac_key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)


class DriftObservationRow(Base):
    """One Δ of one version's live energies in one region against its reference."""

    __tablename__ = "drift_observations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    model_name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[str] = mapped_column(String(128), index=True)
    region: Mapped[str] = mapped_column(String(64), index=True)
    delta: Mapped[float | None] = mapped_column(Float, nullable=True)
    level: Mapped[str] = mapped_column(String(16))
    reference_kind: Mapped[str] = mapped_column(String(32))
    reference_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    n_events: Mapped[int] = mapped_column(Integer, default=0)
    quantiles: Mapped[list] = mapped_column(JSON, default=list)


class HotfixRow(Base):
    """A hotfix of one model in one region; ``active_key`` is unique while it runs (one at a time)."""

    __tablename__ = "hotfixes"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    model_name: Mapped[str] = mapped_column(String(200), index=True)
    region: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[str] = mapped_column(String(128))
    delta: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), index=True)
    mode: Mapped[str | None] = mapped_column(String(16), nullable=True)
    new_version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    timeline: Mapped[list] = mapped_column(JSON, default=list)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    active_key: Mapped[str | None] = mapped_column(String(300), nullable=True, unique=True)


# Columns added to existing tables after their first release: StateStore adds each one that an existing
# database lacks (create_all creates missing tables only). (table, column, SQL type), all nullable.
ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("audit_log", "mac", "VARCHAR(64)"),
    ("audit_log", "mac_key_id", "VARCHAR(16)"),
)
