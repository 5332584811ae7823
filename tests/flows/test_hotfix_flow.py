"""Drift to hotfix end to end: a real trained model served by a real node with kdd99 traffic; the
region's traffic drifts, the drift-monitor flow reports the breach, the hotfix flow recalibrates
on the region's recent events, gates on them and rolls out there (the demo's scenario)."""

from __future__ import annotations

import json

import pytest

from ebmops.core.state import open_store
from tests.servers import free_port_run

pytestmark = pytest.mark.slow

REGION = "eu-west"


def test_a_drifted_region_is_detected_hotfixed_and_serves_the_fix(prefect_server, flow_env, monkeypatch, kdd99):
    from ebmops.core.state.audit import verify
    from ebmops.core.waiting import wait_until
    from ebmops.tools.demo import drift_scenario
    from ebmops.tools.localnodes import start_nodes
    from ebmops.tools.replay import Replayer
    from ebmops.core.settings import get_settings, load_settings
    from ebmops.services.authority import os_login, own_override
    from ebmops.services.sync import regions_status
    from flows.sync import sync
    from flows.train import train
    from registry import ModelRegistry

    for k, v in {"EBMOPS_SYNC__SIGNING_KEY": "h" * 40, "EBMOPS_SERVING__BASE_PORT": str(free_port_run(1)),
                 "EBMOPS_DATA__REGIONS": f'["{REGION}"]', "EBMOPS_ROLLOUT__STEPS": "[0.5, 1.0]",
                 "EBMOPS_ROLLOUT__HOTFIX__BAKE_S": "2",
                 "EBMOPS_ROLLOUT__ONCALL_ROSTER": json.dumps(["oncall", os_login()]),
                 # the fix is its stable's network recalibrated: a false alarm of the judge (a few % of steps at the
                 # default alpha, bench/results/judge.json) is not what this test is about
                 "EBMOPS_ROLLOUT__ANALYSIS__ALPHA": "0.0001"}.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    settings = load_settings()
    first = train(epochs=4, progress=False, run_gate=False)
    reg = ModelRegistry.from_settings(settings)
    reg.set_alias("champion", first["version"])
    # an ungated baseline: published with this test's own (roster member's) override
    sync(version=first["version"], override=own_override(settings, version=first["version"], regions=[REGION],
                                                         comment="ungated baseline of the test"))
    x = kdd99.features_array(kdd99.frame[kdd99.frame["label"] == 0])  # normal traffic, as the demo
    with start_nodes(settings, wait_ready=True) as nodes:
        with Replayer({REGION: nodes.nodes[REGION].url}, x, batch=32, rate=40) as replay:
            # the node's recent window holds normal traffic before the drift starts
            wait_until(lambda: replay.traffic[REGION].events >= 2000, timeout_s=60, what="2000 replayed events")
            out = drift_scenario(settings, replay, region=REGION, approver="oncall")
            assert replay.traffic[REGION].errors == 0, replay.traffic[REGION].last_error
        assert out["breach_detected_s"] is not None and out["delta"] >= settings.drift.hotfix_delta
        fix = out["hotfix_version"]
        assert fix and fix != first["version"] and out["mode"] == "recalibrate"
        status = regions_status(settings)
        assert status["regions"][REGION]["served_stable"] == fix, status
    assert reg.get_by_alias(f"prod-{REGION}").version == fix
    assert reg.get_by_alias("champion").version == first["version"]  # a hotfix of one region is no champion
    store = open_store(settings)
    hf = store.list_hotfixes(model_name=settings.registry.model_name, region=REGION)[0]
    assert hf.status == "succeeded" and hf.new_version == fix and len(hf.timeline) >= 5
    kinds = [e.kind for e in store.list_audit(limit=200)]
    assert "drift_breach" in kinds and "hotfix" in kinds and verify(store).ok
    # the recalibrated fix reads lower energies than its drifted stable by construction: judged against each
    # side's own calibration, that gap is stable's, not the fix's
    (ro,) = [r for r in store.list_rollouts(model_name=settings.registry.model_name) if r.version == fix]
    energy = next(m for m in ro.region(REGION).last_analysis["judgement"]["metrics"] if m["name"] == "energy")
    assert energy["classification"] == "pass" and "the gap is stable's" in energy["reason"], energy["reason"]
    drift = store.list_drift(model_name=settings.registry.model_name, region=REGION)
    assert any(o.level == "hotfix" for o in drift)
    get_settings.cache_clear()
