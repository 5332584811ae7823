"""One driver per rollout: a lease with an expiry and a fencing token.

Two processes driving the same rollout would each judge every step and each record a decision. So a
driver first takes the rollout's lease (one row of ``rollout_leases``), keeps it while it drives and
gives it back at the end:

* ``acquire`` is one conditional statement: an UPDATE of the row when its lease has expired (or was
  released), else, the first time, an INSERT, of which the primary key lets one of two racing inserts
  win. Each acquisition adds one to ``token``, the fencing token; the row is never deleted, so tokens
  only grow.
* Every write a driver makes carries its ``Lease``; the store runs ``fence`` first, in the same
  transaction: ``UPDATE rollout_leases SET expires_at = ... WHERE rollout_id = :id AND token = :mine``.
  That statement locks the lease row (PostgreSQL) or takes the database's write lock (SQLite) until the
  write commits, so a write and a take-over are ordered: the write commits before another driver
  acquires, or it is refused (``LeaseLost``) and changes nothing. A process paused past its expiry (a
  stopped VM, a debugger, SIGSTOP) cannot write once another driver took the rollout over. Each fenced
  write also renews the lease.
* Writes outside the database (a region's desired state, MLflow aliases) cannot join that transaction:
  the driver renews its lease right before each (``renew``), which leaves it the rollout for a whole
  ``ttl_s`` after the check.
* ``hold`` is what a driver runs in: it waits up to ``wait_s`` for the lease (then ``RolloutLeaseHeld``
  names the holder's host and pid and when its lease expires), renews it from a thread every third of
  ``ttl_s`` and releases it at the end. A driver killed with SIGKILL releases nothing: its lease expires
  ``ttl_s`` after its last renewal and the next driver takes over at once; that is how a rollout resumes.

Expiry compares times taken by the processes that drive: hosts that drive rollouts must keep their clocks
within a small fraction of ``ttl_s`` of each other (NTP does).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, ContextManager, Iterator, Protocol

from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from ebmops.core.errors import EbmopsError, LeaseLost, RolloutLeaseHeld
from ebmops.core.state.models import RolloutLeaseRow, RolloutRow

log = logging.getLogger(__name__)

_LOCK_TIMEOUT_MS = 2000


class StateStore(Protocol):
    """What the lease needs of the state store (ebmops.core.state.store.StateStore)."""

    engine: Any

    def session(self) -> ContextManager: ...


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _aware(dt: datetime) -> datetime:
    # SQLite hands back naive datetimes (stored as UTC); PostgreSQL the session's zone.
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


@dataclass(frozen=True)
class Lease:
    """A driver's hold on one rollout; ``token`` is its fencing token."""

    rollout_id: str
    token: int
    holder: str
    host: str
    pid: int
    ttl_s: float
    expires_at: datetime


@dataclass(frozen=True)
class LeaseRecord:
    """A rollout's lease row as stored (``expires_at`` in the past: free)."""

    rollout_id: str
    token: int
    holder: str
    host: str
    pid: int
    acquired_at: datetime
    renewed_at: datetime
    expires_at: datetime

    @classmethod
    def from_row(cls, r: RolloutLeaseRow) -> "LeaseRecord":
        return cls(rollout_id=r.rollout_id, token=int(r.token), holder=r.holder, host=r.host, pid=int(r.pid),
                   acquired_at=_aware(r.acquired_at), renewed_at=_aware(r.renewed_at),
                   expires_at=_aware(r.expires_at))

    def held_at(self, now: datetime) -> bool:
        return self.expires_at > now


def identity() -> tuple[str, str, int]:
    """(holder id, host, pid) of this process; the holder id is unique per acquisition."""
    host, pid = socket.gethostname(), os.getpid()
    return f"{host}:{pid}:{uuid.uuid4().hex[:8]}", host, pid


def _held_message(rollout_id: str, rec: LeaseRecord) -> str:
    return (f"rollout {rollout_id} is driven by another process: {rec.host} pid {rec.pid} holds its lease "
            f"(token {rec.token}) until {rec.expires_at:%Y-%m-%d %H:%M:%S} UTC and renews it while it runs")


def _held(rollout_id: str, rec: LeaseRecord, message: str | None = None, cls=RolloutLeaseHeld):
    return cls(message or _held_message(rollout_id, rec), rollout_id=rollout_id, host=rec.host, pid=rec.pid,
               expires_at=rec.expires_at, token=rec.token)


def acquire(store: StateStore, rollout_id: str, *, ttl_s: float, now: datetime | None = None,
            who: tuple[str, str, int] | None = None) -> Lease:
    """Take the rollout's lease when it is free (never taken, released, or expired); else raise
    ``RolloutLeaseHeld`` naming the holder. The token is one more than the last acquisition's."""
    if ttl_s <= 0:
        raise ValueError(f"ttl_s must be positive, got {ttl_s!r}")
    holder, host, pid = who or identity()
    for _ in range(5):  # a lease that expires between the two statements is tried again
        t = now or _utcnow()
        values = dict(holder=holder, host=host, pid=pid, acquired_at=t, renewed_at=t,
                      expires_at=t + timedelta(seconds=ttl_s))
        try:
            with store.session() as s:
                if store.engine.dialect.name == "postgresql":
                    # the holder's renewal may hold the row (or be frozen holding it): report it as held, and
                    # let the caller wait, instead of blocking here without end
                    s.execute(text(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT_MS}ms'"))
                res = s.execute(update(RolloutLeaseRow)
                                .where(RolloutLeaseRow.rollout_id == rollout_id, RolloutLeaseRow.expires_at <= t)
                                .values(token=RolloutLeaseRow.token + 1, **values)
                                .execution_options(synchronize_session=False))
                if res.rowcount == 1:
                    token = s.execute(select(RolloutLeaseRow.token)
                                      .where(RolloutLeaseRow.rollout_id == rollout_id)).scalar_one()
                    return Lease(rollout_id, int(token), holder, host, pid, float(ttl_s), values["expires_at"])
        except OperationalError as e:  # a lock timeout (PostgreSQL) or a busy database (SQLite): held now
            rec = current(store, rollout_id)
            if rec is None:
                raise
            log.info("the lease of rollout %s is being written by its holder (%s); counting it as held", rollout_id,
                     str(e).splitlines()[0])
            raise _held(rollout_id, rec) from None
        try:
            with store.session() as s:
                if s.get(RolloutRow, rollout_id) is None:
                    raise EbmopsError(f"no rollout {rollout_id} in the state store; list them with "
                                      "`ebmops rollout status`")
                s.add(RolloutLeaseRow(rollout_id=rollout_id, token=1, **values))
                s.flush()
            return Lease(rollout_id, 1, holder, host, pid, float(ttl_s), values["expires_at"])
        except IntegrityError:  # the row exists: someone holds it (or inserted it just now)
            pass
        rec = current(store, rollout_id)
        if rec is not None and rec.held_at(now or _utcnow()):
            raise _held(rollout_id, rec)
    raise _held(rollout_id, rec) if rec is not None else EbmopsError(f"cannot take the lease of rollout {rollout_id}")


def fence(session, lease: Lease, *, now: datetime | None = None) -> None:
    """Inside a store transaction: refuse it (``LeaseLost``) unless ``lease`` is still the rollout's
    current one; renew it when it is. Run it before the transaction's own writes."""
    t = now or _utcnow()
    res = session.execute(update(RolloutLeaseRow)
                          .where(RolloutLeaseRow.rollout_id == lease.rollout_id, RolloutLeaseRow.token == lease.token)
                          .values(renewed_at=t, expires_at=t + timedelta(seconds=lease.ttl_s))
                          .execution_options(synchronize_session=False))
    if res.rowcount == 1:
        return
    row = session.get(RolloutLeaseRow, lease.rollout_id)
    if row is None:
        raise LeaseLost(f"rollout {lease.rollout_id} has no lease row: the write of pid {lease.pid} was refused",
                        rollout_id=lease.rollout_id)
    rec = LeaseRecord.from_row(row)
    raise _held(lease.rollout_id, rec, cls=LeaseLost, message=(
        f"pid {lease.pid} on {lease.host} lost its lease on rollout {lease.rollout_id} (token {lease.token}): "
        f"{rec.host} pid {rec.pid} took it over (token {rec.token}, held until {rec.expires_at:%H:%M:%S} UTC); "
        "the write was refused and nothing changed"))


def renew(store: StateStore, lease: Lease, *, now: datetime | None = None) -> Lease:
    """Extend the lease by ``ttl_s`` from now; ``LeaseLost`` when another driver took it over."""
    t = now or _utcnow()
    with store.session() as s:
        fence(s, lease, now=t)
    return Lease(lease.rollout_id, lease.token, lease.holder, lease.host, lease.pid, lease.ttl_s,
                 t + timedelta(seconds=lease.ttl_s))


def release(store: StateStore, lease: Lease, *, now: datetime | None = None) -> bool:
    """Give the lease back (it expires now; the token stays); False when it was no longer ours."""
    t = now or _utcnow()
    with store.session() as s:
        res = s.execute(update(RolloutLeaseRow)
                        .where(RolloutLeaseRow.rollout_id == lease.rollout_id, RolloutLeaseRow.token == lease.token)
                        .values(expires_at=t).execution_options(synchronize_session=False))
        return res.rowcount == 1


def current(store: StateStore, rollout_id: str) -> LeaseRecord | None:
    """The rollout's lease row, held or not; None when no driver ever took it."""
    with store.session() as s:
        row = s.get(RolloutLeaseRow, rollout_id)
        return LeaseRecord.from_row(row) if row is not None else None


class FencedStore:
    """The store as seen by code that opens its own sessions (the audit log): every session is fenced."""

    def __init__(self, store: StateStore, lease: Lease):
        self._store, self._lease = store, lease

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    @contextmanager
    def session(self) -> Iterator[Any]:
        with self._store.session() as s:
            fence(s, self._lease)
            yield s


class Renewer:
    """Renews a lease from a daemon thread every ``interval_s``; stops when told or when the lease is lost."""

    def __init__(self, store: StateStore, lease: Lease, interval_s: float):
        self.store, self.lease, self.interval_s = store, lease, interval_s
        self.lost: LeaseLost | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"lease-{lease.rollout_id[:8]}")

    def start(self) -> "Renewer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=max(5.0, self.interval_s))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.lease = renew(self.store, self.lease)
            except LeaseLost as e:
                self.lost = e
                log.warning("%s", e)
                return
            except Exception as e:  # noqa: BLE001 - a database hiccup: the next renewal may work; fenced writes decide
                log.warning("could not renew the lease of rollout %s: %s: %s", self.lease.rollout_id,
                            type(e).__name__, e)


@contextmanager
def hold(store: StateStore, rollout_id: str, *, ttl_s: float, wait_s: float,
         progress: Callable[[str], None] | None = None, clock: Callable[[], datetime] = _utcnow,
         sleep: Callable[[float], None] = time.sleep, poll_s: float = 0.5) -> Iterator[Lease]:
    """Drive ``rollout_id`` under its lease: wait up to ``wait_s`` for it (``RolloutLeaseHeld`` after,
    naming the holder), renew it every ``ttl_s / 3`` while the block runs, release it at the end."""
    start, told = clock(), False
    while True:
        try:
            lease = acquire(store, rollout_id, ttl_s=ttl_s, now=clock())
            break
        except RolloutLeaseHeld as e:
            waited = (clock() - start).total_seconds()
            if waited >= wait_s:
                raise RolloutLeaseHeld(f"{e}; waited {wait_s:g} s for it (rollout.lease_wait_s)",
                                       rollout_id=rollout_id, host=e.host, pid=e.pid, expires_at=e.expires_at,
                                       token=e.token) from None
            if not told and progress is not None:
                progress(f"{e}; waiting up to {wait_s:g} s for it to be released or to expire")
                told = True
            sleep(max(0.01, min(poll_s, wait_s - waited)))
    if progress is not None:
        progress(f"rollout {rollout_id[:8]}: driven by {lease.host} pid {lease.pid} (lease token {lease.token})")
    renewer = Renewer(store, lease, ttl_s / 3).start()
    try:
        yield lease
    finally:
        renewer.stop()
        try:
            release(store, lease)
        except Exception as e:  # noqa: BLE001 - unreleased, the lease simply expires after ttl_s
            log.warning("could not release the lease of rollout %s (it expires by itself): %s", rollout_id, e)
