"""The control plane's own overhead: a full three-region canary rollout with zero bake time and
auto-approval; writes bench/results/rollout.json.

Real parts: three ``ebmops node`` subprocesses on loopback, local region stores, the SQLite state
store, a sqlite MLflow for the aliases, the real ports (ebmops/services/rollout.py) and the
controller (canary/controller.py). Light kdd99 traffic is replayed to every node so each analysis
has samples. The peer, measured in the same run, is the irreducible work of one step: one
desired-state write plus the node's reload (``RegionTraffic.set_traffic``); the ratio says how
much the controller (persisting every transition, reading stats, judging, auditing) adds.

Run: ``make bench`` or ``.venv/bin/python bench/rollout_bench.py``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402

RESULTS = h.ROOT / "bench" / "results" / "rollout.json"
STEPS = [0.05, 0.25, 0.5, 1.0]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    from ebmops.tools.localnodes import start_nodes
    from ebmops.tools.replay import Replayer
    from ebmops.core.runtime import env_overrides
    from ebmops.core.settings import load_settings
    from ebmops.adapters.bundles import prepare
    from ebmops.services import sync as sync_steps
    from registry import ModelRegistry

    home = tmp_path_factory.mktemp("rollout-bench") / "home"
    base = h.free_port()
    env = {"EBMOPS_HOME": str(home), "EBMOPS_SYNC__SIGNING_KEY": h.SIGNING_SECRET,
           "EBMOPS_SERVING__BASE_PORT": str(base), "EBMOPS_SERVING__POLL_INTERVAL_S": "60",
           "EBMOPS_ROLLOUT__ONCALL_ROSTER": '["bench"]'}
    with env_overrides(env):
        settings = load_settings()
        from ebmops.core.data import load_dataset

        try:
            x = load_dataset("kdd99", load_settings(home=h.ROOT / ".ebmops")).features_array()
        except Exception:  # noqa: BLE001 - no cached kdd99: uniform events of the same width
            x = np.random.default_rng(0).random((20000, 40), dtype=np.float32)
        features = [f"f{i}" for i in range(x.shape[1])]
        versions = []
        for seed in (1, 2):
            path, thr, _ = h.default_model(home / f"m{seed}.pt", x, seed=seed)
            versions.append(h.register_in_mlflow(settings, path, x, features, thr))
        ModelRegistry.from_settings(settings).set_alias("champion", versions[0])
        bundle = prepare(settings, versions[0])
        sync_steps.publish(settings, bundle, settings.data.regions)
        with start_nodes(settings, wait_ready=True) as nodes:
            with Replayer({r: n.url for r, n in nodes.nodes.items()}, x, batch=16, rate=30):
                yield {"settings": settings, "versions": versions}


_results: dict = {}


def test_full_rollout_overhead(benchmark, fleet):
    from ebmops.core.state import open_store
    from ebmops.adapters.approvals import AutoApprovals
    from ebmops.adapters.rollout_ports import RegionTraffic
    from ebmops.services import rollout as steps

    settings, (v1, v2) = fleet["settings"], fleet["versions"]
    store = open_store(settings)
    marks: list[tuple[float, str]] = []

    def one_rollout():
        plan = steps.plan_for(settings, bake_s=0.0, steps=STEPS)
        rid = steps.create(settings, store, v2, plan=plan, created_by="bench")
        ctl = steps.controller(settings, store, AutoApprovals("bench"),
                               progress=lambda m: marks.append((time.perf_counter(), m)))
        t0 = time.perf_counter()
        final = ctl.run(rid)
        wall = time.perf_counter() - t0
        assert final.phase == "promoted", final.message
        # put v1 back everywhere for the next round (not timed)
        steps.rollback(settings, store, regions=list(settings.data.regions), actor="bench")
        return wall

    walls = [one_rollout() for _ in range(2)]
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    transitions = len([m for m in marks if m[1]]) / 2

    # the peer: the bare desired-state write + node reload of one step, same nodes, same run
    traffic = RegionTraffic(settings)
    peer = []
    for i in range(6):
        t0 = time.perf_counter()
        traffic.set_traffic("us-east", stable=v1, canary=v2, weight=STEPS[i % 3])
        peer.append(time.perf_counter() - t0)
    traffic.set_traffic("us-east", stable=v1, canary=None, weight=0.0)
    n_steps = len(STEPS) * len(settings.data.regions)
    per_step = statistics.median(walls) / n_steps
    _results.update({
        "rollout_wall_s": walls, "rollout_wall_s_median": statistics.median(walls),
        "traffic_steps": n_steps, "progress_events_per_rollout": transitions,
        "per_traffic_step_s": per_step, "peer_set_traffic_s_median": statistics.median(peer),
        "ratio_step_to_peer": per_step / statistics.median(peer),
    })


@pytest.fixture(scope="module", autouse=True)
def _write_results():
    yield
    if "rollout_wall_s" not in _results:
        return
    doc = {"created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": h.machine(),
           "settings": {"regions": 3, "waves": "one region each", "steps": STEPS, "bake_s": 0,
                        "approval": "auto (roster member)", "nodes": "3 x ebmops node subprocesses, local stores",
                        "state_store": "SQLite", "registry": "MLflow sqlite",
                        "peer": "RegionTraffic.set_traffic: one signed desired-state write + node reload"},
           **_results}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "--benchmark-enable", "-p", "no:randomly", "-p", "no:cacheprovider"]))
