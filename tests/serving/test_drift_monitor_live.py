"""The drift monitor's steps against a real node: Δ per region on planted shifts (no breach, warn,
hotfix), observations stored, and the hotfix decision (one in flight, cooldown) from the store."""

from __future__ import annotations

import numpy as np

from ebmops.core.settings import load_settings
from ebmops.core.state import open_store
from ebmops.services import drift as steps
from tests.registry.sync_fixtures import FEATURES
from tests.serving.conftest import REGION, model_file, publish_with_calibration, running_node, set_desired, torch_energies


def test_monitor_levels_and_hotfix_decisions_on_a_live_node(store, key, tmp_path):
    rng = np.random.default_rng(1)
    ref = rng.normal(0, 1, size=(5000, len(FEATURES))).astype(np.float32)
    calibration = torch_energies(model_file(tmp_path, "1"), ref)
    publish_with_calibration(store, key, tmp_path, "1", calibration)
    set_desired(store, key, "1")
    node_settings = load_settings(home=tmp_path / "node", serving={"poll_interval_s": 30.0, "stats_window": 2048})
    with running_node(node_settings, store, key) as n:
        n.wait_ready()
        settings = load_settings(home=tmp_path / "monitor", serving={"node_urls": {REGION: n.url}},
                                 data={"regions": [REGION]}, drift={"min_events": 50})
        state = open_store(settings)
        cache = {"1": calibration}  # the version's calibration energies (MLflow's artifact in production)

        def observe(x):
            assert n.score(x).status_code == 200  # fills the node's stats window (2048) with this traffic
            return steps.monitor_region(settings, state, REGION, calibration_cache=cache)[0]

        same = observe(rng.normal(0, 1, size=(2048, len(FEATURES))).astype(np.float32))
        assert same["level"] == "ok" and same["role"] == "stable" and same["reference_kind"] == "calibration"
        # the energies of a slice of traffic far from the reference move by many spreads
        far = observe((rng.normal(0, 1, size=(2048, len(FEATURES))) * 2.5 + 2.0).astype(np.float32))
        assert far["level"] == "hotfix" and far["delta"] > settings.drift.hotfix_delta
        assert far["delta"] > 3 * same["delta"]
        mild = observe((rng.normal(0, 1, size=(2048, len(FEATURES))) * 1.04).astype(np.float32))
        assert same["delta"] < mild["delta"] < far["delta"], (same["delta"], mild["delta"])
        assert mild["level"] == "warn"  # 4 % wider traffic: recorded, no hotfix
        stored = state.list_drift(model_name=settings.registry.model_name, region=REGION)
        assert [o.level for o in stored] == [mild["level"], "hotfix", "ok"] and len(stored[0].quantiles) == 201

        first = steps.hotfix_candidates(settings, state, [far])
        assert first[0]["start_hotfix"], first
        state.start_hotfix(model_name=settings.registry.model_name, region=REGION, version="1", delta=far["delta"])
        busy = steps.hotfix_candidates(settings, state, [far])
        assert not busy[0]["start_hotfix"] and "already running" in busy[0]["decision"]
