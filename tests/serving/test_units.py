"""Unit tests of the node's pure parts: router, batcher, reconciler, payload, stats rings, settings, CLI."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from ebmops.core.errors import BundleError, ConfigError
from serving.batcher import MicroBatcher
from serving.metrics import EnergyHistograms, Ring
from serving.payload import InputError, parse_score
from serving.router import bucket, route, route_random


# ---- router ---------------------------------------------------------------------------------
def test_bucket_is_deterministic_and_uniform():
    assert bucket("user-1") == bucket("user-1") and 0 <= bucket("user-1") < 1
    assert bucket("user-1", salt="a") != bucket("user-1", salt="b")
    b = np.array([bucket(f"u{i}") for i in range(20000)])
    assert abs(b.mean() - 0.5) < 0.01 and abs((b < 0.3).mean() - 0.3) < 0.015


def test_route_weights_and_stickiness():
    keys = [f"u{i}" for i in range(3000)]
    assert not route(keys, 0.0).any() and route(keys, 1.0).all()
    m = route(keys, 0.3, salt="m")
    assert (m == route(list(reversed(keys)), 0.3, salt="m")[::-1]).all()
    assert abs(m.mean() - 0.3) < 0.03
    assert route(keys, 0.6, salt="m")[m].all()  # monotone in the weight
    mixed = route(["a", None, "b", None], 0.5, rng=np.random.default_rng(0))
    assert mixed[0] == (bucket("a") < 0.5) and mixed[2] == (bucket("b") < 0.5)


def test_route_random_share():
    rng = np.random.default_rng(1)
    assert route_random(0, 0.5).shape == (0,)
    assert abs(route_random(20000, 0.25, rng).mean() - 0.25) < 0.01
    assert not route_random(10, 0.0).any() and route_random(10, 1.0).all()


# ---- batcher --------------------------------------------------------------------------------
class FakeModel:
    def __init__(self, version: str, offset: float = 0.0, fail: bool = False, delay: float = 0.0):
        self.version, self.offset, self.fail, self.delay = version, offset, fail, delay
        self.calls: list[int] = []
        self.threads: set[str] = set()

    def score(self, x: np.ndarray) -> np.ndarray:
        self.threads.add(threading.current_thread().name)
        self.calls.append(len(x))
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("boom")
        return x.sum(axis=1).astype(np.float32) + self.offset


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_are_batched_and_split_back():
    async def main():
        b = MicroBatcher(max_events=1000, wait_ms=5.0)
        await b.start()
        m = FakeModel("1")
        xs = [np.full((i + 1, 3), float(i), dtype=np.float32) for i in range(20)]
        outs = await asyncio.gather(*(b.score(m, x) for x in xs))
        await b.stop()
        return m, xs, outs

    m, xs, outs = run(main())
    for x, out in zip(xs, outs):
        np.testing.assert_array_equal(out, x.sum(axis=1))
    assert sum(m.calls) == sum(len(x) for x in xs) and len(m.calls) < 5
    assert all(name.startswith("ebm-score") for name in m.threads)  # never on the event loop thread


def test_batches_stop_gathering_at_max_events():
    async def main():
        b = MicroBatcher(max_events=10, wait_ms=0)
        await b.start()
        m = FakeModel("1")
        await asyncio.gather(*(b.score(m, np.ones((4, 2), dtype=np.float32)) for _ in range(9)))
        await b.stop()
        return m

    m = run(main())
    assert sum(m.calls) == 36 and max(m.calls) <= 12


def test_each_request_is_scored_by_the_model_it_captured():
    """Requests for two versions in one batch (a swap mid-flight) each get their own model's result."""
    async def main():
        b = MicroBatcher(max_events=1000, wait_ms=5.0)
        await b.start()
        old, new = FakeModel("1", offset=0.0, delay=0.01), FakeModel("2", offset=100.0)
        x = np.ones((2, 2), dtype=np.float32)
        outs = await asyncio.gather(*(b.score(old if i % 2 else new, x) for i in range(10)))
        await b.stop()
        return outs

    for i, out in enumerate(run(main())):
        assert (out == (2.0 if i % 2 else 102.0)).all()


def test_a_failing_model_fails_only_its_requests():
    async def main():
        b = MicroBatcher(max_events=1000, wait_ms=2.0)
        await b.start()
        good, bad = FakeModel("1"), FakeModel("2", fail=True)
        x = np.ones((1, 2), dtype=np.float32)
        outs = await asyncio.gather(b.score(good, x), b.score(bad, x), b.score(good, x), return_exceptions=True)
        after = await b.score(good, x)  # the worker survived
        await b.stop()
        return outs, after

    outs, after = run(main())
    assert isinstance(outs[1], RuntimeError) and (outs[0] == 2).all() and (outs[2] == 2).all() and (after == 2).all()


def test_a_lone_request_does_not_wait_for_stragglers():
    async def main():
        b = MicroBatcher(max_events=1000, wait_ms=500.0)
        await b.start()
        m = FakeModel("1")
        t0 = time.perf_counter()
        out = await b.score(m, np.ones((3, 2), dtype=np.float32))
        lone_s = time.perf_counter() - t0
        # Concurrent requests do wait (the wait is what gathers them), and are batched.
        t0 = time.perf_counter()
        await asyncio.gather(*(b.score(m, np.ones((1, 2), dtype=np.float32)) for _ in range(5)))
        crowd_s = time.perf_counter() - t0
        await b.stop()
        return out, lone_s, crowd_s, m

    out, lone_s, crowd_s, m = run(main())
    assert (out == 2).all() and lone_s < 0.25 and crowd_s >= 0.45
    assert m.calls == [3, 5]


def test_a_small_request_on_a_quiet_node_is_scored_on_the_event_loop():
    async def main():
        b = MicroBatcher(max_events=1000, wait_ms=1.0, inline_max_events=4, inline_idle_ms=50.0)
        await b.start()
        m = FakeModel("1")
        await asyncio.sleep(0.06)
        quiet = await b.score(m, np.ones((2, 2), dtype=np.float32))  # quiet: scored at once, on the loop
        loop_only = set(m.threads)
        soon = await b.score(m, np.ones((2, 2), dtype=np.float32))  # right after another: the batcher
        await asyncio.sleep(0.06)
        big = await b.score(m, np.ones((5, 2), dtype=np.float32))  # too many events: the batcher
        await asyncio.sleep(0.06)
        crowd = await asyncio.gather(*(b.score(m, np.ones((1, 2), dtype=np.float32)) for _ in range(6)))
        await asyncio.sleep(0.06)
        bad = FakeModel("2", fail=True)
        with pytest.raises(RuntimeError, match="boom"):  # an inline failure fails that request only
            await b.score(bad, np.ones((1, 2), dtype=np.float32))
        await b.stop()
        return m, quiet, soon, big, crowd, loop_only, b.batches

    m, quiet, soon, big, crowd, loop_only, batches = run(main())
    assert loop_only == {threading.current_thread().name}
    assert any(name.startswith("ebm-score") for name in m.threads)
    assert (quiet == 2).all() and (soon == 2).all() and (big == 2).all() and all((c == 2).all() for c in crowd)
    assert m.calls[:3] == [2, 2, 5] and sum(m.calls) == 15
    assert m.calls[3] == 1 and m.calls[4] == 5  # the first of the crowd found it quiet, the rest were batched
    assert batches == len(m.calls)


def test_score_before_start_is_a_clear_error():
    with pytest.raises(RuntimeError, match="not running"):
        run(MicroBatcher().score(FakeModel("1"), np.ones((1, 1), dtype=np.float32)))


# ---- reconciler -----------------------------------------------------------------------------
def fake_loaded(version: str):
    from datetime import datetime, timezone

    from serving.model import LoadedModel

    return LoadedModel(version=version, manifest=None, features=("a",), threshold=1.0, module=None,
                       loaded_at=datetime.now(timezone.utc))


def test_reconcile_is_idempotent_and_retries_a_failed_generation(store, key, tmp_path):
    from registry.desired_state import next_desired, read_desired, write_desired
    from serving.metrics import NodeMetrics
    from serving.state import NodeState, Reconciler
    from tests.serving.conftest import MODEL, publish

    for v in ("1", "2", "3"):
        publish(store, key, tmp_path, v)
    loads: list[str] = []
    broken = {"2"}

    def loader(version):
        loads.append(version)
        if version in broken:
            raise BundleError("bad", reason="blob-hash-mismatch", model=MODEL, version=version)
        return fake_loaded(version)

    def desire(stable, canary=None, weight=0.0):
        write_desired(store, next_desired(read_desired(store, MODEL, key), MODEL, stable_version=stable,
                                          canary_version=canary, canary_weight=weight), key)

    state = NodeState("eu-west", MODEL)
    metrics = NodeMetrics("eu-west").model(MODEL)
    rec = Reconciler(state, store, key, install_dir=tmp_path / "inst", metrics=metrics, loader=loader)
    assert rec.reconcile().outcome == "no-desired-state" and state.serving is None
    desire("1")
    assert rec.reconcile().outcome == "applied" and rec.reconcile().outcome == "unchanged"
    assert loads == ["1"]
    first = state.serving

    desire("1", canary="2", weight=0.1)
    r = rec.reconcile()
    assert r.outcome == "refused" and r.refusal.reason == "blob-hash-mismatch" and state.serving is first
    assert rec.reconcile().outcome == "refused" and loads == ["1", "2", "2"]  # retried on the next poll
    broken.clear()
    r = rec.reconcile()
    assert r.outcome == "applied" and r.loaded == ("2",) and state.last_error is None
    assert state.serving.stable is first.stable  # the stable model object is reused, not reloaded
    assert state.serving.roles() == {"1": "stable", "2": "canary"} and state.serving.canary_weight == 0.1

    desire("3")
    rec.reconcile()
    assert state.serving.models().keys() == {"3"}  # at most stable + canary stay loaded
    assert metrics.load_failures.labels(reason="blob-hash-mismatch")._value.get() == 2


def test_load_verified_refuses_a_file_that_is_not_torchscript(store, key, tmp_path):
    from registry.bundle import publish_bundle
    from serving.model import ModelLoadError, load_verified
    from tests.serving.conftest import MODEL

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    publish_bundle(store, junk, model_name=MODEL, version="7", features=["a"], threshold=1.0, gate_verdict="pass",
                   key=key)
    with pytest.raises(ModelLoadError) as info:
        load_verified(store, MODEL, "7", key, tmp_path / "inst")
    assert info.value.reason == "model-unloadable" and isinstance(info.value, BundleError)


def test_load_verified_returns_a_warm_model(store, key, tmp_path):
    from serving.model import load_verified
    from tests.registry.sync_fixtures import FEATURES
    from tests.serving.conftest import MODEL, THRESHOLDS, publish, torch_energies

    path = publish(store, key, tmp_path, "1")
    m = load_verified(store, MODEL, "1", key, tmp_path / "inst", tmp_path / "cache")
    assert (m.version, m.features, m.threshold) == ("1", tuple(FEATURES), THRESHOLDS["1"])
    x = np.random.default_rng(0).normal(size=(6, len(FEATURES))).astype(np.float32)
    out = m.score(x)
    assert out.dtype == np.float32 and out.shape == (6,)
    np.testing.assert_array_equal(out, torch_energies(path, x))


# ---- payload --------------------------------------------------------------------------------
def test_parse_score_fast_and_slow_paths_agree():
    import orjson

    schema = ["a", "b", "c"]
    rows = [[1, 2.5, -3], [0.0, 1e-3, 7]]
    fast = parse_score(orjson.dumps({"events": rows}), schema, max_events=10)
    slow = parse_score(orjson.dumps({"events": [dict(zip(schema, r)) for r in rows], "keys": ["x", None]}),
                       schema, max_events=10)
    assert fast.x.dtype == np.float32 and fast.x.shape == (2, 3) and fast.keys is None
    np.testing.assert_array_equal(fast.x, slow.x)
    assert slow.keys == ["x", None]


def test_parse_score_numbers_only_fast_path_refuses_what_it_must():
    import orjson

    schema = ["a", "b", "c"]
    for body in (b'{"events": [[1, 2, 3], [4, 5.5, -6e2]]}', b'{"events":[[1,2,3],[4,5.5,-6e2]]}',
                 b'{"events": [[1, 2, 3], [4, 5.5, -6e2]], "keys": ["k", null]}'):
        got = parse_score(body, schema, max_events=10)
        assert got.x.dtype == np.float32 and got.x.tolist() == [[1, 2, 3], [4, 5.5, -600]], body
    cases = [  # (body, field, words): each would be a number matrix to a careless numpy call
        ({"events": [[[1], 2, 3]]}, "events[0][0]", "a list"),
        ({"events": [[1, 2, 3], 4]}, "events[1]", "an event is a list"),
        ({"events": [[1, 2, 3], [1, 2]]}, "events[1]", "has 2 values"),
        ({"events": [[1, 2, True]]}, "events[0][2]", "a boolean"),
        ({"events": [[1, False, 3]]}, "events[0][1]", "a boolean"),
        ({"events": [[None, 2, 3]]}, "events[0][0]", "null"),
        ({"events": [[1, "2", 3]]}, "events[0][1]", "a string"),
        ({"events": [[1, 2, 3], [1, 2, True]], "keys": ["a", "b"]}, "events[1][2]", "a boolean"),
        ({"events": [[1, 2, 1e39]]}, "events[0][2]", "not a finite float32"),
    ]
    for body, field, words in cases:
        with pytest.raises(InputError) as info:
            parse_score(orjson.dumps(body), schema, max_events=10)
        assert info.value.status == 422 and info.value.field == field and words in info.value.reason, body
    with pytest.raises(InputError) as info:  # an integer beyond double range (orjson cannot write it)
        parse_score(b'{"events": [[1, 2, ' + b"9" * 400 + b"]]}", schema, max_events=10)
    assert info.value.status in (400, 422)


def test_parse_score_with_a_canary_that_adds_features():
    import orjson

    with pytest.raises(InputError) as info:
        parse_score(orjson.dumps({"events": [[1, 2]]}), ["a", "b", "c"], max_events=10, positional=2)
    assert info.value.field == "events[0]" and "objects keyed by feature name" in info.value.reason
    ok = parse_score(orjson.dumps({"events": [{"a": 1, "b": 2, "c": 3}]}), ["a", "b", "c"], max_events=10,
                     positional=2)
    assert ok.x.tolist() == [[1, 2, 3]]


# ---- stats and metrics internals ----------------------------------------------------------------
def test_ring_keeps_the_last_values_in_order():
    r = Ring(5)
    assert r.values().tolist() == [] and len(r) == 0
    r.extend(np.array([1, 2, 3]))
    assert r.values().tolist() == [1, 2, 3]
    r.extend(np.array([4, 5, 6, 7]))
    assert r.values().tolist() == [3, 4, 5, 6, 7] and len(r) == 5
    r.extend(np.arange(10, 22))
    assert r.values().tolist() == [17, 18, 19, 20, 21]
    r.extend(np.array([99]))
    assert r.values().tolist() == [18, 19, 20, 21, 99]


def test_energy_histogram_buckets_are_cumulative_le():
    h = EnergyHistograms(buckets=[1.0, 2.0])
    h.observe("1", np.array([0.5, 1.0, 1.5, 3.0, np.nan]))
    fam = next(h.collect())
    got = {(s.name, s.labels.get("le")): s.value for s in fam.samples}
    assert got[("ebmops_node_event_energy_bucket", "1.0")] == 2
    assert got[("ebmops_node_event_energy_bucket", "2.0")] == 3
    assert got[("ebmops_node_event_energy_bucket", "+Inf")] == 4
    assert got[("ebmops_node_event_energy_count", None)] == 4 and got[("ebmops_node_event_energy_sum", None)] == 6.0


def test_few_and_many_values_give_the_same_histogram_and_ring():
    values = np.array([0.5, 1.0, np.nan, np.inf, -np.inf, 1.5, 3.0, 1e-9], dtype=np.float32)
    few, many = EnergyHistograms(buckets=[1.0, 2.0]), EnergyHistograms(buckets=[1.0, 2.0])
    for v in values:  # one at a time: the per-value path
        few.observe("2", np.array([v], dtype=np.float32))
    many.observe("2", np.tile(values, 3))  # 24 values: the numpy path
    for v in values:
        few.observe("2", np.array([v, v], dtype=np.float32))
    samples = {}
    for h in (few, many):
        fam = next(h.collect())
        samples[id(h)] = {(s.name, s.labels["version"], s.labels.get("le")): s.value for s in fam.samples}
    assert samples[id(few)] == samples[id(many)]
    small, big = Ring(6), Ring(6)
    for chunk in np.array_split(np.arange(20.0), 7):
        small.extend(chunk)
    big.extend(np.arange(20.0))
    assert small.values().tolist() == big.values().tolist() == list(range(14, 20)) and len(small) == 6


# ---- settings and CLI -----------------------------------------------------------------------
def test_node_urls_and_ports(tmp_path):
    from ebmops.core.settings import load_settings

    s = load_settings(home=tmp_path, serving={"node_urls": {"ap-south": "http://node.ap:9000/"}})
    assert s.node_port("us-east") == 8101 and s.node_url("eu-west") == "http://127.0.0.1:8102"
    assert s.node_url("ap-south") == "http://node.ap:9000"
    assert s.node_install_dir("eu-west") == tmp_path.resolve() / "nodes" / "eu-west"
    with pytest.raises(ConfigError, match="us-east, eu-west, ap-south"):
        s.node_url("mars")


def test_cli_refuses_an_unknown_region(tmp_path, monkeypatch, capsys):
    import sys

    from ebmops.cli import context
    from ebmops.cli.main import main
    from ebmops.core.settings import get_settings

    monkeypatch.setenv("EBMOPS_HOME", str(tmp_path))
    monkeypatch.setattr(context, "prepare_environment", lambda s: None)  # leaves the session's environment alone
    monkeypatch.setattr(sys, "argv", ["ebmops", "node", "--region", "mars"])
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as info:
            main()
    finally:
        get_settings.cache_clear()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--region" in err and "mars" in err and "us-east, eu-west, ap-south" in err


def test_the_simdjson_path_reads_exactly_what_the_orjson_path_reads(monkeypatch):
    import orjson

    from serving import payload

    schema = ["a", "b", "c"]
    rng = np.random.default_rng(3)
    bodies = [orjson.dumps({"events": rng.normal(0, 1e3, size=(50, 3)).tolist()}),
              b'{"events":[[1,2,3],[-4,5e-3,6E2],[0,-0.0,1e30]]}',
              b'{ "events" : [ [1 , 2 , 3] ] }',
              orjson.dumps({"events": [[1, 2, 3]], "keys": ["k"]}),
              orjson.dumps({"events": [{"a": 1, "b": 2, "c": 3}]})]
    for body in bodies:
        fast = payload.parse_score(body, schema, max_events=100)
        with monkeypatch.context() as m:
            m.setattr(payload, "_simd_matrix", lambda *a: None)
            slow = payload.parse_score(body, schema, max_events=100)
        assert fast.x.dtype == slow.x.dtype == np.float32
        np.testing.assert_array_equal(fast.x, slow.x)
        assert fast.keys == slow.keys
    assert payload._simd_matrix(bodies[0], 3, 100) is not None  # the common body does take the fast path
    assert payload._simd_matrix(b'{"events":[[[1],2,3]]}', 3, 100) is None
    assert payload._simd_matrix(b'{"events":[[1,2,3,4],[5,6]]}', 3, 100) is None
    assert payload._simd_matrix(b'{"events":[[1,2,3]],"x":[1]}', 3, 100) is None
