"""What a node trusted survives its restart: an older or reused desired state is refused after a restart
too, the control plane writes past what nodes trust, and a node whose store is unusable at boot serves
its last verified state from disk (degraded) until the store is good again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
import numpy as np
import pytest

from ebmops.adapters.nodes import generation_floors
from ebmops.core.settings import load_settings
from registry.desired_state import desired_key, make_desired, read_desired, write_desired
from registry.publish import publish_to_regions
from registry.signing import hmac_key, sign_document
from serving.trust import load_trusted, record_trusted, trust_path
from tests.registry.sync_fixtures import FEATURES
from tests.servers import TcpGate, free_port, wait_http
from tests.serving.conftest import MODEL, REGION, SECRET, THRESHOLDS, metric_samples, model_file, publish, set_desired

ROW = [[0.0] * len(FEATURES)]


def _versions(n) -> list[str]:
    return n.score(ROW).json()["versions"]


def _put_signed(store, key, **fields) -> None:
    """Write a validly signed desired state as is, bypassing write_desired's generation check: what a
    replay, or a second writer reusing a generation, puts in the store."""
    doc = sign_document(make_desired(MODEL, **fields).document(), key)
    store.put_bytes(desired_key(MODEL), json.dumps(doc).encode())


def test_a_different_document_under_a_served_generation_is_refused(node_factory, store, key, tmp_path):
    publish(store, key, tmp_path, "1")
    publish(store, key, tmp_path, "2")
    set_desired(store, key, "1")
    with node_factory() as n:
        assert n.wait_ready()["generation"] == 1
        _put_signed(store, key, stable_version="2", generation=1)
        r = n.client.post("/admin/reload")
        assert r.status_code == 409 and r.json()["refusal"]["reason"] == "generation-reused", r.text
        assert "write generation 2" in r.json()["refusal"]["message"]
        assert _versions(n) == ["1"]


def test_last_error_is_cleared_once_the_store_is_good_again(node_factory, store, key, tmp_path):
    publish(store, key, tmp_path, "1")
    set_desired(store, key, "1")
    good = store.get_bytes(desired_key(MODEL))
    with node_factory() as n:
        n.wait_ready()
        store.put_bytes(desired_key(MODEL), good.replace(b'"stable_version": "1"', b'"stable_version": "2"'))
        assert n.client.post("/admin/reload").json()["refusal"]["reason"] == "bad-desired-state"
        assert n.client.get("/readyz").json()["last_error"]["reason"] == "bad-desired-state"
        store.put_bytes(desired_key(MODEL), good)  # repaired: the same generation as served
        r = n.client.post("/admin/reload")
        assert r.status_code == 200 and r.json()["outcome"] == "unchanged"
        assert r.json()["last_error"] is None and n.client.get("/readyz").json()["last_error"] is None


def test_an_expired_desired_state_is_refused_and_named(node_factory, store, key, tmp_path):
    publish(store, key, tmp_path, "1")
    publish(store, key, tmp_path, "2")
    set_desired(store, key, "1")
    with node_factory() as n:
        n.wait_ready()
        write_desired(store, make_desired(MODEL, stable_version="2", generation=2, ttl_s=-1.0), key)
        r = n.client.post("/admin/reload")
        assert r.status_code == 409 and r.json()["refusal"]["reason"] == "desired-state-expired", r.text
        assert "expired at" in r.json()["refusal"]["message"] and _versions(n) == ["1"]


def test_after_a_restart_an_older_document_is_refused_and_the_kept_state_served_from_disk(
        node_factory, node_settings, store, key, tmp_path):
    publish(store, key, tmp_path, "1")
    publish(store, key, tmp_path, "2")
    set_desired(store, key, "1")
    old = store.get_bytes(desired_key(MODEL))
    set_desired(store, key, "2")
    with node_factory() as n:
        assert n.wait_ready()["trusted_generation"] == 2
    store.put_bytes(desired_key(MODEL), old)  # replayed while the node was down
    with node_factory() as n:
        ready = n.wait_ready()
        assert (ready["stable_version"], ready["generation"], ready["trusted_generation"]) == ("2", 2, 2)
        assert ready["degraded"]["reason"] == "stale-generation"
        assert ready["last_error"]["reason"] == "stale-generation" and _versions(n) == ["2"]
        samples = metric_samples(n.client.get("/metrics").text)
        assert samples[("ebmops_node_degraded", ())] == 1.0
        assert samples[("ebmops_node_trusted_generation", ())] == 2.0
        # the control plane asks the node what it trusts and writes past it (never generation 2 again)
        cp = load_settings(home=tmp_path / "cp", serving={"node_urls": {REGION: n.url}})
        floors = generation_floors(cp, [REGION])
        assert floors == {REGION: 2}
        out = publish_to_regions({REGION: store}, model_file(tmp_path, "1"), model_name=MODEL, version="1",
                                 features=FEATURES, threshold=THRESHOLDS["1"], gate_verdict="pass", key=key,
                                 set_stable=True, floors=floors, ttl_s=3600)
        assert out[REGION].desired_generation == 3 and out[REGION].desired_written
        r = n.client.post("/admin/reload").json()
        assert (r["generation"], r["stable_version"], r["degraded"], r["last_error"]) == (3, "1", None, None)
        assert load_trusted(node_settings.node_install_dir(REGION), MODEL, key).generation == 3


def test_a_document_failing_verification_at_boot_serves_the_verified_copy_until_repaired(
        node_factory, store, key, tmp_path):
    publish(store, key, tmp_path, "1")
    publish(store, key, tmp_path, "2")
    set_desired(store, key, "1")
    with node_factory() as n:
        n.wait_ready()
    raw = store.get_bytes(desired_key(MODEL))
    store.put_bytes(desired_key(MODEL), raw.replace(b'"stable_version": "1"', b'"stable_version": "2"'))
    with node_factory() as n:
        ready = n.wait_ready()
        assert ready["stable_version"] == "1" and ready["degraded"]["reason"] == "bad-desired-state"
        set_desired_over_unverified = make_desired(MODEL, stable_version="2", generation=2)
        write_desired(store, set_desired_over_unverified, key, replace_unverified=True)
        r = n.client.post("/admin/reload").json()
        assert (r["stable_version"], r["degraded"], r["last_error"]) == ("2", None, None)


def test_a_damaged_copy_on_disk_is_not_served(node_factory, node_settings, store, key, tmp_path):
    publish(store, key, tmp_path, "1")
    set_desired(store, key, "1")
    with node_factory() as n:
        n.wait_ready()
    installed = node_settings.node_install_dir(REGION) / MODEL / "1" / "model.pt"
    installed.write_bytes(installed.read_bytes()[:-10] + b"0123456789")
    store.put_bytes(desired_key(MODEL), b"{not json")
    with node_factory() as n:
        r = n.client.post("/admin/reload")
        assert r.status_code == 409 and n.client.get("/readyz").status_code == 503
        assert r.json()["degraded"] is None


def test_the_kept_generation_is_never_lowered(tmp_path, key):
    high = make_desired(MODEL, stable_version="2", generation=5)
    assert record_trusted(tmp_path, high) == 5
    assert record_trusted(tmp_path, make_desired(MODEL, stable_version="1", generation=3)) == 5
    kept = load_trusted(tmp_path, MODEL, key)
    assert kept.generation == 5 and kept.desired is None  # unsigned in this unit test: the floor stays
    trust_path(tmp_path, MODEL).write_text("{damaged")
    assert load_trusted(tmp_path, MODEL, key) is None


@pytest.mark.slow
def test_a_node_process_restarted_during_a_store_outage_serves_from_disk_then_moves_on(seaweedfs, tmp_path):
    """A real `ebmops node` on a real S3 store behind a cuttable link: SIGKILL, cut the link, restart:
    it serves its last verified version (degraded); the link back, it is whole again. Then a replayed
    older document and another restart: refused, and the control plane writes past it."""
    from registry.objectstore import S3Store

    key = hmac_key(SECRET)
    host, port = seaweedfs.endpoint_url.rsplit("//", 1)[1].split(":")
    gate = TcpGate((host, int(port)))
    bucket, prefix = "ebmops-trust", os.urandom(4).hex()
    direct = S3Store(seaweedfs.endpoint_url, bucket, access_key=seaweedfs.access_key,
                     secret_key=seaweedfs.secret_key, region_name=seaweedfs.region_name, prefix=prefix)
    for v in ("1", "2"):
        publish(direct, key, tmp_path, v)
    set_desired(direct, key, "1")
    old = direct.get_bytes(desired_key(MODEL))
    set_desired(direct, key, "2")
    node_port = free_port()
    url = f"http://127.0.0.1:{node_port}"
    env = {**os.environ, "EBMOPS_HOME": str(tmp_path / "home"), "EBMOPS_SYNC__SIGNING_KEY": SECRET,
           "EBMOPS_SERVING__POLL_INTERVAL_S": "60", "EBMOPS_SYNC__S3_MAX_ATTEMPTS": "1",
           "EBMOPS_SYNC__S3_CONNECT_TIMEOUT_S": "1", "EBMOPS_SYNC__S3_READ_TIMEOUT_S": "2",
           "EBMOPS_SYNC__REGIONS": json.dumps({REGION: {
               "kind": "s3", "endpoint_url": gate.url, "bucket": bucket, "prefix": prefix,
               "region_name": seaweedfs.region_name, "access_key": seaweedfs.access_key,
               "secret_key": seaweedfs.secret_key}})}
    env.pop("EBMOPS_CONFIG", None)

    def start() -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "ebmops.cli.main", "node", "--region", REGION, "--port",
                                 str(node_port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"{url}/healthz", timeout=90)
        return proc

    def ready() -> dict:
        r = httpx.get(f"{url}/readyz", timeout=10)
        while r.status_code == 503 and not r.json().get("last_reconcile_at"):
            r = httpx.get(f"{url}/readyz", timeout=10)  # the first reconcile is under way
        return r.json()

    def kill(proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    proc = start()
    try:
        assert ready()["stable_version"] == "2"
        kill(proc)
        gate.cut()
        proc = start()
        body = ready()
        assert (body["ready"], body["stable_version"], body["degraded"]["reason"]) == (True, "2", "store-unreadable")
        score = httpx.post(f"{url}/score", json={"events": ROW}, timeout=10)
        assert score.status_code == 200 and score.json()["versions"] == ["2"]
        gate.restore()
        body = httpx.post(f"{url}/admin/reload", timeout=30).json()
        assert (body["stable_version"], body["degraded"], body["last_error"]) == ("2", None, None)

        direct.put_bytes(desired_key(MODEL), old)  # a replayed, validly signed generation 1
        kill(proc)
        proc = start()
        body = ready()
        assert (body["stable_version"], body["trusted_generation"]) == ("2", 2)
        assert body["last_error"]["reason"] == "stale-generation" and body["degraded"]["reason"] == "stale-generation"
        cp = load_settings(home=tmp_path / "cp", serving={"node_urls": {REGION: url}})
        floors = generation_floors(cp, [REGION])
        out = publish_to_regions({REGION: direct}, model_file(tmp_path, "1"), model_name=MODEL, version="1",
                                 features=FEATURES, threshold=THRESHOLDS["1"], gate_verdict="pass", key=key,
                                 set_stable=True, floors=floors, ttl_s=3600)
        assert read_desired(direct, MODEL, key).generation == out[REGION].desired_generation == 3
        body = httpx.post(f"{url}/admin/reload", timeout=30).json()
        assert (body["stable_version"], body["generation"], body["degraded"]) == ("1", 3, None)
        assert np.isfinite(httpx.post(f"{url}/score", json={"events": ROW}, timeout=10).json()["energies"]).all()
    finally:
        if proc.poll() is None:
            kill(proc)
        gate.close()


def test_sync_waiting_for_an_unreachable_node_fails_naming_it(node_factory, store, key, tmp_path):
    from ebmops.core.errors import SyncNotServed
    from ebmops.services.sync import notify_and_wait

    publish(store, key, tmp_path, "1")
    set_desired(store, key, "1")
    dead = f"http://127.0.0.1:{free_port()}"
    with node_factory() as n:
        n.wait_ready()
        cp = load_settings(home=tmp_path / "cp", data={"regions": [REGION, "us-east"]},
                           serving={"node_urls": {REGION: n.url, "us-east": dead}})
        with pytest.raises(SyncNotServed) as err:
            notify_and_wait(cp, [REGION, "us-east"], "1", wait_s=0.5, poll_s=0.05)
        assert err.value.exit_code == 6
        assert "us-east: node unreachable" in str(err.value) and f"{REGION}:" not in str(err.value)
        assert notify_and_wait(cp, [REGION], "1", wait_s=0.5)[REGION]["serves_version"]
