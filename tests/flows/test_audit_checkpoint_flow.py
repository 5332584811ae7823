"""The ``audit-checkpoint`` flow (the hourly deployment) run by a real Prefect server: it anchors the
audit log's head in every region's store, and fails, writing nothing, over a log cut at the end."""

from __future__ import annotations

import json

import pytest

from ebmops.core.errors import AuditChainBroken
from ebmops.core.settings import get_settings, load_settings
from ebmops.core.state import open_store
from ebmops.core.state.audit import AuditLog
from registry.objectstore.factory import stores_for_regions
from tests.core.state import attacker


def test_the_flow_anchors_the_log_and_refuses_a_cut_one(prefect_server, tmp_path, monkeypatch):
    from flows.audit_checkpoint import audit_checkpoint

    monkeypatch.setenv("EBMOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EBMOPS_SYNC__SIGNING_KEY", "f" * 40)
    monkeypatch.delenv("EBMOPS_CONFIG", raising=False)
    get_settings.cache_clear()
    settings = load_settings()
    store = open_store(settings)
    try:
        for i in range(3):
            AuditLog(store).append("gate", model="m", version=str(i), actor="ebmops-test")
    finally:
        store.close()
    out = audit_checkpoint()
    assert out["seq"] == 3 and set(out["regions"]) == set(settings.data.regions)
    for obj in stores_for_regions(settings).values():
        assert json.loads(obj.get_bytes("audit/checkpoint.json"))["seq"] == 3
    attacker.delete_tail(settings.resolved_state_url, 1)
    with pytest.raises(AuditChainBroken, match="records after seq 2 are missing"):
        audit_checkpoint()
    get_settings.cache_clear()
