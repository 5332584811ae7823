"""A node refuses what does not verify and keeps serving what it has."""

from __future__ import annotations

import json

import numpy as np
import pytest

from registry.desired_state import desired_key, make_desired, read_desired, write_desired
from registry.manifest import manifest_key
from registry.signing import hmac_key
from tests.registry.sync_fixtures import FEATURES
from tests.serving.conftest import MODEL, metric_samples, publish, set_desired


def tamper_manifest(store, version):
    path = store.root / manifest_key(MODEL, version)
    doc = json.loads(path.read_text())
    doc["threshold"] = 1e6  # would silence every alert
    path.write_text(json.dumps(doc))


def blob_path(store, version):
    doc = json.loads((store.root / manifest_key(MODEL, version)).read_text())
    return store.root / doc["files"]["model"]["key"]


def tamper_blob(store, version):
    path = blob_path(store, version)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    path.write_bytes(bytes(data))


def delete_blob(store, version):
    blob_path(store, version).unlink()


@pytest.mark.parametrize("damage, reason", [(tamper_manifest, "bad-signature"), (tamper_blob, "blob-hash-mismatch"),
                                            (delete_blob, "blob-missing")])
def test_a_bad_bundle_is_refused_and_the_old_version_keeps_serving(node_factory, store, key, tmp_path, damage,
                                                                   reason):
    publish(store, key, tmp_path, "1")
    set_desired(store, key, "1")
    x = [[0.1] * len(FEATURES)] * 4
    with node_factory() as n:
        n.wait_ready()
        publish(store, key, tmp_path, "2")
        damage(store, "2")
        set_desired(store, key, "2")

        r = n.client.post("/admin/reload")
        assert r.status_code == 502, r.text
        body = r.json()
        assert body["outcome"] == "refused" and body["refusal"]["reason"] == reason
        assert body["refusal"]["version"] == "2" and body["refusal"]["generation"] == 2
        assert body["serving"]["stable_version"] == "1"

        ready = n.client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["stable_version"] == "1"
        assert ready.json()["last_error"]["reason"] == reason
        scored = n.score(x)
        assert scored.status_code == 200 and scored.json()["versions"] == ["1"] * 4
        assert n.client.get("/stats").json()["last_error"]["reason"] == reason

        assert n.client.post("/admin/reload").status_code == 502  # a failed generation is retried, and refused again
        samples = metric_samples(n.client.get("/metrics").text)
        assert samples[("ebmops_node_model_load_failures_total", (("reason", reason),))] == 2
        assert samples[("ebmops_node_desired_generation", ())] == 1
        assert not (n.node.reconciler.install_dir / MODEL / "2").exists()  # nothing of it was installed

        # The operator publishes a good version 3: the node moves on and forgets the error.
        publish(store, key, tmp_path, "3")
        set_desired(store, key, "3")
        assert n.client.post("/admin/reload").status_code == 200
        ready = n.client.get("/readyz").json()
        assert ready["stable_version"] == "3" and ready["last_error"] is None
        assert n.score(x).json()["versions"] == ["3"] * 4


def test_a_desired_state_signed_with_another_key_is_refused(node_factory, store, key, tmp_path):
    publish(store, key, tmp_path, "1")
    publish(store, key, tmp_path, "2")
    set_desired(store, key, "1")
    with node_factory() as n:
        n.wait_ready()
        forged = make_desired(MODEL, stable_version="2", generation=5)
        store.delete(desired_key(MODEL))  # write_desired would refuse to overwrite a document it cannot verify
        write_desired(store, forged, hmac_key("x" * 40))
        r = n.client.post("/admin/reload")
        assert r.status_code == 409, r.text
        assert r.json()["refusal"]["reason"] == "bad-desired-state"
        assert "signature" in r.json()["refusal"]["message"]
        assert n.score([[0.0] * len(FEATURES)]).json()["versions"] == ["1"]
        assert n.client.get("/readyz").json()["last_error"]["kind"] == "desired-state"


def test_an_older_generation_is_ignored(node_factory, store, key, tmp_path):
    publish(store, key, tmp_path, "1")
    publish(store, key, tmp_path, "2")
    set_desired(store, key, "1")
    old_doc = (store.root / desired_key(MODEL)).read_bytes()
    set_desired(store, key, "2")
    with node_factory() as n:
        assert n.wait_ready()["stable_version"] == "2"
        (store.root / desired_key(MODEL)).write_bytes(old_doc)  # a replay of a validly signed, older document
        assert read_desired(store, MODEL, key).generation == 1
        r = n.client.post("/admin/reload")
        assert r.status_code == 409 and r.json()["refusal"]["reason"] == "stale-generation"
        assert n.score([[0.0] * len(FEATURES)]).json()["versions"] == ["2"]


def test_a_model_that_fails_warm_up_is_refused(node_factory, store, key, tmp_path):
    import torch

    from registry.bundle import publish_bundle

    publish(store, key, tmp_path, "1")
    set_desired(store, key, "1")

    class Wrong(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.sum(1, keepdim=True)  # [n, 1], not [n]

    bad = tmp_path / "wrong.pt"
    torch.jit.save(torch.jit.script(Wrong()), str(bad))
    publish_bundle(store, bad, model_name=MODEL, version="9", features=FEATURES, threshold=1.0, gate_verdict="pass",
                   key=key)
    with node_factory() as n:
        n.wait_ready()
        set_desired(store, key, "9")
        r = n.client.post("/admin/reload")
        assert r.status_code == 502 and r.json()["refusal"]["reason"] == "warmup-failed"
        assert "[4, 1]" in r.json()["refusal"]["message"]
        assert n.score(np.zeros((2, len(FEATURES))).tolist()).json()["versions"] == ["1", "1"]
