"""A tamper-evident audit log: who did what to which model, in a sha256 hash chain of MACed records.

Every record carries ``seq`` (1, 2, 3, ... with no gaps), ``prev_hash`` (the previous record's
hash; 64 zeros for the first) and

    body = canonical JSON of {seq, created_at, kind, model, version, region, actor, payload, prev_hash}
    hash = sha256(body)
    mac  = HMAC-SHA256(audit key, "record\n" + body), with mac_key_id naming the key

where canonical JSON is sorted keys, no whitespace, UTF-8, and ``created_at`` is the UTC ISO-8601
time. The audit key (audit_key.py) is derived from the control plane's signing secret, which the
database does not hold. ``verify`` recomputes the chain from the first record and names the first
record that breaks it:

* *edited*     the record's fields no longer hash to its stored hash;
* *deleted*    a ``seq`` is missing (the chain jumps from n-1 to n+1), or a record's ``prev_hash``
               is not the hash of the record before it;
* *reordered*  a record's ``prev_hash`` names a record that now sits *after* it (e.g. two records
               whose ``seq`` were swapped);
* *rewritten*  the record hashes and chains, but its MAC does not match: someone changed it and
               recomputed the hashes (anyone with write access to the database can; only the key
               holder can make a MAC);
* *unauthenticated* a record without a MAC after one with a MAC (inserted, or its MAC removed).

Records written before MACs existed (or by a process without a key) have no MAC: as long as they
are the *beginning* of the log they are counted (``n_legacy``) and reported, not failed; they are
protected only by the chain and by checkpoints.

What the records alone cannot show is that records were cut off the *end*. For that a signed
checkpoint (seq, head hash, time; audit_checkpoint.py) is written outside the database, to every
region's object store, on each promotion and hourly; ``verify`` given the newest checkpoint names
a log that no longer reaches its seq ("records after seq N are missing") or holds another record
there ("record N was rewritten").

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

from ebmops.core.jsonsafe import encode_json
from ebmops.core.state.audit_key import RECORD, AuditKey, warn_unkeyed
from ebmops.core.state.audit_checkpoint import Checkpoint
from ebmops.core.state.models import AuditLogRow


class StateStore(Protocol):
    """What the audit log needs of the state store (ebmops.core.state.store.StateStore)."""

    engine: Any
    audit_key: AuditKey | None

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
    mac: str | None = None
    mac_key_id: str | None = None

    @classmethod
    def from_row(cls, r: AuditLogRow) -> "AuditRecord":
        return cls(seq=int(r.seq), created_at=_utc(r.created_at), kind=r.kind, model=r.model_name, version=r.version,
                   region=r.region, actor=r.actor, payload=dict(r.payload or {}), prev_hash=r.prev_hash, hash=r.hash,
                   mac=r.mac, mac_key_id=r.mac_key_id)

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
    last_seq: int | None = None
    n_legacy: int = 0              # records at the start of the log without a MAC (before MACs, or no key)
    macs_checked: bool = False     # False: no key was given, MACs were not checked
    key_id: str | None = None      # the audit key that checked them
    dev_key: bool = False          # that key is the public development key: MACs prove nothing
    checkpoint: dict | None = None  # the checkpoint the log was checked against (None: none given)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _utc(dt: datetime) -> datetime:
    # SQLite hands back naive datetimes (stored as UTC); PostgreSQL hands back the session's zone.
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def record_body(*, seq: int, created_at: datetime, kind: str, model: str | None, version: str | None,
                region: str | None, actor: str, payload: dict, prev_hash: str) -> bytes:
    """The bytes a record's hash and MAC cover."""
    body = {"seq": int(seq), "created_at": _utc(created_at).isoformat(), "kind": kind, "model": model,
            "version": version, "region": region, "actor": actor, "payload": payload, "prev_hash": prev_hash}
    return canonical_json(body).encode("utf-8")


def record_hash(**fields: Any) -> str:
    return hashlib.sha256(record_body(**fields)).hexdigest()


def _row_body(r: AuditLogRow) -> bytes:
    return record_body(seq=r.seq, created_at=r.created_at, kind=r.kind, model=r.model_name, version=r.version,
                       region=r.region, actor=r.actor, payload=r.payload if r.payload is not None else {},
                       prev_hash=r.prev_hash)


def append(store: "StateStore", kind: str, *, model: str | None = None, version: str | None = None,
           region: str | None = None, actor: str, payload: dict | None = None) -> AuditRecord:
    """Append one record to the chain, MACed with ``store.audit_key``, and return it. ``payload`` must be
    JSON-able (non-finite floats are stored as "inf"/"-inf"/"nan")."""
    if kind not in AUDIT_KINDS:
        raise ValueError(f"audit kind must be one of {sorted(AUDIT_KINDS)}, got {kind!r}")
    if not actor:
        raise ValueError("an audit record needs an actor (a person, or the flow that acted)")
    body = encode_json(dict(payload or {}))
    version = None if version is None else str(version)
    key = getattr(store, "audit_key", None)
    if key is None:
        warn_unkeyed()
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
                signed = record_body(seq=seq, created_at=now, kind=kind, model=model, version=version,
                                     region=region, actor=actor, payload=body, prev_hash=prev)
                h = hashlib.sha256(signed).hexdigest()
                mac = key.mac(RECORD, signed) if key is not None else None
                key_id = key.key_id if key is not None else None
                row = AuditLogRow(seq=seq, created_at=now, kind=kind, model_name=model, version=version,
                                  region=region, actor=actor, payload=body, prev_hash=prev, hash=h, mac=mac,
                                  mac_key_id=key_id)
                s.add(row)
                s.flush()
            return AuditRecord(seq=seq, created_at=now, kind=kind, model=model, version=version, region=region,
                               actor=actor, payload=body, prev_hash=prev, hash=h, mac=mac, mac_key_id=key_id)
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


_STORE_KEY = object()


def verify(store: "StateStore", *, key: AuditKey | None | object = _STORE_KEY, checkpoint: Checkpoint | None = None,
           batch: int = 5000) -> AuditVerification:
    """Recompute the whole chain and every MAC; name the first record that was edited, deleted, reordered or
    rewritten; then check the log against ``checkpoint`` (the newest one found outside the database).

    Args:
        key: the audit key that checks MACs (default ``store.audit_key``); None: MACs are not checked.
        checkpoint: a checkpoint whose MAC was already checked (audit_checkpoint.py); None: not checked.
    """
    key = getattr(store, "audit_key", None) if key is _STORE_KEY else key
    summary = dict(macs_checked=key is not None, key_id=getattr(key, "key_id", None),
                   dev_key=bool(getattr(key, "dev", False)),
                   checkpoint=checkpoint.to_dict() if checkpoint is not None else None)
    with store.session() as s:
        def position(h: str) -> int | None:  # where the record with this hash sits now (diagnosis only)
            q = s.execute(select(AuditLogRow.seq).where(AuditLogRow.hash == h)).scalar()
            return int(q) if q is not None else None

        n = int(s.execute(select(func.count()).select_from(AuditLogRow)).scalar() or 0)

        def broken(seq: int, problem: str) -> AuditVerification:
            return AuditVerification(False, n, seq, problem, n_legacy=n_legacy, **summary)

        expected_seq, prev = 1, GENESIS_HASH
        n_legacy, first_mac_seq = 0, None
        hash_at_checkpoint = None
        after: int | None = None
        while True:
            q = select(AuditLogRow).order_by(AuditLogRow.seq).limit(batch)
            rows = s.scalars(q if after is None else q.where(AuditLogRow.seq > after)).all()
            if not rows:
                break
            for r in rows:
                seq = int(r.seq)
                if seq < expected_seq:  # only a seq below 1 can come first; appends start at 1
                    return broken(seq, f"inserted: record {seq} is outside the chain, which starts at seq 1")
                if seq != expected_seq:
                    missing = (f"record {expected_seq} is missing" if seq == expected_seq + 1
                               else f"records {expected_seq}-{seq - 1} are missing")
                    where = (f"the log starts at seq {seq}" if expected_seq == 1
                             else f"seq jumps from {expected_seq - 1} to {seq}")
                    return broken(expected_seq, f"deleted: {missing} ({where})")
                body = _row_body(r)
                if hashlib.sha256(body).hexdigest() != r.hash:
                    claimed_prev_at = position(r.prev_hash)
                    if claimed_prev_at is not None and claimed_prev_at >= seq:
                        return broken(seq, _reordered(seq, claimed_prev_at))
                    return broken(seq, f"edited: record {seq} ({r.kind} by {r.actor}) no longer matches its hash "
                                       "(a field or its seq was changed)")
                if r.prev_hash != prev:
                    claimed_prev_at = position(r.prev_hash)
                    if claimed_prev_at is not None and claimed_prev_at >= seq:
                        return broken(seq, _reordered(seq, claimed_prev_at))
                    return broken(seq, f"deleted: record {seq} does not follow record {seq - 1} (its prev_hash is "
                                       f"not record {seq - 1}'s hash): the record before it was removed or replaced")
                problem = _mac_problem(r, body, key, first_mac_seq)
                if problem:
                    return broken(seq, problem)
                if r.mac is None:
                    n_legacy += 1
                elif first_mac_seq is None:
                    first_mac_seq = seq
                if checkpoint is not None and seq == checkpoint.seq:
                    hash_at_checkpoint = r.hash
                prev = r.hash
                expected_seq = seq + 1
            after = int(rows[-1].seq)
            s.expunge_all()
    last_seq = expected_seq - 1
    if checkpoint is not None:
        problem = _checkpoint_problem(checkpoint, last_seq, hash_at_checkpoint, n_legacy)
        if problem:
            bad, text_ = problem
            return AuditVerification(False, n, bad, text_, prev if n else None, last_seq or None, n_legacy, **summary)
    return AuditVerification(True, n, None, None, prev if n else None, last_seq or None, n_legacy, **summary)


def _mac_problem(r: AuditLogRow, body: bytes, key: AuditKey | None, first_mac_seq: int | None) -> str | None:
    seq = int(r.seq)
    if r.mac is None:
        if first_mac_seq is not None:
            return (f"unauthenticated: record {seq} ({r.kind} by {r.actor}) has no MAC, but record {first_mac_seq} "
                    "before it has one: a database writer inserted it or removed its MAC")
        return None
    if key is None:
        return None
    if r.mac_key_id != key.key_id:
        return (f"wrong key: record {seq} names audit key {r.mac_key_id}, but this process holds key {key.key_id}: "
                "verify with the signing key that wrote the log (key rotated?), or the record was forged")
    if not key.check(RECORD, body, r.mac):
        return (f"rewritten: record {seq} ({r.kind} by {r.actor}) does not match its MAC: it (or the record before "
                "it) was changed and the hashes recomputed by someone without the audit key")
    return None


def _checkpoint_problem(cp: Checkpoint, last_seq: int, hash_at: str | None, n_legacy: int) -> tuple[int, str] | None:
    """What the log, intact record by record, contradicts in the newest checkpoint."""
    seen = f"the checkpoint of {cp.time} ({cp.where}) holds seq {cp.seq}"
    if last_seq < cp.seq:
        return last_seq + 1, (f"truncated: records after seq {last_seq} are missing ({seen}); they were deleted "
                              "from the database")
    if hash_at != cp.head_hash:
        return cp.seq, (f"rewritten: record {cp.seq} was rewritten: its hash is not the one {seen} recorded "
                        "(it or a record before it was changed and the chain recomputed)")
    # MACs are in force from the checkpoint on: its legacy prefix is the log's for good (records after a MACed
    # one already fail without a MAC; this also covers a checkpoint of a log that was all legacy then)
    if n_legacy > cp.legacy:
        return cp.legacy + 1, (f"unauthenticated: records {cp.legacy + 1}-{n_legacy} have no MAC, but {seen} "
                               f"and only {cp.legacy} records without one: a database writer removed their MACs "
                               "(or a process without the signing key wrote them)")
    return None


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

    def verify(self, checkpoint: Checkpoint | None = None) -> AuditVerification:
        return verify(self.store, checkpoint=checkpoint)

    def list(self, model: str | None = None, limit: int = 50, *, kind: str | None = None) -> list[AuditRecord]:
        return list_entries(self.store, model=model, kind=kind, limit=limit)
