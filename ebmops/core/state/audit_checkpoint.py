"""Audit checkpoints: the head of the audit log, MACed and kept outside the database.

A database writer can cut the newest records off the audit log without breaking its chain. A
checkpoint records how far the log reached and what it held there:

    {"type": "ebmops-audit-checkpoint", "seq": N, "head_hash": <hash of record N>, "time": <UTC ISO-8601>,
     "legacy": <records at the start without a MAC>, "key_id": <audit key id>, "mac": <HMAC of the rest>}

The MAC (audit_key.py, context ``checkpoint``) covers the canonical JSON of every other field, so a
checkpoint cannot be forged or moved forward without the control plane's key. The services write it
to every region's object store (``audit/checkpoint.json``, the newest, plus ``audit/checkpoints/<seq>.json``
as history), on each promotion and hourly (ebmops/services/audit.py). ``verify`` takes the newest valid
one: a log that no longer reaches its seq was truncated; one with another hash there was rewritten.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from ebmops.core.state.audit_key import CHECKPOINT, AuditKey

TYPE = "ebmops-audit-checkpoint"
LATEST_KEY = "audit/checkpoint.json"
HISTORY_PREFIX = "audit/checkpoints/"


def history_key(seq: int) -> str:
    """The history object of the checkpoint at ``seq`` (zero-padded: the newest sorts last)."""
    return f"{HISTORY_PREFIX}{int(seq):012d}.json"


class CheckpointInvalid(ValueError):
    """A checkpoint document that is malformed, or whose MAC does not match (forged or altered)."""


class CheckpointOtherKey(CheckpointInvalid):
    """A checkpoint made with another audit key (before a key rotation): it can be neither trusted nor refuted."""


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    head_hash: str
    time: str
    key_id: str
    legacy: int = 0
    where: str = ""  # where it was read (region and object key), for messages

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _canonical(body: dict) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def make_document(*, seq: int, head_hash: str, legacy: int, key: AuditKey, now: datetime | None = None) -> dict:
    """A MACed checkpoint of the log's head (record ``seq`` with hash ``head_hash``)."""
    body = {"type": TYPE, "seq": int(seq), "head_hash": head_hash, "legacy": int(legacy), "key_id": key.key_id,
            "time": (now or datetime.now(timezone.utc)).astimezone(timezone.utc).isoformat()}
    return {**body, "mac": key.mac(CHECKPOINT, _canonical(body))}


def encode(doc: dict) -> bytes:
    return json.dumps(doc, indent=1, sort_keys=True).encode("utf-8")


def read_document(data: bytes, key: AuditKey, *, where: str) -> Checkpoint:
    """The checkpoint in ``data`` after checking its MAC with ``key``.

    Raises:
        CheckpointInvalid: not a checkpoint, made with another key, or its MAC does not match.
    """
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise CheckpointInvalid(f"{where} is not JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("type") != TYPE:
        raise CheckpointInvalid(f"{where} is not an audit checkpoint (type {TYPE!r})")
    body = {k: v for k, v in doc.items() if k != "mac"}
    fields = {"seq": int, "head_hash": str, "legacy": int, "key_id": str, "time": str}
    bad = [f for f, t in fields.items() if not isinstance(body.get(f), t) or isinstance(body.get(f), bool)]
    if bad:
        raise CheckpointInvalid(f"{where}: fields {bad} are missing or of the wrong type")
    if body["key_id"] != key.key_id:
        raise CheckpointOtherKey(f"{where} was made with audit key {body['key_id']}, but this process holds key "
                                f"{key.key_id} (key rotated?)")
    if not key.check(CHECKPOINT, _canonical(body), doc.get("mac")):
        raise CheckpointInvalid(f"{where} does not match its MAC: it was forged or altered")
    return Checkpoint(seq=body["seq"], head_hash=body["head_hash"], time=body["time"], key_id=body["key_id"],
                      legacy=body["legacy"], where=where)
