"""A region of two node replicas behind tokens: sync waits for both, status lists each, the canary judge
pools both replicas' samples, and holds (naming the replica) when one is down."""

from __future__ import annotations

from contextlib import ExitStack

import numpy as np
import pytest
import yaml

from canary.controller import RolloutController, SamplesUnavailable, VersionCounters
from canary.plan import RolloutPlan
from ebmops.core.settings import load_settings
from ebmops.core.state import open_store
from ebmops.adapters.rollout_ports import RegionTraffic
from ebmops.core.errors import SyncNotServed
from ebmops.services.sync import notify_and_wait, regions_status
from registry.signing import hmac_key
from serving.auth import config_line, new_token
from serving.client import replica_urls, resolve
from tests.canary.fakes import FakeAliases, ScriptedApprovals
from tests.registry.sync_fixtures import FEATURES
from tests.serving.conftest import REGION, SECRET, model_file, publish, running_node, set_desired, torch_energies

CP_TOKEN = new_token()
APP_TOKEN = new_token()
AUTH = {"Authorization": f"Bearer {APP_TOKEN}"}


@pytest.fixture
def fleet(tmp_path, store, key):
    """``fleet(n)``: n replicas of the region's node (tokens required) and the control plane's settings
    (node_urls: the replicas, its own read+admin token); ``fleet.stop(i)`` stops replica i."""
    entries = [yaml.safe_load(config_line("control-plane", CP_TOKEN, ["read", "admin"]))[0],
               yaml.safe_load(config_line("app", APP_TOKEN, ["score"]))[0]]
    node_settings = load_settings(home=tmp_path / "home", serving={"poll_interval_s": 30.0, "stats_window": 512,
                                                                   "auth": {"tokens": entries}})
    stacks: list[ExitStack] = []

    def start(n: int = 2, keys=None):
        nodes = []
        for i in range(n):
            stacks.append(ExitStack())
            nodes.append(stacks[-1].enter_context(running_node(node_settings, store, (keys or {}).get(i, key))))
        cp = load_settings(home=tmp_path / "cp", sync={"signing_key": SECRET,
                                                       "regions": {REGION: {"path": str(tmp_path / "store")}}},
                           serving={"node_urls": {REGION: [x.url for x in nodes]}, "client_token": CP_TOKEN})
        return nodes, cp

    start.stop = lambda i: stacks[i].close()
    yield start
    for s in stacks:
        s.close()


def _x(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, len(FEATURES))).astype(np.float32)


def test_sync_waits_for_every_replica_and_names_the_one_that_lags(fleet, store, key, tmp_path):
    publish(store, key, tmp_path, "1")
    set_desired(store, key, "1")
    (a, b), cp = fleet(2, keys={1: hmac_key("another key, so this replica refuses every desired state")})
    assert replica_urls(cp, REGION) == [a.url, b.url]
    with pytest.raises(SyncNotServed) as err:
        notify_and_wait(cp, [REGION], "1", wait_s=1.0, poll_s=0.05)
    assert f"replica {b.url}" in str(err.value) and a.url not in str(err.value)
    status = regions_status(cp, [REGION])
    rows = status["regions"][REGION]["replicas"]
    assert [r["url"] for r in rows] == [a.url, b.url]
    assert rows[0]["served_stable"] == "1" and rows[1]["served_stable"] is None
    issues = status["regions"][REGION]["issues"]
    assert any(i.startswith(f"replica {b.url}: ") and "refused" in i for i in issues), issues
    assert not any(a.url in i for i in issues)


def test_sync_reloads_both_replicas_and_reports_each(fleet, store, key, tmp_path):
    publish(store, key, tmp_path, "1")
    set_desired(store, key, "1")
    (a, b), cp = fleet(2)
    out = notify_and_wait(cp, [REGION], "1", wait_s=20.0, poll_s=0.05)
    assert out[REGION]["serves_version"]
    assert [(r["url"], r["stable_version"]) for r in out[REGION]["replicas"]] == [(a.url, "1"), (b.url, "1")]
    publish(store, key, tmp_path, "2")
    set_desired(store, key, "2")
    out = notify_and_wait(cp, [REGION], "2", wait_s=20.0, poll_s=0.05)  # nodes poll every 30 s: reload did it
    assert [r["stable_version"] for r in out[REGION]["replicas"]] == ["2", "2"]
    assert regions_status(cp, [REGION])["consistent"]


def _traffic(cp, calibration: dict[str, np.ndarray]) -> RegionTraffic:
    t = RegionTraffic(cp, reload_timeout_s=20.0)
    t._gauges = {v: np.sort(c.astype(np.float64)) for v, c in calibration.items()}  # MLflow's artifact in production
    return t


def test_samples_are_pooled_over_replicas_and_cut_per_replica(fleet, store, key, tmp_path):
    publish(store, key, tmp_path, "1")
    set_desired(store, key, "1")
    (a, b), cp = fleet(2)
    for n in (a, b):
        n.wait_ready()
    traffic = _traffic(cp, {"1": torch_energies(model_file(tmp_path, "1"), _x(500, 0))})
    for _ in range(3):
        assert a.score(_x(10, 1), headers=AUTH).status_code == 200
    assert b.score(_x(7, 2), headers=AUTH).status_code == 200
    before = traffic.samples(REGION)["1"]
    assert (before.requests, before.events) == (4, 37) and len(before.latency_ms) == 4 and len(before.energies) == 37
    base = VersionCounters(**before.counters())
    assert b.score(_x(5, 3), headers=AUTH).status_code == 200  # only replica b scores after the baseline
    window = traffic.samples(REGION)["1"].since(base)
    assert len(window.latency_ms) == 1 and len(window.energies) == 5
    # the judge reads each side's drift against its own calibration, in the gauge of its window's energies
    ref = window.energy_reference
    assert len(ref) == 500 and ref[-1] == 1.0 and np.all(np.diff(ref) >= 0) and abs(np.median(ref) - 0.5) < 0.01


def _plan(cp) -> RolloutPlan:
    return RolloutPlan.from_settings(cp, waves=[[REGION]], steps=[0.5], bake_s=0.0, approval=False)


def _start_rollout(cp, tmp_path):
    state = open_store(load_settings(home=tmp_path / "cp"))
    plan = _plan(cp)
    ro = state.create_rollout(model_name="ebm-kdd99", version="2", plan=plan.to_dict(),
                              stable_before={REGION: "1"}, created_by="test")
    return state, ro.id


class _NoPrepare(RegionTraffic):
    def prepare(self, region, version):  # the test published the bundle (prepare fetches it from MLflow)
        pass


def _controller(cp, state, tmp_path):
    cal = _x(2000, 7)
    traffic = _NoPrepare(cp, reload_timeout_s=20.0)
    traffic._gauges = {v: np.sort(torch_energies(model_file(tmp_path, v), cal).astype(np.float64)) for v in "12"}
    return RolloutController(store=state, traffic=traffic, aliases=FakeAliases(), approvals=ScriptedApprovals(),
                             sleep=lambda s: None)


def _advance_until(ctl, state, rid, phase: str) -> None:
    for _ in range(10):
        if state.get_rollout(rid).region(REGION).phase == phase:
            return
        ctl.advance(rid)
    raise AssertionError(f"never reached {phase}: {state.get_rollout(rid).region(REGION).phase}")


def test_a_rollout_is_judged_on_both_replicas_samples(fleet, store, key, tmp_path):
    for v in "12":
        publish(store, key, tmp_path, v)
    set_desired(store, key, "1")
    (a, b), cp = fleet(2)
    state, rid = _start_rollout(cp, tmp_path)
    ctl = _controller(cp, state, tmp_path)
    _advance_until(ctl, state, rid, "analysing")  # canary 2 at 50 % on both replicas, baseline taken
    assert {n.client.get("/stats", headers={"Authorization": f"Bearer {CP_TOKEN}"}).json()["canary_version"]
            for n in (a, b)} == {"2"}
    sent = 0
    for i in range(40):
        for n in (a, b):
            r = n.score(_x(10, 100 + i), headers=AUTH)
            assert r.status_code == 200
            sent += 10
    ctl.advance(rid)
    analysis = state.get_rollout(rid).region(REGION).last_analysis
    assert analysis["n_canary_events"] + analysis["n_stable_events"] == sent  # both replicas' events, no others
    assert analysis["n_canary_events"] > 0 and analysis["n_stable_events"] > 0
    assert {m["name"] for m in analysis["judgement"]["metrics"]} >= {"latency_ms", "energy"}


def test_a_dns_name_stands_for_every_address_it_resolves_to(tmp_path):
    assert "http://127.0.0.1:8101" in resolve("dns+http://localhost:8101")
    assert resolve("dns+http://no-such-host.invalid:8101") == []
    cp = load_settings(home=tmp_path, serving={"node_urls": {REGION: "dns+http://localhost:8101"}})
    assert "http://127.0.0.1:8101" in replica_urls(cp, REGION)
    with pytest.raises(Exception, match="not an http"):
        load_settings(home=tmp_path, serving={"node_urls": {REGION: ["ftp://x"]}})


def test_one_replica_down_holds_the_judge_and_names_it(fleet, store, key, tmp_path):
    for v in "12":
        publish(store, key, tmp_path, v)
    set_desired(store, key, "1")
    (a, b), cp = fleet(2)
    state, rid = _start_rollout(cp, tmp_path)
    ctl = _controller(cp, state, tmp_path)
    _advance_until(ctl, state, rid, "analysing")
    for i in range(20):
        for n in (a, b):
            assert n.score(_x(10, 200 + i), headers=AUTH).status_code == 200
    fleet.stop(1)
    with pytest.raises(SamplesUnavailable) as err:
        ctl.traffic.samples(REGION)
    assert b.url in str(err.value) and "1 of 2" in str(err.value) and a.url not in str(err.value)
    ctl.advance(rid)
    region = state.get_rollout(rid).region(REGION)
    assert region.phase == "awaiting_approval"  # held for a human, neither promoted nor rolled back
    judgement = region.last_analysis["judgement"]
    assert judgement["verdict"] == "inconclusive" and b.url in judgement["reason"]
