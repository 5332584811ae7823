"""Every kind of bad /score body gets a 4xx naming the field, and the node keeps serving."""

from __future__ import annotations

import pytest

from tests.registry.sync_fixtures import FEATURES
from tests.serving.conftest import metric_samples, publish, set_desired

NF = len(FEATURES)
ROW = [0.5] * NF
GOOD = {f: 0.5 for f in FEATURES}

CASES = [
    # (id, raw body, status, field, words in the reason)
    ("malformed-json", b'{"events": [[1, 2', 400, None, "not valid JSON"),
    ("nan-literal", b'{"events": [[NaN, 1]]}', 400, None, "NaN"),
    ("1e999", ('{"events": [[1e999' + ", 0" * (NF - 1) + "]]}").encode(), 400, None, "not valid JSON"),
    ("not-an-object", b"[[1, 2, 3]]", 400, None, "JSON list"),
    ("not-utf8", b"\xff\xfe", 400, None, "not valid JSON"),
    ("missing-events", b'{"keys": []}', 422, "events", "must be a list"),
    ("events-not-list", b'{"events": {"a": 1}}', 422, "events", "must be a list"),
    ("typo-field", b'{"events": [], "evnts": []}', 422, "evnts", "may hold only"),
    ("empty", b'{"events": []}', 422, "events", "no events"),
    ("too-many", None, 413, "events", "limit is 2500"),
    ("wrong-count", {"events": [ROW, ROW, ROW, ROW[:-1]]}, 422, "events[3]", f"has {NF - 1} values, the model expects {NF}"),
    ("ragged-first", {"events": [ROW + [1.0]]}, 422, "events[0]", f"expects {NF}"),
    ("string-value", {"events": [ROW, ROW[:2] + ["1.5"] + ROW[3:]]}, 422, "events[1][2]", "f2 is a string"),
    ("nan-string", {"events": [["nan"] + ROW[1:]]}, 422, "events[0][0]", "a string"),
    ("bool-value", {"events": [[True] + ROW[1:]]}, 422, "events[0][0]", "a boolean"),
    ("null-value", {"events": [ROW[:-1] + [None]]}, 422, f"events[0][{NF - 1}]", "null"),
    ("float32-overflow", {"events": [ROW, ROW[:1] + [1e39] + ROW[2:]]}, 422, "events[1][1]", "not a finite float32"),
    ("event-not-list", {"events": [ROW, 3]}, 422, "events[1]", "an event is a list"),
    ("unknown-name", {"events": [GOOD, {**GOOD, "src_bytes": 1.0}]}, 422, "events[1].src_bytes", "not a feature"),
    ("missing-name", {"events": [{k: v for k, v in GOOD.items() if k != "f3"}]}, 422, "events[0].f3", "missing"),
    ("named-string", {"events": [{**GOOD, "f5": "x"}]}, 422, "events[0].f5", "a string"),
    ("named-overflow", {"events": [{**GOOD, "f4": -1e300}]}, 422, "events[0].f4", "not a finite float32"),
    ("keys-length", {"events": [ROW, ROW], "keys": ["a"]}, 422, "keys", "1 keys for 2 events"),
    ("keys-type", {"events": [ROW, ROW], "keys": ["a", 7]}, 422, "keys[1]", "string or null"),
    ("keys-not-list", {"events": [ROW], "keys": "a"}, 422, "keys", "must be a list"),
]


@pytest.fixture
def node(node_factory, store, key, tmp_path):
    publish(store, key, tmp_path, "1")
    set_desired(store, key, "1")
    with node_factory() as n:
        n.wait_ready()
        yield n


def test_every_bad_body_is_refused_with_its_field(node):
    import orjson

    for name, body, status, field, words in CASES:
        if body is None:
            body = {"events": [ROW] * 2501}
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        r = node.client.post("/score", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == status, (name, r.text)
        got = r.json()
        assert got["field"] == field and words in got["reason"], (name, got)
        assert got["error"]
        # The node is unharmed: a good request right after works.
        ok = node.score([ROW])
        assert ok.status_code == 200 and ok.json()["versions"] == ["1"], name
    samples = metric_samples(node.client.get("/metrics").text)
    assert samples[("ebmops_node_errors_total", (("kind", "bad-json"),))] == 5
    assert samples[("ebmops_node_errors_total", (("kind", "too-large"),))] == 1
    assert samples[("ebmops_node_errors_total", (("kind", "invalid-input"),))] == len(CASES) - 6
    assert samples[("ebmops_node_requests_total", (("status", "200"),))] == len(CASES)
    assert node.client.get("/readyz").status_code == 200


def test_a_full_batch_at_the_limit_is_accepted(node):
    r = node.score([ROW] * 2500)
    assert r.status_code == 200 and len(r.json()["energies"]) == 2500


def test_wrong_methods_and_paths_are_plain_4xx(node):
    # POST /score is answered before FastAPI; every other method and path is still FastAPI's.
    for method in ("GET", "PUT", "DELETE", "PATCH", "HEAD"):
        r = node.client.request(method, "/score")
        assert r.status_code == 405 and "POST" in r.headers["allow"], method
    assert node.client.get("/score").json() == {"detail": "Method Not Allowed"}
    assert node.client.get("/nope").status_code == 404
    assert node.client.post("/scores", json={"events": [ROW]}).status_code == 404
    assert node.client.post("/admin/score", json={"events": [ROW]}).status_code == 404
    assert node.score([ROW]).status_code == 200
    samples = metric_samples(node.client.get("/metrics").text)
    assert samples[("ebmops_node_requests_total", (("status", "200"),))] == 1  # only /score requests count


def test_a_body_in_many_chunks_is_read_whole(node):
    import orjson

    raw = orjson.dumps({"events": [ROW] * 300})

    def chunks():
        for i in range(0, len(raw), 1000):
            yield raw[i:i + 1000]

    r = node.client.post("/score", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 200 and len(r.json()["energies"]) == 300
    assert r.headers["content-type"] == "application/json"
    assert int(r.headers["content-length"]) == len(r.content)
    bad = node.client.post("/score", content=iter([b'{"events": [[1,', b" 2"]),
                           headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"] == "malformed JSON"
