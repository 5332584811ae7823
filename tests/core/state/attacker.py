"""What an attacker with write access to the state database (and nothing else) can do to the audit log:
plain SQL through the database's own driver (sqlite3, psycopg) and hashlib, no ebmops code.

The hash of a record is public knowledge (the README documents it): sha256 of the canonical JSON of
{seq, created_at, kind, model, version, region, actor, payload, prev_hash}. The MAC needs the audit
key, which the attacker does not have."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import datetime, timezone

COLUMNS = "seq, created_at, kind, model_name, version, region, actor, payload, prev_hash, hash"


class Db:
    """A raw DB-API connection to the state database named by a SQLAlchemy URL."""

    def __init__(self, url: str):
        if url.startswith("sqlite"):
            self.conn, self.mark = sqlite3.connect(url.split("///", 1)[1]), "?"
        else:
            import psycopg

            self.conn, self.mark = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")), "%s"

    def run(self, sql: str, *params):
        cur = self.conn.cursor()
        cur.execute(sql.replace("?", self.mark), params)
        rows = cur.fetchall() if cur.description else None
        self.conn.commit()
        return rows

    def close(self):
        self.conn.close()


def _iso(v) -> str:
    dt = datetime.fromisoformat(v) if isinstance(v, str) else v  # SQLite: text, naive UTC; PostgreSQL: aware
    return (dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)).isoformat()


def _hash(row, prev_hash: str) -> str:
    seq, created_at, kind, model, version, region, actor, payload = row[:8]
    payload = json.loads(payload) if isinstance(payload, str) else payload
    body = {"seq": seq, "created_at": _iso(created_at), "kind": kind, "model": model, "version": version,
            "region": region, "actor": actor, "payload": payload, "prev_hash": prev_hash}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def delete_tail(url: str, n: int = 1) -> None:
    """Cut the newest ``n`` records off the log (the chain of the rest stays intact)."""
    db = Db(url)
    try:
        (last,), = db.run("SELECT max(seq) FROM audit_log")
        db.run("DELETE FROM audit_log WHERE seq > ?", last - n)
    finally:
        db.close()


def rewrite(url: str, seq: int, *, actor: str = "mallory", strip_macs: bool = False) -> None:
    """Change record ``seq``'s actor and recompute its hash and every later record's prev_hash and hash,
    so the chain verifies again; ``strip_macs`` also sets every MAC to NULL (to pass as legacy records)."""
    db = Db(url)
    try:
        db.run("UPDATE audit_log SET actor = ? WHERE seq = ?", actor, seq)
        rows = db.run(f"SELECT {COLUMNS} FROM audit_log WHERE seq >= ? ORDER BY seq", seq)
        (prev,), = db.run("SELECT hash FROM audit_log WHERE seq = ?", seq - 1) or [("0" * 64,)]
        for row in rows:
            h = _hash(row, prev)
            db.run("UPDATE audit_log SET prev_hash = ?, hash = ? WHERE seq = ?", prev, h, row[0])
            prev = h
        if strip_macs:
            db.run("UPDATE audit_log SET mac = NULL, mac_key_id = NULL")
    finally:
        db.close()
