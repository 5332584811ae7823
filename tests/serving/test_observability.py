"""Every metric name the alert rules and the dashboard use exists on a live node; JSON logs carry the fields."""

from __future__ import annotations

import logging

import numpy as np
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ebmops.core.settings import load_settings
from serving.auth import config_line, new_token
from tests.deploy.promql import SYNTHETIC, all_expressions, metric_names
from tests.registry.sync_fixtures import FEATURES
from tests.serving.conftest import model_file, publish_with_calibration, set_desired, torch_energies


def test_every_metric_the_rules_and_dashboard_use_is_scraped_from_a_live_node(tmp_path, store, key, node_factory):
    token = new_token()
    entry = yaml.safe_load(config_line("app", token, ["score"]))[0]
    settings = load_settings(home=tmp_path / "home", serving={"poll_interval_s": 30.0, "stats_window": 64,
                                                              "auth": {"tokens": [entry]}})
    x = np.random.default_rng(0).normal(size=(300, len(FEATURES))).astype(np.float32)
    publish_with_calibration(store, key, tmp_path, "1", torch_energies(model_file(tmp_path, "1"), x))
    set_desired(store, key, "1")
    auth = {"Authorization": f"Bearer {token}"}
    with node_factory(settings=settings) as n:
        n.wait_ready()
        assert n.score(x[:200], headers=auth).status_code == 200
        assert n.client.post("/score", content=b"{", headers=auth).status_code == 400
        assert n.client.get("/stats", headers=auth).status_code == 403
        scraped = n.client.get("/metrics").text
    samples = {s.name for fam in text_string_to_metric_families(scraped) for s in fam.samples}
    used = set().union(*(metric_names(e.replace("$region", ".*")) for e in all_expressions())) - SYNTHETIC
    missing = sorted(used - samples)
    assert not missing, f"rules/dashboard use metrics the node does not export: {missing}"
    assert len(used) >= 12


def test_json_log_lines_name_region_model_version_generation_and_request_id(tmp_path, store, key, node_factory,
                                                                            caplog):
    from serving.logs import JsonFormatter

    x = np.zeros((1, len(FEATURES)), dtype=np.float32)
    publish_with_calibration(store, key, tmp_path, "1", torch_energies(model_file(tmp_path, "1"), x))
    set_desired(store, key, "1")
    settings = load_settings(home=tmp_path / "home", serving={"poll_interval_s": 30.0, "max_body_bytes": 2048})
    caplog.set_level(logging.INFO)
    with node_factory(settings=settings) as n:
        n.wait_ready()
        r = n.client.post("/score", content=b"[" * 4096, headers={"x-request-id": "req-42"})
        assert r.status_code == 413
    fmt = JsonFormatter()
    import json

    lines = [json.loads(fmt.format(rec)) for rec in caplog.records if getattr(rec, "ebm", None)]
    served = next(x for x in lines if x.get("event") == "served")
    assert (served["region"], served["model"], served["version"], served["generation"]) == \
        ("eu-west", "ebm-kdd99", "1", 1)
    refused = next(x for x in lines if x.get("request_id") == "req-42")
    assert refused["status"] == 413 and refused["region"] == "eu-west" and refused["level"] == "warning"


def test_refused_requests_are_logged_once_per_client_and_outcome_not_per_request(tmp_path, store, key, node_factory,
                                                                                 caplog):
    import json

    from serving.logs import JsonFormatter

    token = new_token()
    entry = yaml.safe_load(config_line("reader", token, ["read"]))[0]
    settings = load_settings(home=tmp_path / "home", serving={"poll_interval_s": 30.0, "auth": {"tokens": [entry]}})
    caplog.set_level(logging.INFO)
    with node_factory(settings=settings) as n:
        for _ in range(5):
            assert n.client.post("/score", json={"events": []}, headers={"Authorization": f"Bearer {token}"}) \
                .status_code == 403
            assert n.client.get("/stats").status_code == 401
    fmt = JsonFormatter()
    lines = [json.loads(fmt.format(r)) for r in caplog.records if r.getMessage().startswith("request refused")]
    assert sorted((x["client"], x["status"], x["region"]) for x in lines) == [("anonymous", 401, "eu-west"),
                                                                             ("reader", 403, "eu-west")]
    assert token not in caplog.text
