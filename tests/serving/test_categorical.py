"""A real node serving a model with categorical columns: JSON rows carry raw strings (or numbers),
binary rows numbers; an unseen value scores in the unknown slot and is counted in /metrics. The
node never sees the training data: the vocabulary travels inside the bundle's model file."""

import numpy as np
import pytest

from ebmops.core.data import load_dataset
from ebmops.core.settings import load_settings
from registry.bundle import publish_bundle
from serving.payload import F32
from tests.core.data.cat_events import FEATURES, raw_energies, source_settings, write_csv
from tests.serving.conftest import MODEL, REGION, metric_samples, set_desired
from training import export_torchscript, fit

UNKNOWN = "ebmops_node_unknown_categories_total"


@pytest.fixture(scope="module")
def cat_model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("catmodel")
    s = load_settings(home=tmp / "home", data={"sources": {"ev": source_settings(write_csv(tmp / "ev.csv"))}},
                      training={"epochs": 3, "min_train_events": 0, "hidden": [16], "threads": 1})
    out = fit(load_dataset("ev", s), s.training, progress=False)
    return export_torchscript(out.model, tmp / "model.pt"), out.threshold


def _unknown(node, column: str) -> float:
    samples = metric_samples(node.client.get("/metrics").text, model=None)  # every label, model included
    return samples.get((UNKNOWN, (("column", column), ("model", MODEL), ("region", REGION))), 0.0)


def test_a_node_scores_raw_categories_and_counts_unseen_ones(store, key, node_factory, cat_model):
    path, threshold = cat_model
    publish_bundle(store, path, model_name=MODEL, version="1", features=FEATURES, threshold=threshold,
                   gate_verdict="pass", key=key)
    set_desired(store, key, stable="1")
    with node_factory() as node:
        assert node.wait_ready()["features"] == FEATURES
        rows = [["tcp", "80", 10.1, 0.5], ["udp", "53", 2.0, 0.7], ["udp", "80", 10.0, 0.6]]
        r = node.score(rows)
        assert r.status_code == 200, r.text
        assert np.allclose(r.json()["energies"], raw_energies(path, rows), atol=1e-5)
        # numbers in a categorical column mean the same category as their text; objects by name work too
        r2 = node.score([["tcp", 80, 10.1, 0.5], {"proto": "udp", "port": 53.0, "bytes": 2.0, "duration": 0.7}])
        assert np.allclose(r2.json()["energies"], r.json()["energies"][:2], atol=1e-6)
        assert _unknown(node, "proto") == 0.0 and _unknown(node, "port") == 0.0

        unseen = [["sctp", "80", 10.1, 0.5], ["sctp", "8080", 2.0, 0.5], ["tcp", "443", 9.9, 0.4]]
        r3 = node.score(unseen)
        assert r3.status_code == 200 and np.isfinite(r3.json()["energies"]).all()
        assert np.allclose(r3.json()["energies"], raw_energies(path, unseen), atol=1e-5)
        assert _unknown(node, "proto") == 2.0 and _unknown(node, "port") == 1.0

        bad = node.score([["tcp", "80", "lots", 0.5]])
        assert bad.status_code == 422 and bad.json()["field"] == "events[0][2]" and "bytes" in bad.json()["reason"]
        null = node.score([[None, "80", 1.0, 0.5]])
        assert null.status_code == 422 and null.json()["field"] == "events[0][0]"

        body = np.array([[0, 80, 10.1, 0.5]], dtype="<f4")  # binary rows: numbers, here an unseen proto "0"
        rb = node.client.post("/score", content=body.tobytes(), headers={"Content-Type": F32})
        assert rb.status_code == 200, rb.text
        assert np.allclose(rb.json()["energies"], raw_energies(path, [["0", "80", 10.1, 0.5]]), atol=1e-5)
        assert _unknown(node, "proto") == 3.0
        # the recent sample (drift reports, hotfixes) keeps what clients sent, not one version's codes
        recent = node.client.get("/recent", params={"n": 2}).json()
        assert recent["features"] == FEATURES
        assert recent["events"][0][:2] == ["tcp", "443"] and recent["events"][1][:2] == ["0", "80"]
        assert recent["events"][1][2:] == pytest.approx([10.1, 0.5])


def test_the_recent_ring_keeps_raw_categories_across_the_wrap():
    from serving.recent import RecentEvents

    ring = RecentEvents(capacity=4, keep_every=1)
    feats = ("proto", "bytes")
    for i in range(3):  # 6 events into 4 slots: the ring wraps
        x = np.array([[np.nan, 2.0 * i], [np.nan, 2.0 * i + 1]], dtype=np.float32)
        ring.offer(feats, x, np.array([i, i], dtype=np.float32), {"proto": np.array([f"p{2 * i}", f"p{2 * i + 1}"],
                                                                                     dtype=object)})
    names, rows, energies = ring.latest(10)
    assert names == ["proto", "bytes"] and [r[0] for r in rows] == ["p2", "p3", "p4", "p5"]
    assert [r[1] for r in rows] == [2.0, 3.0, 4.0, 5.0] and energies.tolist() == [1, 1, 2, 2]


def test_numeric_models_report_no_unknown_categories(store, key, node_factory, tmp_path):
    from tests.serving.conftest import publish

    publish(store, key, tmp_path, "1")
    set_desired(store, key, stable="1")
    with node_factory() as node:
        node.wait_ready()
        assert node.node.state.serving.stable.categories == {}
        r = node.score(np.zeros((3, node.node.state.serving.stable.n_features), dtype=np.float32))
        assert r.status_code == 200
        assert not [k for k in metric_samples(node.client.get("/metrics").text) if k[0] == UNKNOWN]


def test_batch_scoring_encodes_raw_categories_with_the_bundles_vocabulary(store, key, cat_model, tmp_path):
    from ebmops.core.data import open_path
    from serving.batch import score_rows
    from serving.model import load_verified

    path, threshold = cat_model
    publish_bundle(store, path, model_name=MODEL, version="1", features=FEATURES, threshold=threshold,
                   gate_verdict="pass", key=key)
    model = load_verified(store, MODEL, "1", key, tmp_path / "install")
    assert model.categorical == ("proto", "port")
    csv = write_csv(tmp_path / "score.csv")
    batch = next(open_path(str(csv), name="s", features=FEATURES, categorical=["proto", "port"], regions=["r"],
                           batch_rows=50).iter_batches(regions=False))
    table = score_rows(model, batch.event_id, batch.x, 16, batch.cats)
    rows = [[p, port, b, d] for p, port, b, d in zip(batch.cats["proto"], batch.cats["port"], batch.x[:, 2],
                                                     batch.x[:, 3])]
    assert np.allclose(table.column("energy").to_numpy(), raw_energies(path, rows), atol=1e-5)
    with pytest.raises(ValueError, match=r"takes \['proto', 'port'\] as categories"):
        score_rows(model, batch.event_id, batch.x, 16)


SCHEMA = ["proto", "port", "bytes"]


def _parse(body, **kw):
    import orjson

    from serving.payload import parse_request

    return parse_request(orjson.dumps(body), None, SCHEMA, max_events=10, categorical={"proto", "port"}, **kw)


def test_categorical_parse_names_each_bad_field():
    from serving.payload import InputError

    req = _parse({"events": [["tcp", 80, 1.5], {"port": "443", "proto": "udp", "bytes": 2}], "keys": ["a", None]})
    assert req.cats["proto"].tolist() == ["tcp", "udp"] and req.cats["port"].tolist() == ["80", "443"]
    assert np.isnan(req.x[:, :2]).all() and req.x[:, 2].tolist() == [1.5, 2.0] and req.keys == ["a", None]
    cases = [({"events": [["tcp", 80]]}, "events[0]", "wrong feature count"),
             ({"events": [{"proto": "tcp", "port": 1, "bytes": 1, "x": 2}]}, "events[0].x", "unknown feature"),
             ({"events": [{"proto": "tcp", "bytes": 1}]}, "events[0].port", "missing feature"),
             ({"events": [["tcp", [80], 1.0]]}, "events[0][1]", "invalid category"),
             ({"events": [["tcp", 80, True]]}, "events[0][2]", "non-numeric value"),
             ({"events": ["tcp"]}, "events[0]", "invalid event"),
             ({"events": []}, "events", "empty batch"),
             ({"events": [["tcp", 80, 1.0]], "extra": 1}, "extra", "unknown field")]
    for body, field, error in cases:
        with pytest.raises(InputError) as exc:
            _parse(body)
        assert (exc.value.field, exc.value.error) == (field, error), body
    with pytest.raises(InputError) as exc:
        _parse({"events": [["tcp", 80, 1.0, 2.0]]}, positional=2)
    assert exc.value.error == "positional events not accepted"
