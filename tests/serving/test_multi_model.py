"""One node serves every model of its region: each scored, reported, reconciled and refused on its own."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import yaml

from ebmops.core.settings import load_settings
from registry.bundle import publish_bundle
from registry.desired_state import desired_key, next_desired, read_desired, write_desired
from registry.manifest import manifest_key
from registry.signing import hmac_key
from serving.auth import config_line, new_token
from tests.registry.sync_fixtures import FEATURES, save_energy_model
from tests.serving.conftest import MODEL, REGION, metric_samples, publish, set_desired, torch_energies

DNS = "dns-detector"
DNS_FEATURES = [f"d{i}" for i in range(5)]  # another width than the default model's 8
DNS_THRESHOLD = 0.07


def publish_dns(store, key, tmp_path, version: str, *, seed: int | None = None):
    path = tmp_path / "models" / f"dns-v{version}.pt"
    path.parent.mkdir(exist_ok=True)
    save_energy_model(path, seed=seed if seed is not None else 100 + int(version), threshold=DNS_THRESHOLD,
                      n_features=len(DNS_FEATURES))
    publish_bundle(store, path, model_name=DNS, version=version, features=DNS_FEATURES, threshold=DNS_THRESHOLD,
                   gate_verdict="pass", key=key)
    return path


def desire_dns(store, key, stable: str) -> int:
    new = next_desired(read_desired(store, DNS, key), DNS, stable_version=stable)
    return write_desired(store, new, key).generation


def dns_events(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 2, size=(n, len(DNS_FEATURES))).astype(np.float32)


@pytest.fixture
def two_models(store, key, tmp_path):
    """The default model at version 1 and the dns model at version 1, both desired in the region's store."""
    paths = {MODEL: publish(store, key, tmp_path, "1"), DNS: publish_dns(store, key, tmp_path, "1")}
    set_desired(store, key, "1")
    desire_dns(store, key, "1")
    return paths


def test_two_models_of_different_widths_are_scored_side_by_side(node_factory, two_models):
    x_dns = dns_events(200)
    x_def = np.random.default_rng(1).normal(0, 2, size=(50, len(FEATURES))).astype(np.float32)
    with node_factory() as n:
        ready = n.wait_ready()
        assert set(ready["models"]) == {MODEL, DNS}
        assert all(m["ready"] and not m["warming_up"] and m["stable_version"] == "1" for m in ready["models"].values())

        r = n.client.post(f"/v1/models/{DNS}/score", json={"events": x_dns.tolist()})
        assert r.status_code == 200, r.text
        expected = torch_energies(two_models[DNS], x_dns)
        np.testing.assert_allclose(np.array(r.json()["energies"], dtype=np.float32), expected, rtol=1e-6)
        assert r.json()["anomaly"] == (expected > DNS_THRESHOLD).tolist() and r.json()["versions"] == ["1"] * 200

        binary = n.client.post(f"/v1/models/{DNS}/score", content=x_dns[:7].astype("<f4").tobytes(),
                               headers={"content-type": "application/x-ebmops-f32",
                                        "accept": "application/x-ebmops-f32"})
        assert binary.status_code == 200 and binary.headers["x-ebmops-versions"] == "1"
        np.testing.assert_allclose(np.frombuffer(binary.content, dtype="<f4"), expected[:7], rtol=1e-6)

        # /score is the default model, and so is its /v1/models path
        default = n.score(x_def).json()
        assert n.client.post(f"/v1/models/{MODEL}/score", json={"events": x_def.tolist()}).json() == default
        np.testing.assert_allclose(default["energies"], torch_energies(two_models[MODEL], x_def), rtol=1e-6)
        # each model holds its own width: 5 features are not an event of the default model, 8 not of dns
        assert n.score(x_dns[:1]).status_code == 422
        wrong = n.client.post(f"/v1/models/{DNS}/score", json={"events": x_def[:1].tolist()})
        assert wrong.status_code == 422

        listing = n.client.get("/v1/models").json()
        assert listing["default_model"] == MODEL
        assert {m["model"]: m["features"] for m in listing["models"]} == {MODEL: FEATURES, DNS: DNS_FEATURES}
        assert sorted((d["model"], d["version"], d["role"], d["weight"]) for d in listing["data"]) == \
            [(DNS, "1", "stable", 1.0), (MODEL, "1", "stable", 1.0)]
        one = n.client.get(f"/v1/models/{DNS}").json()
        assert (one["model"], one["versions"], one["weights"], one["ready"]) == (DNS, {"1": "stable"}, {"1": 1.0}, True)

        dns_stats = n.client.get(f"/v1/models/{DNS}/stats").json()
        assert dns_stats["model"] == DNS and dns_stats["by_version"]["1"]["events"] == 207
        assert dns_stats["by_version"]["1"]["requests"] == 2  # the refused 8-wide request is no scored request
        stats = n.client.get("/stats").json()
        assert stats["model"] == MODEL and stats["by_version"]["1"]["events"] == 100
        recent = n.client.get(f"/v1/models/{DNS}/recent", params={"n": 3}).json()
        assert recent["features"] == DNS_FEATURES and recent["model"] == DNS
        np.testing.assert_allclose(recent["events"], x_dns[4:7], rtol=1e-6)
        assert n.client.get("/recent", params={"n": 3}).json()["features"] == FEATURES
        text = n.client.get("/metrics").text

    everything = metric_samples(text, model=None)
    assert everything[("ebmops_node_events_total", (("model", DNS), ("version", "1")))] == 207
    assert everything[("ebmops_node_events_total", (("model", MODEL), ("version", "1")))] == 100
    assert everything[("ebmops_node_requests_total", (("model", DNS), ("status", "200")))] == 2
    assert everything[("ebmops_node_requests_total", (("model", DNS), ("status", "422")))] == 1
    assert everything[("ebmops_node_requests_total", (("model", MODEL), ("status", "200")))] == 2
    assert everything[("ebmops_node_event_energy_count", (("model", DNS), ("version", "1")))] == 207
    assert everything[("ebmops_node_loaded_version_info", (("model", DNS), ("role", "stable"), ("version", "1")))] == 1
    assert everything[("ebmops_node_ready", (("model", DNS),))] == 1
    assert everything[("ebmops_node_desired_generation", (("model", DNS),))] == 1
    assert everything[("ebmops_node_region_info", (("model", DNS), ("region", REGION)))] == 1
    assert everything[("ebmops_node_region_info", (("model", MODEL), ("region", REGION)))] == 1


def test_an_unknown_model_is_a_404_naming_the_served_ones(node_factory, two_models):
    with node_factory() as n:
        n.wait_ready()
        for method, path in [("POST", "/v1/models/nope/score"), ("GET", "/v1/models/nope/stats"),
                             ("GET", "/v1/models/nope/recent"), ("GET", "/v1/models/nope"),
                             ("POST", "/admin/reload?model=nope")]:
            r = n.client.request(method, path, json={"events": [[0.0] * 5]} if method == "POST" else None)
            assert r.status_code == 404, (path, r.text)
            body = r.json()
            assert body["error"] == "unknown model" and body["model"] == "nope" and body["served"] == sorted([MODEL, DNS])
            assert "nope" in body["reason"] and DNS in body["reason"]
        assert n.client.post(f"/v1/models/{DNS}/score", json={"events": dns_events(1).tolist()}).status_code == 200


def tamper_blob(store, model, version):
    doc = json.loads((store.root / manifest_key(model, version)).read_text())
    path = store.root / doc["files"]["model"]["key"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_refused_bundle_or_document_of_one_model_never_disturbs_another(node_factory, two_models, store, key,
                                                                          tmp_path):
    x = dns_events(20)
    with node_factory() as n:
        n.wait_ready()
        before = n.client.post(f"/v1/models/{DNS}/score", json={"events": x.tolist()}).json()
        # dns: a tampered bundle; the default model: a good new version, in the same reload
        publish_dns(store, key, tmp_path, "2")
        tamper_blob(store, DNS, "2")
        desire_dns(store, key, "2")
        publish(store, key, tmp_path, "2")
        set_desired(store, key, "2")
        r = n.client.post("/admin/reload")
        assert r.status_code == 200, r.text  # the body is the default model's, which applied
        body = r.json()
        assert body["outcome"] == "applied" and body["stable_version"] == "2"
        assert body["models"][DNS]["outcome"] == "refused" and body["models"][DNS]["ready"] is True
        assert body["models"][DNS]["refusal"]["reason"] == "blob-hash-mismatch"
        one = n.client.post("/admin/reload", params={"model": DNS})
        assert one.status_code == 502 and one.json()["model"] == DNS and one.json()["stable_version"] == "1"
        assert list(one.json()["models"]) == [DNS]  # ?model= reconciles that model only
        assert n.client.post(f"/v1/models/{DNS}/score", json={"events": x.tolist()}).json() == before
        assert n.score(np.zeros((1, len(FEATURES)), np.float32)).json()["versions"] == ["2"]

        ready = n.client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["models"][DNS]["last_error"]["reason"] == "blob-hash-mismatch"
        assert ready.json()["models"][MODEL]["last_error"] is None

        # dns: a document signed with another key; the default model moves on again meanwhile
        forged = next_desired(read_desired(store, DNS, key), DNS, stable_version="1")
        store.delete(desired_key(DNS))  # write_desired would refuse to overwrite a document it cannot verify
        write_desired(store, forged, hmac_key("x" * 40))
        publish(store, key, tmp_path, "3")
        set_desired(store, key, "3")
        body = n.client.post("/admin/reload").json()
        assert body["stable_version"] == "3" and body["models"][DNS]["refusal"]["reason"] == "bad-desired-state"
        assert n.client.get(f"/v1/models/{DNS}/stats").json()["stable_version"] == "1"
        assert n.client.post(f"/v1/models/{DNS}/score", json={"events": x.tolist()}).json() == before
        samples = metric_samples(n.client.get("/metrics").text, model=DNS)
        assert samples[("ebmops_node_model_load_failures_total", (("reason", "blob-hash-mismatch"),))] == 2
        assert samples[("ebmops_node_model_load_failures_total", (("reason", "bad-desired-state"),))] == 1
        assert samples[("ebmops_node_desired_generation", ())] == 1
        # the default model's swaps (1 -> 2 -> 3) replaced its own loaded-version series only
        assert samples[("ebmops_node_loaded_version_info", (("role", "stable"), ("version", "1")))] == 1
        default = metric_samples(n.client.get("/metrics").text)
        assert [k for k in default if k[0] == "ebmops_node_loaded_version_info"] == \
            [("ebmops_node_loaded_version_info", (("role", "stable"), ("version", "3")))]
        assert ("ebmops_node_model_load_failures_total", (("reason", "blob-hash-mismatch"),)) not in default
        assert default[("ebmops_node_desired_generation", ())] == 3


def test_a_reconcile_that_raises_for_one_model_does_not_stop_the_others(node_factory, two_models, store, key,
                                                                        tmp_path):
    with node_factory() as n:
        n.wait_ready()
        server = n.node.models[DNS]

        def boom():
            raise RuntimeError("disk on fire")

        server.reconciler.reconcile = boom
        publish(store, key, tmp_path, "2")
        set_desired(store, key, "2")
        body = n.client.post("/admin/reload").json()
        assert body["stable_version"] == "2"
        assert body["models"][DNS]["refusal"]["reason"] == "reconcile-failed"
        assert "disk on fire" in body["models"][DNS]["refusal"]["message"]
        assert n.client.post(f"/v1/models/{DNS}/score", json={"events": dns_events(1).tolist()}).status_code == 200
        samples = metric_samples(n.client.get("/metrics").text, model=DNS)
        assert samples[("ebmops_node_errors_total", (("kind", "reconcile"),))] == 1


def test_a_model_added_later_is_served_after_a_reload(node_factory, store, key, tmp_path):
    path = publish(store, key, tmp_path, "1")
    set_desired(store, key, "1")
    with node_factory() as n:
        assert list(n.wait_ready()["models"]) == [MODEL]
        x = dns_events(3)
        assert n.client.post(f"/v1/models/{DNS}/score", json={"events": x.tolist()}).status_code == 404
        dns_path = publish_dns(store, key, tmp_path, "1")
        desire_dns(store, key, "1")
        body = n.client.post("/admin/reload").json()
        assert body["models"][DNS]["outcome"] == "applied" and body["models"][MODEL]["outcome"] == "unchanged"
        r = n.client.post(f"/v1/models/{DNS}/score", json={"events": x.tolist()})
        assert r.status_code == 200
        np.testing.assert_allclose(r.json()["energies"], torch_energies(dns_path, x), rtol=1e-6)
        ready = n.client.get("/readyz").json()
        assert set(ready["models"]) == {MODEL, DNS} and ready["ready"] is True
    assert path.exists()


def test_serving_models_limits_what_a_node_serves(tmp_path, store, key, node_factory, two_models):
    settings = load_settings(home=tmp_path / "home", serving={"poll_interval_s": 30.0, "models": ["other"]})
    with node_factory(settings=settings) as n:
        assert list(n.wait_ready()["models"]) == [MODEL]  # the default model is always served
        assert n.client.post("/admin/reload").json()["models"].keys() == {MODEL}
        assert n.client.get(f"/v1/models/{DNS}").status_code == 404


def test_no_model_is_ready_while_one_is_still_warming_up(node_settings, store, key, two_models, tmp_path):
    from serving.app import Node

    node = Node(node_settings, REGION, store, key)
    assert node.discover() == [DNS] and node.discover() == []
    assert not node.ready()
    node.models[MODEL].reconcile()
    assert node.models[MODEL].state.serving is not None and not node.ready()  # dns is still warming up
    node.models[DNS].reconcile()
    assert node.ready()
    readiness = node.readiness()
    assert readiness["ready"] and readiness["models"][DNS]["stable_version"] == "1"
    # once ready, a model synced later warms up while the others serve: the replica stays in its Service
    publish_bundle(store, tmp_path / "models" / "dns-v1.pt", model_name="auth-logs", version="1",
                   features=DNS_FEATURES, threshold=DNS_THRESHOLD, gate_verdict="pass", key=key)
    write_desired(store, next_desired(None, "auth-logs", stable_version="1"), key)
    assert node.discover() == ["auth-logs"]
    assert node.ready() and node.readiness()["models"]["auth-logs"]["warming_up"] is True
    node.models["auth-logs"].reconcile()
    assert node.readiness()["models"]["auth-logs"] == {**node.readiness()["models"]["auth-logs"], "ready": True,
                                                       "warming_up": False, "stable_version": "1"}


def test_a_model_this_node_trusted_before_a_restart_is_served_even_when_the_store_lost_it(node_settings, store,
                                                                                         key, two_models):
    from serving.app import Node

    first = Node(node_settings, REGION, store, key)
    first.discover()
    for server in first.models.values():
        assert server.reconcile().outcome == "applied"
    (store.root / "desired" / f"{DNS}.json").unlink()  # the store lost the model's document
    again = Node(node_settings, REGION, store, key)
    assert set(again.models) == {MODEL, DNS}
    result = again.models[DNS].reconcile()
    assert result.outcome == "refused" and result.refusal.reason == "desired-state-missing"
    assert again.models[DNS].state.serving is not None  # the last verified state, from disk
    assert again.models[DNS].state.degraded is not None


def test_the_new_paths_need_the_scopes_of_the_old_ones(tmp_path, store, key, node_factory, two_models):
    tokens = {name: new_token() for name in ("scorer", "reader", "ops")}
    entries = [yaml.safe_load(config_line(name, tokens[name], scopes))[0]
               for name, scopes in (("scorer", ["score"]), ("reader", ["read"]), ("ops", ["read", "admin"]))]
    settings = load_settings(home=tmp_path / "home", serving={"poll_interval_s": 30.0, "auth": {"tokens": entries}})
    auth = {name: {"Authorization": f"Bearer {t}"} for name, t in tokens.items()}
    event = {"events": dns_events(1).tolist()}
    with node_factory(settings=settings) as n:
        n.wait_ready()
        cases = [("POST", f"/v1/models/{DNS}/score", "score"), ("POST", "/v1/models/nope/score", "score"),
                 ("GET", f"/v1/models/{DNS}/stats", "read"), ("GET", f"/v1/models/{DNS}/recent", "read"),
                 ("GET", f"/v1/models/{DNS}", "read"), ("GET", "/v1/models/nope", "read"),
                 ("POST", f"/admin/reload?model={DNS}", "admin")]
        for method, path, scope in cases:
            r = n.client.request(method, path, json=event if method == "POST" else None)
            assert r.status_code == 401 and r.json()["required_scope"] == scope, (path, r.text)
        assert n.client.post(f"/v1/models/{DNS}/score", json=event, headers=auth["reader"]).status_code == 403
        assert n.client.post("/v1/models/nope/score", json=event, headers=auth["reader"]).status_code == 403
        assert n.client.get(f"/v1/models/{DNS}/stats", headers=auth["scorer"]).status_code == 403
        assert n.client.post(f"/admin/reload?model={DNS}", headers=auth["reader"]).status_code == 403
        assert n.client.post(f"/v1/models/{DNS}/score", json=event, headers=auth["scorer"]).status_code == 200
        assert n.client.post("/v1/models/nope/score", json=event, headers=auth["scorer"]).status_code == 404
        assert n.client.get(f"/v1/models/{DNS}/stats", headers=auth["reader"]).status_code == 200
        assert n.client.post(f"/admin/reload?model={DNS}", headers=auth["ops"]).status_code == 200
        metrics = n.client.get("/metrics").text
    assert 'ebmops_node_client_events_total{client="scorer"} 1.0' in metrics


def test_the_control_plane_addresses_the_model_its_settings_name(tmp_path, node_factory, two_models, store, key):
    from ebmops.adapters.nodes import fetch_recent, generation_floors, node_reports, node_stats
    from ebmops.adapters.rollout_ports import RegionTraffic

    with node_factory() as n:
        n.wait_ready()
        n.client.post(f"/v1/models/{DNS}/score", json={"events": dns_events(30).tolist()})
        desire_dns(store, key, "1")  # generation 2, same versions
        dns = load_settings(home=tmp_path / "cp", registry={"model_name": DNS},
                            serving={"node_urls": {REGION: n.url}})
        default = load_settings(home=tmp_path / "cp", serving={"node_urls": {REGION: n.url}})
        rep = node_reports(dns, [REGION], reload=True)[REGION]
        assert rep.reachable and (rep.stable_version, rep.generation) == ("1", 2)
        assert node_reports(default, [REGION])[REGION].generation == 1
        assert generation_floors(dns, [REGION]) == {REGION: 2} and generation_floors(default, [REGION]) == {REGION: 1}
        stats = node_stats(dns, REGION)
        assert stats["model"] == DNS and stats["by_version"]["1"]["events"] == 30
        frame = __import__("pandas").read_parquet(fetch_recent(dns, REGION, 10, tmp_path / "recent.parquet"))
        assert list(frame.columns) == [*DNS_FEATURES, "energy"] and len(frame) == 10
        samples = RegionTraffic(dns).samples(REGION)
        assert samples["1"].events == 30
        # a model the node does not serve (yet): reachable, serving nothing of it, and why
        other = load_settings(home=tmp_path / "cp", registry={"model_name": "auth-logs"},
                              serving={"node_urls": {REGION: n.url}})
        rep = node_reports(other, [REGION])[REGION]
        assert rep.reachable and rep.stable_version is None and "not served" in rep.last_error
        assert generation_floors(other, [REGION]) == {REGION: 0}


def test_polls_list_the_store_once_an_interval_and_a_reload_at_once(tmp_path, store, key, node_factory):
    """A LIST is the dearest S3 request: polls list the store's models once a discover interval, while a
    reload (what a sync sends) finds a new model at once."""
    from ebmops.core.waiting import wait_until

    publish(store, key, tmp_path, "1")
    set_desired(store, key, "1")
    calls: list[str] = []
    real_list, real_get = store.list, store.get_bytes
    store.list = lambda prefix="": (calls.append("list " + prefix), real_list(prefix))[1]
    store.get_bytes = lambda k: (calls.append("get " + k), real_get(k))[1]
    settings = load_settings(home=tmp_path / "home", serving={"poll_interval_s": 0.02, "discover_interval_s": 3600})
    with node_factory(settings=settings) as n:
        n.wait_ready()
        publish_dns(store, key, tmp_path, "1")
        desire_dns(store, key, "1")
        polls = calls.count("get " + desired_key(MODEL))
        # twenty more polls (each reads the default model's desired state) after the new model's document
        wait_until(lambda: calls.count("get " + desired_key(MODEL)) >= polls + 20, timeout_s=30, what="20 polls")
        assert calls.count("list desired/") == 1, calls[:10]  # the node's start only
        assert n.client.get(f"/v1/models/{DNS}").status_code == 404
        assert n.client.post("/admin/reload").status_code == 200
        assert calls.count("list desired/") == 2 and n.client.get(f"/v1/models/{DNS}").status_code == 200


def test_the_poll_loop_picks_up_a_model_synced_later(tmp_path, store, key, node_factory):
    publish(store, key, tmp_path, "1")
    set_desired(store, key, "1")
    settings = load_settings(home=tmp_path / "home", serving={"poll_interval_s": 0.1, "discover_interval_s": 0.1})
    with node_factory(settings=settings) as n:
        n.wait_ready()
        publish_dns(store, key, tmp_path, "1")
        desire_dns(store, key, "1")
        deadline = time.monotonic() + 20
        while n.client.get(f"/v1/models/{DNS}").status_code == 404:
            assert time.monotonic() < deadline, "the poll loop did not find the new model"
            time.sleep(0.05)
        while not n.client.get(f"/v1/models/{DNS}").json()["ready"]:
            assert time.monotonic() < deadline, "the new model did not load"
            time.sleep(0.05)
        assert n.client.get("/readyz").status_code == 200
        r = n.client.post(f"/v1/models/{DNS}/score", json={"events": dns_events(2).tolist()})
        assert r.status_code == 200 and r.json()["versions"] == ["1", "1"]


def test_each_model_has_its_own_canary_split_salted_with_its_name(node_factory, two_models, store, key, tmp_path):
    from serving.router import bucket

    publish_dns(store, key, tmp_path, "2")
    write_desired(store, next_desired(read_desired(store, DNS, key), DNS, stable_version="1", canary_version="2",
                                      canary_weight=0.5), key)
    keys = [f"host-{i}" for i in range(40)]
    with node_factory() as n:
        n.wait_ready()
        r = n.client.post(f"/v1/models/{DNS}/score", json={"events": dns_events(40).tolist(), "keys": keys})
        assert r.json()["versions"] == ["2" if bucket(k, DNS) < 0.5 else "1" for k in keys]
        assert 0 < r.json()["versions"].count("2") < 40  # both versions seen: the test can tell them apart
        default = n.score(np.zeros((40, len(FEATURES)), np.float32), keys=keys).json()
        assert default["versions"] == ["1"] * 40  # the default model has no canary
        listing = {m["model"]: m for m in n.client.get("/v1/models").json()["models"]}
        assert listing[DNS]["weights"] == {"1": 0.5, "2": 0.5} and listing[MODEL]["weights"] == {"1": 1.0}
        by_version = n.client.get(f"/v1/models/{DNS}/stats").json()["by_version"]
        assert by_version["1"]["events"] + by_version["2"]["events"] == 40
