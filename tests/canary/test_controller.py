"""The rollout controller against a real state store (SQLite and PostgreSQL) and in-memory ports.

The ports stand in for the region stores, nodes and MLflow (each has its own tests against the
real thing); what is tested here is the controller's logic: order of steps, the judge's verdict
acting on traffic, approvals, and resuming after a crash at any point without repeating a step."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from canary.controller import Decision, RolloutController
from canary.plan import RolloutPlan
from ebmops.core.aliases import CHAMPION, PREVIOUS_CHAMPION
from ebmops.core.settings import load_settings
from ebmops.core.state import open_store
from ebmops.core.state.audit import verify
from tests.canary.fakes import REGIONS, Crash, FakeAliases, FakeTraffic, ScriptedApprovals


@pytest.fixture
def store(state_url, tmp_path):
    s = open_store(load_settings(home=tmp_path / "home", state_url=state_url))
    yield s
    s.close()


def _plan(tmp_path, **kw) -> RolloutPlan:
    settings = load_settings(home=tmp_path / "home")
    base = dict(bake_s=0.0, approval=[True, False, False], steps=[0.1, 0.5, 1.0])
    base.update(kw)
    return RolloutPlan.from_settings(settings, **base).model_copy(update={"oncall_roster": ["alice", "bob"]})


def _rollout(store, plan, version="2"):
    ro = store.create_rollout(model_name="ebm-anomaly", version=version, plan=plan.to_dict(),
                              stable_before={r: "1" for r in plan.regions}, created_by="test")
    return ro.id


def _ctl(store, traffic, aliases=None, approvals=None):
    return RolloutController(store=store, traffic=traffic, aliases=aliases or FakeAliases(),
                             approvals=approvals or ScriptedApprovals(), sleep=lambda s: None)


def test_a_good_canary_walks_every_step_and_is_promoted_everywhere(store, tmp_path):
    plan = _plan(tmp_path)
    rid = _rollout(store, plan)
    traffic, aliases, approvals = FakeTraffic(), FakeAliases(), ScriptedApprovals()
    final = _ctl(store, traffic, aliases, approvals).run(rid)
    assert final.phase == "promoted" and not final.active
    assert [r.phase for r in final.regions] == ["promoted"] * 3
    # at 100 % the stable version served nothing in the window: energies, alerts and errors are compared
    # with its latest samples, latency is not (it would measure the load of another moment)
    last = {m["name"]: m["classification"] for m in final.region("us-east").last_analysis["judgement"]["metrics"]}
    assert last["latency_ms"] == "no-data" and last["energy"] == "pass" and last["alert"] == "pass"
    expected = []
    for r in REGIONS:
        expected += [(r, "1", "2", 0.1), (r, "1", "2", 0.5), (r, "1", "2", 1.0), (r, "2", None, 0.0)]
    assert traffic.writes == expected  # wave after wave, each step once
    assert aliases.aliases == {CHAMPION: "2", PREVIOUS_CHAMPION: "1", "prod-us-east": "2", "prod-eu-west": "2",
                               "prod-ap-south": "2"}
    assert [a[0] for a in approvals.asked] == ["us-east"]  # only the first wave asks (plan.approval)
    assert "us-east" in approvals.asked[0][1] and "Approve" in approvals.asked[0][1]
    decisions = store.list_decisions(rid)
    assert [(d.kind, d.actor, d.region) for d in decisions] == [("approve", "alice", "us-east")]
    kinds = [e.kind for e in store.list_audit(limit=1000)]
    assert kinds.count("analysis") == 9 and kinds.count("promotion") == 4 and "approval" in kinds
    assert verify(store).ok


def test_each_promotion_is_anchored_after_it_is_audited(store, tmp_path):
    plan = _plan(tmp_path, approval=[False, False, False])
    rid = _rollout(store, plan)
    anchored = []  # the newest audit record each time the controller asks for a checkpoint
    ctl = _ctl(store, FakeTraffic())
    ctl.after_promotion = lambda: anchored.append((store.list_audit(limit=1)[0].kind,
                                                   store.list_audit(limit=1)[0].region))
    assert ctl.run(rid).phase == "promoted"
    assert anchored == [("promotion", r) for r in REGIONS] + [("promotion", None)]


def test_a_slow_canary_is_rolled_back_in_the_first_region_and_the_rest_never_start(store, tmp_path):
    rid = _rollout(store, _plan(tmp_path))
    traffic = FakeTraffic(canary_latency_factor=3.0)
    aliases = FakeAliases()
    final = _ctl(store, traffic, aliases).run(rid)
    assert final.phase == "rolled_back" and not final.active
    us = final.region("us-east")
    assert us.phase == "rolled_back" and "latency_ms" in us.failed_checks
    assert [r.phase for r in final.regions[1:]] == ["aborted", "aborted"]
    assert traffic.desired["us-east"] == ("1", None, 0.0)
    assert traffic.writes == [("us-east", "1", "2", 0.1), ("us-east", "1", None, 0.0)]
    assert aliases.aliases == {CHAMPION: "1"}
    assert "rollback" in [e.kind for e in store.list_audit(limit=100)]


def test_a_rejection_rolls_the_wave_back(store, tmp_path):
    rid = _rollout(store, _plan(tmp_path))
    traffic = FakeTraffic()
    approvals = ScriptedApprovals(answers=[Decision(False, "bob", "energies look odd")])
    final = _ctl(store, traffic, approvals=approvals).run(rid)
    assert final.phase == "rolled_back"
    us = final.region("us-east")
    assert us.phase == "rolled_back" and "rejected by bob" in us.message
    assert [r.phase for r in final.regions[1:]] == ["aborted", "aborted"]
    assert traffic.desired["us-east"] == ("1", None, 0.0)
    assert [(d.kind, d.actor) for d in store.list_decisions(rid)] == [("reject", "bob")]


def test_an_approval_timeout_rolls_the_wave_back(store, tmp_path):
    rid = _rollout(store, _plan(tmp_path))
    traffic = FakeTraffic()
    final = _ctl(store, traffic, approvals=ScriptedApprovals(answers=[None])).run(rid)
    assert final.phase == "rolled_back"
    us = final.region("us-east")
    assert us.phase == "rolled_back" and "timed out" in us.message
    assert traffic.desired["us-east"] == ("1", None, 0.0)
    assert [d.kind for d in store.list_decisions(rid)] == ["timeout"]


def test_marginal_waits_for_a_human_who_lets_it_go_on(store, tmp_path):
    rid = _rollout(store, _plan(tmp_path, approval=False))
    traffic = FakeTraffic(canary_latency_factor=1.4)  # +40 % latency: marginal, not fail
    approvals = ScriptedApprovals()
    final = _ctl(store, traffic, approvals=approvals).run(rid)
    assert approvals.asked, "a marginal step must wait for a human"
    assert final.phase == "promoted"
    verdicts = [e.payload["verdict"] for e in store.list_audit(limit=1000) if e.kind == "analysis"]
    assert "marginal" in verdicts and "fail" not in verdicts, verdicts
    # the human was asked exactly where the judge said marginal (and nowhere else: the plan asks for none)
    assert len(approvals.asked) == verdicts.count("marginal") + verdicts.count("inconclusive")


def test_killed_at_any_point_a_resume_finishes_without_repeating_a_step(store, tmp_path):
    plan = _plan(tmp_path)
    reference = FakeTraffic()
    rid0 = _rollout(store, plan)
    _ctl(store, reference).run(rid0)
    total = reference.calls
    for crash_at in range(0, total, 3):
        rid = _rollout(store, plan, version="2")
        traffic = FakeTraffic(crash_after=crash_at)
        with pytest.raises(Crash):
            _ctl(store, traffic).run(rid)
        traffic.crash_after = None
        final = _ctl(store, traffic).run(rid)  # a fresh controller: nothing carried in memory
        assert final.phase == "promoted", crash_at
        assert traffic.writes == reference.writes, crash_at  # each desired state written once, in order


def test_plan_bake_time_is_slept_and_restarted_after_a_crash(store, tmp_path):
    rid = _rollout(store, _plan(tmp_path, bake_s=5.0, approval=False))
    slept = []
    t = [datetime(2026, 1, 1, tzinfo=timezone.utc)]

    def sleep(s):
        slept.append(s)
        t[0] += timedelta(seconds=s)

    ctl = RolloutController(store=store, traffic=FakeTraffic(), aliases=FakeAliases(),
                            approvals=ScriptedApprovals(), sleep=sleep, now=lambda: t[0])
    assert ctl.run(rid).phase == "promoted"
    assert slept == [5.0] * 9


def test_a_rollout_of_some_regions_sets_their_aliases_but_not_the_champion(store, tmp_path):
    plan = _plan(tmp_path, waves=[["eu-west"]], approval=False)
    rid = _rollout(store, plan)
    aliases = FakeAliases()
    ctl = _ctl(store, FakeTraffic(), aliases)
    ctl.all_regions = REGIONS
    final = ctl.run(rid)
    assert final.phase == "promoted" and "champion alias stays" in final.message
    assert aliases.aliases == {CHAMPION: "1", "prod-eu-west": "2"}


def test_a_hotfix_rollout_never_moves_the_champion(store, tmp_path):
    plan = _plan(tmp_path, approval=False)
    rid = store.create_rollout(model_name="ebm-anomaly", version="2", plan=plan.to_dict(), kind="hotfix",
                               stable_before={r: "1" for r in plan.regions}, created_by="test").id
    aliases = FakeAliases()
    ctl = _ctl(store, FakeTraffic(), aliases)
    ctl.all_regions = REGIONS
    final = ctl.run(rid)
    assert final.phase == "promoted" and "a hotfix" in final.message
    assert aliases.aliases[CHAMPION] == "1" and PREVIOUS_CHAMPION not in aliases.aliases
    assert all(aliases.aliases[f"prod-{r}"] == "2" for r in REGIONS)


def test_store_approvals_receive_a_cli_decision_and_refuse_names_off_the_roster(store, tmp_path, monkeypatch):
    """``ebmops approve`` without a Prefect server: the decision goes through the state store."""
    from ebmops.adapters.approvals import StoreApprovals
    from ebmops.core.errors import NotOnRoster
    from ebmops.services.rollout import decide

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    settings = load_settings(home=tmp_path / "home")
    rid = _rollout(store, _plan(tmp_path))
    for phase in ("progressing", "analysing", "awaiting_approval"):
        store.update_region(rid, "us-east", phase=phase,
                            **({"awaiting_since": datetime.now(timezone.utc)} if phase == "awaiting_approval" else {}))
    store.update_rollout_phase(rid, "progressing")
    with pytest.raises(NotOnRoster):
        decide(settings, store, rid, approve=True, actor="mallory")
    out = decide(settings, store, rid, approve=False, actor="bob", comment="not today")
    assert out == {"rollout": rid, "region": "us-east", "decision": "reject", "actor": "bob", "via": "state-store"}
    got = StoreApprovals(store, poll_s=0.01).wait(rid, "us-east", 0, summary="", roster=["alice", "bob"],
                                                  deadline=datetime.now(timezone.utc) + timedelta(seconds=5))
    assert got == Decision(approve=False, actor="bob", comment="not today", recorded=True)
    assert [(d.actor, d.accepted) for d in store.list_decisions(rid)] == [("mallory", False), ("bob", True)]


def test_a_driver_that_lost_its_lease_writes_nothing_and_the_new_driver_finishes(store, tmp_path):
    """A driver paused past its lease's expiry (a stopped VM, SIGSTOP) and taken over: its next write is
    refused, inside the state store and before any desired-state or alias write; no record is doubled."""
    from ebmops.core.errors import LeaseLost
    from ebmops.core.state.lease import acquire

    rid = _rollout(store, _plan(tmp_path, approval=False))
    traffic, aliases = FakeTraffic(), FakeAliases()
    old = _ctl(store, traffic, aliases)
    old.lease = store.acquire_lease(rid, ttl_s=30)
    for _ in range(4):  # started, us-east pending -> progressing -> analysing -> progressing (step 2)
        assert old.advance(rid)
    taken = acquire(store, rid, ttl_s=30, now=datetime.now(timezone.utc) + timedelta(seconds=31))
    seen = (store.get_rollout(rid), list(traffic.writes), len(store.list_audit(limit=1000)), dict(aliases.aliases))
    for _ in range(3):
        with pytest.raises(LeaseLost, match=f"token {taken.token}"):
            old.run(rid)
    assert (store.get_rollout(rid), list(traffic.writes), len(store.list_audit(limit=1000)),
            dict(aliases.aliases)) == seen
    new = _ctl(store, traffic, aliases)
    new.lease = taken
    assert new.run(rid).phase == "promoted"
    analyses = [(e.region, e.payload["step"]) for e in store.list_audit(limit=1000) if e.kind == "analysis"]
    assert sorted(analyses) == sorted({(r, s) for r in REGIONS for s in range(3)})  # each step judged once
    assert verify(store).ok
