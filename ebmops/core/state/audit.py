"""A tamper-evident audit log: who did what to which model, in a sha256 hash chain.

Every record carries ``seq`` (1, 2, 3, ... with no gaps), ``prev_hash`` (the previous record's
hash; 64 zeros for the first) and

    hash = sha256(canonical JSON of {seq, created_at, kind, model, version, region, actor, payload, prev_hash})

where canonical JSON is sorted keys, no whitespace, UTF-8, and ``created_at`` is the UTC ISO-8601
time. ``verify`` recomputes the chain from the first record and names the first record that breaks
it:

* *edited*     the record's fields no longer hash to its stored hash;
* *deleted*    a ``seq`` is missing (the chain jumps from n-1 to n+1), or a record's ``prev_hash``
               is not the hash of the record before it;
* *reordered*  a record's ``prev_hash`` names a record that now sits *after* it (e.g. two records
               whose ``seq`` were swapped).

What the chain cannot show alone: that records were cut off the *end*, or that the whole log was
rewritten with fresh hashes by someone who can write to the database. ``AuditVerification.last_hash``
is the anchor for both: copy it somewhere the database's writers cannot change (a ticket, a signed
desired state, another system's log) and compare it later.

Appends are serialised: one transaction reads the last record and inserts the next. On PostgreSQL it
first takes a transaction-scoped advisory lock, so concurrent appenders queue; on any backend a
collision on ``seq`` (the primary key) is retried with the new last record.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, ContextManager, Protocol

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from ebmops.core.state.models import AuditLogRow
from ebmops.core.jsonsafe import encode_json



class StateStore(Protocol):
    """What the audit log needs of the state store (ebmops.core.state.store.StateStore)."""

    engine: Any

    def session(self) -> ContextManager: ...

GENESIS_HASH = "0" * 64
AUDIT_KINDS = frozenset({"registration", "gate", "sync", "rollout_step", "analysis", "approval", "rejection",
                         "promotion", "rollback", "drift_breach", "hotfix", "refusal"})
_PG_LOCK_KEY = 0x0EB30A0D17  # pg_advisory_xact_lock key of audit appends
_RETRIES = 20


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    created_at: datetime
    kind: str
    model: str | None
    version: str | None
    region: str | None
    actor: str
    payload: dict
    prev_hash: str
    hash: str

    @classmethod
    def from_row(cls, r: AuditLogRow) -> "AuditRecord":
        return cls(seq=int(r.seq), created_at=_utc(r.created_at), kind=r.kind, model=r.model_name, version=r.version,
                   region=r.region, actor=r.actor, payload=dict(r.payload or {}), prev_hash=r.prev_hash, hash=r.hash)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["created_at"] = self.created_at.isoformat()
        return d


@dataclass(frozen=True)
class AuditVerification:
    ok: bool
    n_records: int
    first_bad_seq: int | None = None
    problem: str | None = None
    last_hash: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _utc(dt: datetime) -> datetime:
    # SQLite hands back naive datetimes (stored as UTC); PostgreSQL hands back the session's zone.
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def record_hash(*, seq: int, created_at: datetime, kind: str, model: str | None, version: str | None,
                region: str | None, actor: str, payload: dict, prev_hash: str) -> str:
    body = {"seq": int(seq), "created_at": _utc(created_at).isoformat(), "kind": kind, "model": model,
            "version": version, "region": region, "actor": actor, "payload": payload, "prev_hash": prev_hash}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def _row_hash(r: AuditLogRow) -> str:
    return record_hash(seq=r.seq, created_at=r.created_at, kind=r.kind, model=r.model_name, version=r.version,
                       region=r.region, actor=r.actor, payload=r.payload if r.payload is not None else {},
                       prev_hash=r.prev_hash)


def append(store: "StateStore", kind: str, *, model: str | None = None, version: str | None = None,
           region: str | None = None, actor: str, payload: dict | None = None) -> AuditRecord:
    """Append one record to the chain and return it. ``payload`` must be JSON-able (non-finite floats
    are stored as "inf"/"-inf"/"nan")."""
    if kind not in AUDIT_KINDS:
        raise ValueError(f"audit kind must be one of {sorted(AUDIT_KINDS)}, got {kind!r}")
    if not actor:
        raise ValueError("an audit record needs an actor (a person, or the flow that acted)")
    body = encode_json(dict(payload or {}))
    version = None if version is None else str(version)
    is_pg = store.engine.dialect.name == "postgresql"
    last_error: Exception | None = None
    for attempt in range(_RETRIES):
        try:
            with store.session() as s:
                if is_pg:
                    s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
                last = s.execute(select(AuditLogRow.seq, AuditLogRow.hash)
                                 .order_by(AuditLogRow.seq.desc()).limit(1)).first()
                seq = int(last.seq) + 1 if last else 1
                prev = last.hash if last else GENESIS_HASH
                now = datetime.now(timezone.utc)
                h = record_hash(seq=seq, created_at=now, kind=kind, model=model, version=version, region=region,
                                actor=actor, payload=body, prev_hash=prev)
                row = AuditLogRow(seq=seq, created_at=now, kind=kind, model_name=model, version=version,
                                  region=region, actor=actor, payload=body, prev_hash=prev, hash=h)
                s.add(row)
                s.flush()
            return AuditRecord(seq=seq, created_at=now, kind=kind, model=model, version=version, region=region,
                               actor=actor, payload=body, prev_hash=prev, hash=h)
        except IntegrityError as e:  # another appender took this seq first: read the new last record
            last_error = e
        except OperationalError as e:  # SQLite: the database was locked by another writer
            if "locked" not in str(e).lower() and "busy" not in str(e).lower():
                raise
            last_error = e
        time.sleep(min(0.005 * (attempt + 1), 0.1))
    raise RuntimeError(f"could not append to the audit log after {_RETRIES} attempts: {last_error}")


def list_entries(store: "StateStore", *, model: str | None = None, kind: str | None = None,
                 limit: int = 50) -> list[AuditRecord]:
    """The newest ``limit`` records, newest first, optionally of one model and/or kind."""
    q = select(AuditLogRow)
    if model is not None:
        q = q.where(AuditLogRow.model_name == model)
    if kind is not None:
        q = q.where(AuditLogRow.kind == kind)
    with store.session() as s:
        return [AuditRecord.from_row(r) for r in s.scalars(q.order_by(AuditLogRow.seq.desc()).limit(limit)).all()]


def verify(store: "StateStore", *, batch: int = 5000) -> AuditVerification:
    """Recompute the whole chain; name the first record that was edited, deleted or reordered."""
    with store.session() as s:
        def position(h: str) -> int | None:  # where the record with this hash sits now (diagnosis only)
            q = s.execute(select(AuditLogRow.seq).where(AuditLogRow.hash == h)).scalar()
            return int(q) if q is not None else None

        n = int(s.execute(select(func.count()).select_from(AuditLogRow)).scalar() or 0)
        expected_seq, prev = 1, GENESIS_HASH
        after: int | None = None
        while True:
            q = select(AuditLogRow).order_by(AuditLogRow.seq).limit(batch)
            rows = s.scalars(q if after is None else q.where(AuditLogRow.seq > after)).all()
            if not rows:
                break
            for r in rows:
                seq = int(r.seq)
                if seq < expected_seq:  # only a seq below 1 can come first; appends start at 1
                    return AuditVerification(False, n, seq, f"inserted: record {seq} is outside the chain, which "
                                                            "starts at seq 1")
                if seq != expected_seq:
                    missing = (f"record {expected_seq} is missing" if seq == expected_seq + 1
                               else f"records {expected_seq}-{seq - 1} are missing")
                    where = (f"the log starts at seq {seq}" if expected_seq == 1
                             else f"seq jumps from {expected_seq - 1} to {seq}")
                    return AuditVerification(False, n, expected_seq, f"deleted: {missing} ({where})")
                if _row_hash(r) != r.hash:
                    claimed_prev_at = position(r.prev_hash)
                    if claimed_prev_at is not None and claimed_prev_at >= seq:
                        return AuditVerification(False, n, seq, _reordered(seq, claimed_prev_at))
                    return AuditVerification(False, n, seq,
                                             f"edited: record {seq} ({r.kind} by {r.actor}) no longer matches its hash "
                                             "(a field or its seq was changed)")
                if r.prev_hash != prev:
                    claimed_prev_at = position(r.prev_hash)
                    if claimed_prev_at is not None and claimed_prev_at >= seq:
                        return AuditVerification(False, n, seq, _reordered(seq, claimed_prev_at))
                    return AuditVerification(False, n, seq,
                                             f"deleted: record {seq} does not follow record {seq - 1} (its "
                                             f"prev_hash is not record {seq - 1}'s hash): the record before it was "
                                             "removed or replaced")
                prev = r.hash
                expected_seq = seq + 1
            after = int(rows[-1].seq)
            s.expunge_all()
    return AuditVerification(True, n, None, None, prev if n else None)


def _reordered(seq: int, claimed_at: int) -> str:
    return (f"reordered: record {seq} claims to follow the record now at seq {claimed_at}, which comes at or after it "
            "(records were swapped or moved)")


class AuditLog:
    """The audit log of one state store: ``AuditLog(store).append(...)``, ``.verify()``, ``.list()``."""

    kinds = AUDIT_KINDS

    def __init__(self, store: "StateStore"):
        self.store = store

    def append(self, kind: str, model: str | None = None, version: str | None = None, region: str | None = None,
               actor: str = "ebmops", payload: dict | None = None) -> AuditRecord:
        return append(self.store, kind, model=model, version=version, region=region, actor=actor, payload=payload)

    def verify(self) -> AuditVerification:
        return verify(self.store)

    def list(self, model: str | None = None, limit: int = 50, *, kind: str | None = None) -> list[AuditRecord]:
        return list_entries(self.store, model=model, kind=kind, limit=limit)
