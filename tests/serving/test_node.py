"""A real node over HTTP: serving a signed bundle, readiness, reload, stats and metrics."""

from __future__ import annotations

import time

import numpy as np

from tests.registry.sync_fixtures import FEATURES
from tests.serving.conftest import MODEL, THRESHOLDS, metric_samples, publish, set_desired, torch_energies


def test_node_serves_the_published_version(node_factory, store, key, tmp_path):
    path = publish(store, key, tmp_path, "1")
    set_desired(store, key, "1")
    x = np.random.default_rng(0).normal(0, 2, size=(300, len(FEATURES))).astype(np.float32)
    with node_factory() as n:
        ready = n.wait_ready()
        assert (ready["generation"], ready["stable_version"], ready["versions"]) == (1, "1", {"1": "stable"})
        assert n.client.get("/healthz").json()["status"] == "alive"
        r = n.score(x)
        assert r.status_code == 200, r.text
        body = r.json()
    expected = torch_energies(path, x)
    np.testing.assert_allclose(np.array(body["energies"], dtype=np.float32), expected, rtol=1e-6)
    assert body["anomaly"] == (expected > THRESHOLDS["1"]).tolist()
    assert 0 < sum(body["anomaly"]) < len(x)  # the test would not see a wrong comparison otherwise
    assert body["versions"] == ["1"] * len(x) and body["generation"] == 1


def test_named_features_give_the_same_energies(node_factory, store, key, tmp_path):
    path = publish(store, key, tmp_path, "1")
    set_desired(store, key, "1")
    x = np.random.default_rng(1).normal(size=(5, len(FEATURES))).astype(np.float32)
    events = [{f: float(v) for f, v in reversed(list(zip(FEATURES, row)))} for row in x]  # order does not matter
    with node_factory() as n:
        n.wait_ready()
        body = n.score(events).json()
    np.testing.assert_allclose(body["energies"], torch_energies(path, x), rtol=1e-6)


def test_not_ready_until_a_model_is_loaded(node_factory, store, key, tmp_path):
    x = [[0.0] * len(FEATURES)]
    with node_factory() as n:
        assert n.client.get("/healthz").status_code == 200
        r = n.client.get("/readyz")
        assert r.status_code == 503 and r.json()["ready"] is False
        r = n.score(x)
        assert r.status_code == 503 and r.json()["error"] == "no model loaded"
        assert r.headers["retry-after"] == "1" and r.headers["content-type"] == "application/json"
        reload = n.client.post("/admin/reload")
        assert reload.status_code == 409 and "no desired state" in reload.json()["reason"]

        publish(store, key, tmp_path, "1")
        set_desired(store, key, "1")
        reload = n.client.post("/admin/reload")
        assert reload.status_code == 200, reload.text
        assert reload.json()["outcome"] == "applied" and reload.json()["loaded"] == ["1"]
        assert n.client.get("/readyz").status_code == 200
        assert n.score(x).json()["versions"] == ["1"]
        again = n.client.post("/admin/reload").json()
        assert again["outcome"] == "unchanged" and again["loaded"] == []


def test_the_fastapi_route_answers_as_the_asgi_handler_does(node_factory):
    """POST /score reaches FastAPI's route only when NodeApp's handler does not see it (the app
    mounted under a prefix); both answer through Node.handle_score, alike."""
    import asyncio

    import httpx
    from fastapi import FastAPI

    with node_factory() as n:  # no model: the 503 answer needs no micro-batcher (another loop's)
        app = n.app

        async def both():
            direct = httpx.ASGITransport(app=app)
            via_fastapi = httpx.ASGITransport(app=lambda scope, receive, send: FastAPI.__call__(app, scope, receive,
                                                                                                   send))
            out = []
            for transport in (direct, via_fastapi):
                async with httpx.AsyncClient(transport=transport, base_url="http://node") as c:
                    out.append(await c.post("/score", json={"events": [[0.0] * len(FEATURES)]}))
            return out

        a, b = asyncio.run(both())
        assert a.status_code == b.status_code == 503 and a.content == b.content
        assert a.headers["retry-after"] == b.headers["retry-after"] == "1"
        assert a.headers["content-type"] == b.headers["content-type"] == "application/json"
        samples = metric_samples(n.client.get("/metrics").text)
    assert samples[("ebmops_node_requests_total", (("status", "503"),))] == 2


def test_the_poll_loop_applies_a_new_desired_state(node_factory, node_settings, store, key, tmp_path):
    publish(store, key, tmp_path, "1")
    set_desired(store, key, "1")
    settings = node_settings.model_copy(update={"serving": node_settings.serving.model_copy(
        update={"poll_interval_s": 0.1})})
    with node_factory(settings=settings) as n:
        n.wait_ready()
        publish(store, key, tmp_path, "2")
        set_desired(store, key, "2")
        for _ in range(200):
            if n.client.get("/readyz").json()["stable_version"] == "2":
                break
            time.sleep(0.05)
        assert n.score([[0.0] * len(FEATURES)]).json()["versions"] == ["2"]


def test_metrics_and_stats(node_factory, node_settings, store, key, tmp_path):
    publish(store, key, tmp_path, "1")
    publish(store, key, tmp_path, "2")
    set_desired(store, key, "1", canary="2", weight=0.5)
    window = node_settings.serving.stats_window
    rng = np.random.default_rng(2)
    with node_factory() as n:
        n.wait_ready()
        sent = {"1": 0, "2": 0}
        for i in range(12):
            body = n.score(rng.normal(size=(20, len(FEATURES))), keys=[f"k{i}-{j}" for j in range(20)]).json()
            for v in body["versions"]:
                sent[v] += 1
        n.score([[1.0]])  # one 422
        stats = n.client.get("/stats").json()
        samples = metric_samples(n.client.get("/metrics").text)

    assert sent["1"] > 0 and sent["2"] > 0
    assert (stats["region"], stats["generation"], stats["stable_version"], stats["canary_version"]) == \
        ("eu-west", 1, "1", "2")
    assert stats["canary_weight"] == 0.5 and stats["stats_window"] == window and stats["last_error"] is None
    for v in ("1", "2"):
        s = stats["by_version"][v]
        assert s["events"] == sent[v] and s["requests"] == 12
        assert len(s["energies"]) == min(window, sent[v]) and len(s["latency_ms"]) == 12
        assert all(lat > 0 for lat in s["latency_ms"])

    assert samples[("ebmops_node_requests_total", (("status", "200"),))] == 12
    assert samples[("ebmops_node_requests_total", (("status", "422"),))] == 1
    assert samples[("ebmops_node_errors_total", (("kind", "invalid-input"),))] == 1
    for v in ("1", "2"):
        assert samples[("ebmops_node_events_total", (("version", v),))] == sent[v]
        assert samples[("ebmops_node_event_energy_count", (("version", v),))] == sent[v]
        assert samples[("ebmops_node_event_energy_bucket", (("le", "+Inf"), ("version", v)))] == sent[v]
    assert samples[("ebmops_node_loaded_version_info", (("role", "stable"), ("version", "1")))] == 1
    assert samples[("ebmops_node_loaded_version_info", (("role", "canary"), ("version", "2")))] == 1
    assert samples[("ebmops_node_desired_generation", ())] == 1
    assert samples[("ebmops_node_request_seconds_count", ())] == 13


def test_stats_are_bounded_by_the_window(node_factory, node_settings, store, key, tmp_path):
    publish(store, key, tmp_path, "1")
    set_desired(store, key, "1")
    window = node_settings.serving.stats_window
    with node_factory() as n:
        n.wait_ready()
        for _ in range(window + 5):
            n.score([[0.5] * len(FEATURES)] * 3)
        s = n.client.get("/stats").json()["by_version"]["1"]
    assert s["requests"] == window + 5 and s["events"] == 3 * (window + 5)
    assert len(s["latency_ms"]) == window and len(s["energies"]) == window


def test_model_name_comes_from_settings(node_factory, store, key, tmp_path):
    with node_factory() as n:
        assert n.client.get("/stats").json()["model"] == MODEL


def test_an_unexpected_failure_is_a_counted_500_and_the_node_carries_on(node_factory, store, key, tmp_path,
                                                                        monkeypatch):
    publish(store, key, tmp_path, "1")
    set_desired(store, key, "1")
    with node_factory() as n:
        n.wait_ready()
        real = n.node.batcher.score
        calls = {"n": 0}

        async def flaky(model, x):
            calls["n"] += 1
            if calls["n"] == 1:
                raise MemoryError("simulated")
            return await real(model, x)

        monkeypatch.setattr(n.node.batcher, "score", flaky)
        r = n.score([[0.0] * len(FEATURES)])
        assert r.status_code == 500 and r.json()["error"] == "internal error" and "MemoryError" in r.json()["reason"]
        assert n.score([[0.0] * len(FEATURES)]).status_code == 200
        samples = metric_samples(n.client.get("/metrics").text)
    assert samples[("ebmops_node_errors_total", (("kind", "internal"),))] == 1
    assert samples[("ebmops_node_requests_total", (("status", "500"),))] == 1
