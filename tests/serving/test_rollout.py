"""Canary traffic split and hot swaps on a live node."""

from __future__ import annotations

import threading
import time

import numpy as np

from tests.registry.sync_fixtures import FEATURES
from tests.serving.conftest import publish, set_desired, torch_energies


def test_the_canary_split_is_sticky_by_key(node_factory, store, key, tmp_path):
    p1 = publish(store, key, tmp_path, "1")
    p2 = publish(store, key, tmp_path, "2")
    set_desired(store, key, "1", canary="2", weight=0.3)
    keys = [f"user-{i}" for i in range(2000)]
    x = np.random.default_rng(3).normal(size=(2000, len(FEATURES))).astype(np.float32)
    with node_factory() as n:
        n.wait_ready()
        first = n.score(x, keys=keys).json()
        order = np.random.default_rng(4).permutation(2000)
        chunks = [n.score(x[idx], keys=[keys[i] for i in idx]).json() for idx in np.array_split(order, 7)]
        unkeyed = n.score(x).json()
    versions = np.array(first["versions"])
    canary_share = float((versions == "2").mean())
    assert abs(canary_share - 0.3) < 0.04, canary_share
    again = np.empty(2000, dtype=object)
    for idx, body in zip(np.array_split(order, 7), chunks):
        again[idx] = body["versions"]
    assert (again == versions).all()  # the same key gets the same version in every request
    # Each event was scored by the version it reports.
    energies = np.array(first["energies"], dtype=np.float32)
    on2 = versions == "2"
    np.testing.assert_allclose(energies[on2], torch_energies(p2, x[on2]), rtol=1e-6)
    np.testing.assert_allclose(energies[~on2], torch_energies(p1, x[~on2]), rtol=1e-6)
    # Events without keys are split at random with the same weight.
    assert abs(np.mean(np.array(unkeyed["versions"]) == "2") - 0.3) < 0.06


def test_raising_the_weight_keeps_canary_keys_on_the_canary(node_factory, store, key, tmp_path):
    publish(store, key, tmp_path, "1")
    publish(store, key, tmp_path, "2")
    set_desired(store, key, "1", canary="2", weight=0.2)
    keys = [f"k{i}" for i in range(1000)]
    x = np.zeros((1000, len(FEATURES)))
    with node_factory() as n:
        n.wait_ready()
        before = np.array(n.score(x, keys=keys).json()["versions"]) == "2"
        set_desired(store, key, "1", canary="2", weight=0.5)
        assert n.client.post("/admin/reload").json()["loaded"] == []  # both versions already loaded
        after = np.array(n.score(x, keys=keys).json()["versions"]) == "2"
    assert after[before].all() and after.sum() > before.sum()


def test_hot_swap_under_load_fails_no_request(node_factory, store, key, tmp_path):
    publish(store, key, tmp_path, "1")
    set_desired(store, key, "1")
    x = np.random.default_rng(5).normal(size=(32, len(FEATURES))).tolist()
    results: list[tuple[float, int, set]] = []
    failures: list[str] = []
    stop = threading.Event()

    with node_factory() as n:
        n.wait_ready()

        def client():
            import httpx

            with httpx.Client(base_url=n.url, timeout=10) as c:
                while not stop.is_set():
                    t = time.monotonic()
                    try:
                        r = c.post("/score", json={"events": x})
                        if r.status_code != 200:
                            failures.append(f"{r.status_code}: {r.text}")
                            continue
                        results.append((t, r.json()["generation"], set(r.json()["versions"])))
                    except Exception as e:  # noqa: BLE001 - any failure fails the test
                        failures.append(repr(e))

        def answered(generation: int, n_requests: int = 10) -> None:
            """Wait until the clients got ``n_requests`` answers from ``generation`` (or one failed)."""
            deadline = time.monotonic() + 60
            while sum(g == generation for _, g, _ in list(results)) < n_requests and not failures:
                assert time.monotonic() < deadline, f"no {n_requests} answers from generation {generation}"
                time.sleep(0.02)

        threads = [threading.Thread(target=client) for _ in range(3)]
        for t in threads:
            t.start()
        answered(1)
        publish(store, key, tmp_path, "2")
        set_desired(store, key, "2")
        swap = n.client.post("/admin/reload")
        swapped_at = time.monotonic()
        answered(2)
        publish(store, key, tmp_path, "3")
        set_desired(store, key, "2", canary="3", weight=0.5)
        assert n.client.post("/admin/reload").status_code == 200
        answered(3)
        stop.set()
        for t in threads:
            t.join(timeout=20)

    assert swap.status_code == 200 and swap.json()["serving"]["stable_version"] == "2"
    assert failures == []
    gens = [g for _, g, _ in results]
    assert {1, 2, 3} <= set(gens) and len(results) > 30
    assert all(v == {"1"} for _, g, v in results if g == 1)
    assert all(v == {"2"} for _, g, v in results if g == 2)
    assert all(v <= {"2", "3"} for _, g, v in results if g == 3)
    assert all(g >= 2 for t, g, _ in results if t > swapped_at)  # sent after the swap: never the old version
