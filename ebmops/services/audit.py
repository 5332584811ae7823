"""Audit checkpoints in the region stores, and the full check of the audit log (no Prefect).

* ``write_checkpoint``: verify the log (records, chain, the newest checkpoint), then write a MACed
  checkpoint of its head to every region's object store (``audit/checkpoint.json`` and
  ``audit/checkpoints/<seq>.json``). Called after each promotion (the rollout controller's
  ``after_promotion``), hourly by the ``audit-checkpoint`` flow, and by ``ebmops audit checkpoint``.
* ``newest_checkpoint``: the valid checkpoint with the highest seq across every region (the latest
  object and the newest history object of each), plus what was wrong with the others.
* ``verify_all``: ``ebmops audit verify``: the log checked against that checkpoint.

A checkpoint is written only over a log that verifies: anchoring a cut or rewritten log would make
its tampering look sound. The newest checkpoint is taken over every region and both objects, so
putting an older (validly MACed) checkpoint back in one place does not lower the anchor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Sequence

from ebmops.core.errors import AuditChainBroken, EbmopsError, SigningKeyMissing, StoreError
from ebmops.core.settings import Settings
from ebmops.core.state.audit import AuditVerification, verify
from ebmops.core.state.audit_checkpoint import (
    HISTORY_PREFIX,
    LATEST_KEY,
    Checkpoint,
    CheckpointInvalid,
    CheckpointOtherKey,
    encode,
    history_key,
    make_document,
    read_document,
)
from ebmops.core.state.audit_key import AuditKey

log = logging.getLogger(__name__)


def require_key(store) -> AuditKey:
    """The store's audit key; without one neither MACs nor checkpoints can be made or checked."""
    key = store.audit_key
    if key is None:
        raise SigningKeyMissing("the audit log's MACs and checkpoints need the control plane's signing key: set "
                                "EBMOPS_SYNC__SIGNING_KEY (or sync.signing_key_file); for local development only, "
                                "EBMOPS_SYNC__DEV_MODE=true uses a public key")
    return key


@dataclass
class FoundCheckpoint:
    newest: Checkpoint | None
    problems: list[str] = field(default_factory=list)  # forged or malformed checkpoints: tampering
    notes: list[str] = field(default_factory=list)     # checkpoints of another key, unreachable regions
    regions_read: list[str] = field(default_factory=list)


def _region_stores(settings: Settings, regions: Sequence[str] | None):
    from registry.objectstore.factory import stores_for_regions

    return stores_for_regions(settings, list(regions) if regions else None)


def newest_checkpoint(settings: Settings, key: AuditKey, regions: Sequence[str] | None = None) -> FoundCheckpoint:
    """The valid checkpoint with the highest seq in any region's store (its latest and its newest history object)."""
    from ebmops.core.errors import ObjectNotFound

    found = FoundCheckpoint(None)
    for region, store in _region_stores(settings, regions).items():
        try:
            history = store.list(HISTORY_PREFIX)
            keys = [LATEST_KEY] + history[-1:]
            docs = []
            for k in keys:
                try:
                    docs.append((k, store.get_bytes(k)))
                except ObjectNotFound:
                    pass
        except StoreError as e:
            found.notes.append(f"region {region}: cannot read its checkpoints: {e}")
            continue
        found.regions_read.append(region)
        for k, data in docs:
            where = f"region {region} {k}"
            try:
                cp = read_document(data, key, where=where)
            except CheckpointOtherKey as e:
                found.notes.append(str(e))
                continue
            except CheckpointInvalid as e:
                found.problems.append(str(e))
                continue
            if found.newest is None or cp.seq > found.newest.seq:
                found.newest = cp
    return found


def verify_all(settings: Settings, store,
               regions: Sequence[str] | None = None) -> tuple[AuditVerification, FoundCheckpoint]:
    """Records (MACs), chain, and the newest checkpoint in the region stores."""
    key = require_key(store)
    found = newest_checkpoint(settings, key, regions)
    return verify(store, key=key, checkpoint=found.newest), found


def write_checkpoint(settings: Settings, store, regions: Sequence[str] | None = None, *,
                     now: datetime | None = None) -> dict[str, Any]:
    """Verify the log, then write a checkpoint of its head to every region's store.

    Returns ``{"seq", "head_hash", "time", "regions": {region: "ok" | error}, "skipped"}``.
    Raises:
        AuditChainBroken: the log does not verify (against the newest checkpoint too): nothing is written.
        StoreError: no region's store took the checkpoint.
        SigningKeyMissing: no audit key.
    """
    key = require_key(store)
    v, found = verify_all(settings, store, regions)
    if found.problems:
        raise AuditChainBroken(f"not writing a checkpoint: {found.problems[0]}")
    if not v.ok:
        raise AuditChainBroken(f"not writing a checkpoint over a broken audit log: record {v.first_bad_seq}: "
                               f"{v.problem}", first_bad_seq=v.first_bad_seq)
    if not v.last_seq:
        return {"seq": None, "head_hash": None, "time": None, "regions": {}, "skipped": "the audit log is empty"}
    doc = make_document(seq=v.last_seq, head_hash=v.last_hash, legacy=v.n_legacy, key=key, now=now)
    data = encode(doc)
    outcome: dict[str, str] = {}
    for region, obj in _region_stores(settings, regions).items():
        try:
            obj.put_bytes(history_key(v.last_seq), data)  # history first: the latest never names a missing one
            obj.put_bytes(LATEST_KEY, data)
            outcome[region] = "ok"
        except (StoreError, OSError) as e:
            outcome[region] = f"{type(e).__name__}: {e}"
    if outcome and "ok" not in outcome.values():
        raise StoreError(f"no region store took the audit checkpoint at seq {v.last_seq}: "
                         + "; ".join(f"{r}: {m}" for r, m in outcome.items()))
    return {"seq": v.last_seq, "head_hash": v.last_hash, "time": doc["time"], "regions": outcome, "skipped": None}


def checkpoint_after_promotion(settings: Settings, store) -> None:
    """The rollout controller's ``after_promotion``: a promotion is already done, so a failure here is logged
    (the hourly checkpoint tries again), never raised into the rollout."""
    try:
        out = write_checkpoint(settings, store)
    except EbmopsError as e:
        log.error("audit checkpoint after the promotion failed: %s", e)
        return
    failed = {r: m for r, m in out["regions"].items() if m != "ok"}
    if failed:
        log.warning("audit checkpoint at seq %s not written to %s", out["seq"], failed)
