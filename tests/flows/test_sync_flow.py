"""The sync flow end to end: a real trained version from MLflow, published by a real Prefect
flow run to three local region stores, served by three real node processes on loopback."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from ebmops.core.state import open_store
from tests.servers import free_port_run

pytestmark = pytest.mark.slow


def test_sync_publishes_to_every_region_and_the_nodes_serve_it(prefect_server, flow_env, monkeypatch, kdd99):
    from ebmops.tools.localnodes import start_nodes
    from ebmops.core.settings import get_settings, load_settings
    from ebmops.services.sync import regions_status
    from flows.sync import sync
    from flows.train import train
    from registry.desired_state import next_desired, read_desired, write_desired
    from registry.objectstore.factory import store_for_region
    from registry.signing import signing_key

    monkeypatch.setenv("EBMOPS_SYNC__SIGNING_KEY", "k" * 40)
    monkeypatch.setenv("EBMOPS_SERVING__BASE_PORT", str(free_port_run(3)))
    monkeypatch.setenv("EBMOPS_SERVING__POLL_INTERVAL_S", "60")  # only /admin/reload makes them load quickly
    get_settings.cache_clear()
    settings = load_settings()
    first = train(epochs=2, progress=False)
    assert first["gate"]["report"]["verdict"] in ("pass", "skipped")  # no champion yet: comparisons skipped

    with start_nodes(settings) as nodes:
        before = regions_status(settings)
        assert not before["consistent"]
        out = sync(wait_s=30.0, reason="manual")
        version = first["version"]
        assert out["version"] == version
        assert set(out["regions"]) == {"us-east", "eu-west", "ap-south"}
        for region, r in out["regions"].items():
            assert r["bytes_uploaded"] > 0 and r["generation"] == 1
            assert out["nodes"][region]["serves_version"], out["nodes"][region]
        # each sync is recorded per region with its duration and bytes
        recs = open_store(settings).list_syncs(version=version)
        assert {r.region for r in recs} == {"us-east", "eu-west", "ap-south"}
        assert all(r.status == "ok" and r.seconds > 0 for r in recs)

        # a node scores real events with the synced model
        x = kdd99.frame[list(kdd99.schema.features)].to_numpy(np.float32)[:64]
        body = httpx.post(nodes.nodes["eu-west"].url + "/score", json={"events": x.tolist()}, timeout=10).json()
        assert body["versions"] == [version] * 64 and len(body["energies"]) == 64

        status = regions_status(settings)
        assert status["consistent"], status

        # publishing the same version again uploads nothing and bumps no generation
        again = sync(version=version, wait_s=5.0)
        assert again["bytes_uploaded"] == 0
        assert all(r["generation"] == 1 and not r["desired_written"] for r in again["regions"].values())

        # an operator edits one region's desired state by hand: status names the region and the gap
        key = signing_key(settings)
        store = store_for_region(settings, "ap-south")
        cur = read_desired(store, settings.registry.model_name, key)
        write_desired(store, next_desired(cur, settings.registry.model_name, stable_version=version,
                                          canary_version=None), key)
        drifted = regions_status(settings)
        assert not drifted["consistent"]
        assert any("generation" in i for i in drifted["regions"]["ap-south"]["issues"])
        assert not drifted["regions"]["us-east"]["issues"]

        # the daily reconcile: an operator edits eu-west's desired state by hand (breaking its signature);
        # the registry says v1 is the champion, so the reconcile rewrites it and the node serves v1 again
        from registry import ModelRegistry
        from registry.desired_state import desired_key

        ModelRegistry.from_settings(settings).set_alias("champion", version)
        eu = store_for_region(settings, "eu-west")
        doc = json.loads(eu.get_bytes(desired_key(settings.registry.model_name)))
        doc["canary_weight"] = 0.5
        doc["canary_version"] = "999"
        eu.put_bytes(desired_key(settings.registry.model_name), json.dumps(doc).encode())
        broken = regions_status(settings)
        assert any("unusable" in i for i in broken["regions"]["eu-west"]["issues"])
        fixed = sync(reconcile=True, reason="scheduled", wait_s=10.0)
        assert fixed["repaired"] == {"eu-west": version}
        assert set(fixed["ok"]) == {"us-east", "ap-south"}
        assert read_desired(eu, settings.registry.model_name, key).stable_version == version
        again = sync(reconcile=True)
        assert again["repaired"] == {}
    get_settings.cache_clear()
