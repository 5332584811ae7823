"""The binary /score body (Content-Type: application/x-ebmops-f32): raw little-endian float32 rows
in the stable's feature order. Same energies, refusals, metrics and recent events as JSON."""

from __future__ import annotations

import numpy as np
import pytest

from serving.payload import F32, InputError, parse_f32
from tests.registry.sync_fixtures import FEATURES
from tests.serving.conftest import THRESHOLDS, metric_samples, publish, set_desired, torch_energies

NF = len(FEATURES)
HDR = {"content-type": F32}


def f32(x) -> bytes:
    return np.ascontiguousarray(x, dtype="<f4").tobytes()


@pytest.fixture
def served(node_factory, store, key, tmp_path):
    path = publish(store, key, tmp_path, "1")
    set_desired(store, key, "1")
    with node_factory() as n:
        n.wait_ready()
        yield n, path


def test_binary_rows_score_as_the_json_rows_do(served):
    n, path = served
    x = np.random.default_rng(3).normal(0, 2, size=(300, NF)).astype(np.float32)
    assert n.client.get("/readyz").json()["features"] == list(FEATURES)
    as_json = n.score(x).json()
    r = n.client.post("/score", content=f32(x), headers=HDR)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    as_bin = r.json()
    assert as_bin["energies"] == as_json["energies"] and as_bin["anomaly"] == as_json["anomaly"]
    assert as_bin["versions"] == ["1"] * len(x) and as_bin["generation"] == 1
    np.testing.assert_allclose(np.array(as_bin["energies"], dtype=np.float32), torch_energies(path, x), rtol=1e-6)
    # Media-type parameters and case do not matter.
    again = n.client.post("/score", content=f32(x[:3]), headers={"content-type": "Application/X-EBMOPS-F32; v=1"})
    assert again.status_code == 200
    np.testing.assert_allclose(again.json()["energies"], as_json["energies"][:3], rtol=1e-5)  # batch size may vary
    # Counted and recorded like JSON requests: 3 requests, 603 events, the rows in /recent.
    samples = metric_samples(n.client.get("/metrics").text)
    assert samples[("ebmops_node_requests_total", (("status", "200"),))] == 3
    assert samples[("ebmops_node_events_total", (("version", "1"),))] == 603
    assert samples[("ebmops_node_event_energy_count", (("version", "1"),))] == 603
    stats = n.client.get("/stats").json()["by_version"]["1"]
    assert stats["requests"] == 3 and stats["events"] == 603
    recent = n.client.get("/recent", params={"n": 303}).json()
    np.testing.assert_allclose(np.array(recent["events"], dtype=np.float32), np.concatenate([x, x[:3]]), rtol=1e-6)


def test_binary_answer_on_request(served):
    n, _ = served
    x = np.random.default_rng(4).normal(0, 2, size=(50, NF)).astype(np.float32)
    as_json = n.score(x).json()
    r = n.client.post("/score", content=f32(x), headers={**HDR, "accept": F32})
    assert r.status_code == 200 and r.headers["content-type"] == F32
    e = np.frombuffer(r.content, dtype="<f4")
    assert e.tolist() == np.array(as_json["energies"], dtype=np.float32).tolist()
    assert r.headers["x-ebmops-versions"] == "1" and r.headers["x-ebmops-generation"] == "1"
    assert float(r.headers["x-ebmops-threshold"]) == THRESHOLDS["1"]
    assert (e > float(r.headers["x-ebmops-threshold"])).tolist() == as_json["anomaly"]
    # A JSON body may ask for a binary answer too.
    j = n.client.post("/score", json={"events": x.tolist()}, headers={"accept": F32})
    assert j.headers["content-type"] == F32 and j.content == r.content


def test_a_mixed_batch_answers_json_even_when_binary_is_asked_for(node_factory, store, key, tmp_path):
    publish(store, key, tmp_path, "1")
    publish(store, key, tmp_path, "2")
    set_desired(store, key, "1", canary="2", weight=0.5)
    x = np.random.default_rng(5).normal(size=(200, NF)).astype(np.float32)
    with node_factory() as n:
        n.wait_ready()
        r = n.client.post("/score", content=f32(x), headers={**HDR, "accept": F32})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert set(r.json()["versions"]) == {"1", "2"}  # split pseudo-randomly, like key-less JSON


def test_bad_binary_bodies_are_refused_with_their_field(served):
    n, _ = served
    row = np.full((1, NF), 0.5, dtype=np.float32)
    bad = np.repeat(row, 4, axis=0)
    bad[2, 5] = np.nan
    inf = row.copy()
    inf[0, 1] = -np.inf
    cases = [
        # (body, status, error, field, words in the reason)
        (f32(row)[:-1], 400, "bad body length", "body", f"row size {4 * NF} bytes"),
        (f32(row) + b"\0\0\0\0", 400, "bad body length", "body", f"{4 * NF + 4} bytes"),
        (b"", 422, "empty batch", "body", "no events"),
        (f32(np.repeat(row, 2501, axis=0)), 413, "batch too large", "body", "limit is 2500"),
        (f32(bad), 422, "non-finite value", "events[2][5]", "f5 is nan"),
        (f32(inf), 422, "non-finite value", "events[0][1]", "f1 is -inf"),
    ]
    for body, status, error, field, words in cases:
        r = n.client.post("/score", content=body, headers=HDR)
        assert r.status_code == status, (field, r.text)
        got = r.json()
        assert (got["error"], got["field"]) == (error, field) and words in got["reason"], got
        assert n.client.post("/score", content=f32(row), headers=HDR).status_code == 200  # unharmed
    samples = metric_samples(n.client.get("/metrics").text)
    assert samples[("ebmops_node_errors_total", (("kind", "bad-json"),))] == 2  # the 400s, as JSON's are counted
    assert samples[("ebmops_node_errors_total", (("kind", "too-large"),))] == 1
    assert samples[("ebmops_node_errors_total", (("kind", "invalid-input"),))] == 3
    assert samples[("ebmops_node_requests_total", (("status", "200"),))] == len(cases)
    assert n.client.get("/stats").json()["by_version"]["1"]["events"] == len(cases)


def test_other_content_types_are_parsed_as_json(served):
    n, _ = served
    row = [0.5] * NF
    import orjson

    for ct in ("text/plain", "application/octet-stream", "application/json; charset=utf-8"):
        r = n.client.post("/score", content=orjson.dumps({"events": [row]}), headers={"content-type": ct})
        assert r.status_code == 200 and r.json()["versions"] == ["1"], ct
    r = n.client.post("/score", content=f32([row]), headers={"content-type": "application/octet-stream"})
    assert r.status_code == 400 and r.json()["error"] == "malformed JSON"


def test_parse_f32_unit():
    schema = ["a", "b", "c"]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    req = parse_f32(f32(x), schema, max_events=10)
    assert req.keys is None and req.n == 2 and req.x.dtype == np.float32
    np.testing.assert_array_equal(req.x, x)
    # A canary needing features the stable's order lacks: binary rows cannot carry them.
    with pytest.raises(InputError) as e:
        parse_f32(f32(x), schema + ["d"], max_events=10, positional=3)
    assert e.value.status == 422 and e.value.field == "body" and "['d']" in e.value.reason
