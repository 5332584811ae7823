"""Audit checkpoints in the region stores (ebmops/services/audit.py), on local directories and on the real
SeaweedFS S3 server: written to every region, the newest found across regions and history, forged or
rolled-back ones named, never written over a broken log, and written after a promotion."""

from __future__ import annotations

import json
import logging
import uuid

import pytest

from ebmops.core.errors import AuditChainBroken, SigningKeyMissing
from ebmops.core.settings import load_settings
from ebmops.core.state import open_store
from ebmops.core.state.audit import AuditLog
from ebmops.core.state.audit_checkpoint import LATEST_KEY, history_key
from ebmops.services import audit as service
from registry.objectstore.factory import stores_for_regions
from tests.core.state import attacker

SECRET = "audit-services-test-secret-" + "q" * 20
REGIONS = ["us-east", "eu-west", "ap-south"]


def region_settings(kind: str, request, tmp_path, **sync):
    """Every region on local directories, or every region on the session's SeaweedFS (own prefix)."""
    regions = {}
    if kind == "s3":
        server, run = request.getfixturevalue("seaweedfs"), uuid.uuid4().hex[:10]
        regions = {r: {"kind": "s3", "endpoint_url": server.endpoint_url, "access_key": server.access_key,
                       "secret_key": server.secret_key, "bucket": "ebmops-audit-tests", "prefix": f"{run}-{r}"}
                   for r in REGIONS}
    return load_settings(home=tmp_path / "home", data={"regions": REGIONS},
                         sync={"signing_key": SECRET, "regions": regions, **sync})


@pytest.fixture(params=["local", "s3"])
def settings(request, tmp_path):
    return region_settings(request.param, request, tmp_path)


@pytest.fixture
def store(settings):
    s = open_store(settings)
    yield s
    s.close()


def fill(store, n):
    log = AuditLog(store)
    for i in range(n):
        log.append("promotion" if i % 2 else "gate", model="m", version=str(i), actor="ebmops-test")


def test_a_checkpoint_reaches_every_region_and_anchors_verify(settings, store):
    fill(store, 4)
    out = service.write_checkpoint(settings, store)
    assert out["seq"] == 4 and out["regions"] == {r: "ok" for r in REGIONS}
    for region, obj in stores_for_regions(settings).items():
        doc = json.loads(obj.get_bytes(LATEST_KEY))
        assert doc["seq"] == 4 and doc["head_hash"] == out["head_hash"] and doc["key_id"] == store.audit_key.key_id
        assert obj.get_bytes(history_key(4)) == obj.get_bytes(LATEST_KEY)
    v, found = service.verify_all(settings, store)
    assert v.ok and v.checkpoint["seq"] == 4 and found.problems == [] and found.regions_read == REGIONS


def test_tail_deletion_is_caught_and_no_checkpoint_is_written_over_it(settings, store):
    fill(store, 5)
    service.write_checkpoint(settings, store)
    attacker.delete_tail(settings.resolved_state_url, 1)
    v, _ = service.verify_all(settings, store)
    assert not v.ok and v.problem.startswith("truncated: records after seq 4 are missing")
    with pytest.raises(AuditChainBroken, match="records after seq 4 are missing"):
        service.write_checkpoint(settings, store)
    assert [k for k in stores_for_regions(settings)["us-east"].list("audit/")] == [LATEST_KEY, history_key(5)]


def test_the_newest_checkpoint_wins_over_an_older_one_put_back(settings, store):
    fill(store, 2)
    service.write_checkpoint(settings, store)
    stores = stores_for_regions(settings)
    older = {r: s.get_bytes(LATEST_KEY) for r, s in stores.items()}
    fill(store, 2)
    service.write_checkpoint(settings, store)
    for r, s in stores.items():  # a region-store writer restores the old (validly MACed) checkpoint everywhere
        s.put_bytes(LATEST_KEY, older[r])
    attacker.delete_tail(settings.resolved_state_url, 2)
    v, found = service.verify_all(settings, store)
    assert found.newest.seq == 4 and found.newest.where.endswith(history_key(4))
    assert not v.ok and "records after seq 2 are missing" in v.problem


def test_a_forged_checkpoint_is_named(settings, store):
    fill(store, 3)
    service.write_checkpoint(settings, store)
    obj = stores_for_regions(settings)["eu-west"]
    doc = json.loads(obj.get_bytes(LATEST_KEY))
    obj.put_bytes(LATEST_KEY, json.dumps({**doc, "seq": 99}).encode())
    v, found = service.verify_all(settings, store)
    assert v.ok and found.newest.seq == 3  # the log itself is fine; the forged anchor is reported
    assert found.problems == [f"region eu-west {LATEST_KEY} does not match its MAC: it was forged or altered"]
    with pytest.raises(AuditChainBroken, match="forged"):
        service.write_checkpoint(settings, store)


def test_an_empty_log_writes_nothing(settings, store):
    out = service.write_checkpoint(settings, store)
    assert out["skipped"] == "the audit log is empty" and out["regions"] == {}
    v, found = service.verify_all(settings, store)
    assert v.ok and found.newest is None and v.checkpoint is None


def test_without_a_key_nothing_is_verified_or_written(tmp_path):
    settings = load_settings(home=tmp_path / "home")
    s = open_store(settings)
    try:
        fill(s, 1)  # written without a MAC (and a warning)
        with pytest.raises(SigningKeyMissing, match="EBMOPS_SYNC__SIGNING_KEY"):
            service.verify_all(settings, s)
        with pytest.raises(SigningKeyMissing):
            service.write_checkpoint(settings, s)
    finally:
        s.close()


def test_a_promotion_writes_a_checkpoint_through_the_rollout_controller(tmp_path, caplog):
    from ebmops.adapters.approvals import AutoApprovals
    from ebmops.services import rollout

    settings = region_settings("local", None, tmp_path)
    s = open_store(settings)
    try:
        fill(s, 2)
        ctl = rollout.controller(settings, s, AutoApprovals("alice"))
        ctl.after_promotion()
        assert json.loads(stores_for_regions(settings)["ap-south"].get_bytes(LATEST_KEY))["seq"] == 2
        attacker.delete_tail(settings.resolved_state_url, 1)
        with caplog.at_level(logging.ERROR):
            ctl.after_promotion()  # logged, not raised: the promotion already happened
        assert "records after seq 1 are missing" in caplog.text
    finally:
        s.close()
