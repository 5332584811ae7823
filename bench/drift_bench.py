"""Drift to hotfix in the demo setting; writes bench/results/drift.json.

A real kdd99 model (the train flow), published to a local region store and served by a real
``ebmops node`` on loopback, with kdd99 events replayed to it (32-event requests, 40 requests/s).
Then the region's traffic drifts (a different slice of real connections, ``ebmops.tools.demo``'s
scenario): the drift-monitor flow runs every 2 s until it reports the breach, and the hotfix flow
recalibrates on the region's recent events, gates and rolls out with the hotfix plan (3 s bakes,
auto-approved). Measured from the first drifted event: breach detected, hotfix serving.

The peer is the field's schedule: a fix that waits for the daily sync (86 400 s). The ratio
``hotfix_serving_s / 86400`` says how much sooner the region is fixed.

Run: ``make bench`` or ``.venv/bin/python bench/drift_bench.py``.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402

RESULTS = h.ROOT / "bench" / "results" / "drift.json"
REGION = "eu-west"
DAILY_S = 86400.0


def test_drift_to_hotfix_serving(benchmark, tmp_path):
    from ebmops.tools.demo import DEMO_ENV, drift_scenario
    from ebmops.tools.localnodes import start_nodes
    from ebmops.tools.replay import Replayer
    from ebmops.core.runtime import env_overrides
    from ebmops.core.settings import load_settings
    from ebmops.services.authority import os_login, own_override
    from flows.sync import sync as sync_flow
    from flows.train import train as train_flow
    from registry import ModelRegistry

    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    cached = h.ROOT / ".ebmops" / "data" / "kdd99.parquet"
    if cached.exists():
        (home / "data" / "kdd99.parquet").symlink_to(cached)
    env = {**DEMO_ENV, "EBMOPS_HOME": str(home), "EBMOPS_SYNC__SIGNING_KEY": h.SIGNING_SECRET,
           "EBMOPS_SERVING__BASE_PORT": str(h.free_port()), "EBMOPS_DATA__REGIONS": f'["{REGION}"]',
           "EBMOPS_ROLLOUT__ONCALL_ROSTER": json.dumps(["oncall", os_login()])}
    with env_overrides(env):
        settings = load_settings()
        res = train_flow(progress=False, run_gate=False)
        ModelRegistry.from_settings(settings).set_alias("champion", res["version"])
        sync_flow(version=res["version"], override=own_override(  # an ungated baseline, as the operator
            settings, version=res["version"], regions=[REGION], comment="drift bench baseline"))
        from ebmops.core.data import load_dataset

        x = load_dataset(settings.data.dataset, settings).features_array()
        with start_nodes(settings, wait_ready=True) as nodes:
            with Replayer({REGION: nodes.nodes[REGION].url}, x, batch=32, rate=40) as replay:
                import time

                time.sleep(3)  # the node's stats window fills with ordinary traffic first
                out = drift_scenario(settings, replay, region=REGION, approver=settings.rollout.oncall_roster[0])
                errors = replay.traffic[REGION].errors
        benchmark.pedantic(lambda: None, rounds=1, iterations=1)
        assert out.get("hotfix_serving_s") is not None, out
        doc = {"created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": h.machine(),
               "settings": {"region": REGION, "traffic": "kdd99 replay, 32-event requests at 40 requests/s",
                            "drift": "the region's traffic becomes the top quartile of its most variable feature",
                            "monitor": "drift-monitor flow every 2 s (hourly in production)",
                            "hotfix": "recalibrate or retrain (drift.hotfix_mode), gate on recent traffic, "
                                      "rollout.hotfix plan with 3 s bakes, auto-approved",
                            "thresholds": {"warn": settings.drift.warn_delta, "hotfix": settings.drift.hotfix_delta}},
               "delta_at_breach": out["delta"], "mode": out["mode"],
               "breach_detected_s": out["breach_detected_s"], "hotfix_serving_s": out["hotfix_serving_s"],
               "peer_daily_sync_s": DAILY_S, "ratio_hotfix_to_daily_sync": out["hotfix_serving_s"] / DAILY_S,
               "replay_errors": errors, "timeline": out["timeline"]}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(doc, indent=2, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "--benchmark-enable", "-p", "no:randomly", "-p", "no:cacheprovider", "-s"]))
