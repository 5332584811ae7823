"""Rollouts, their regions and decisions in the state store, on SQLite and on a real PostgreSQL."""

import threading

import pytest

from ebmops.core.phases import Phase, TransitionRefused
from ebmops.core.errors import RolloutConflict
from ebmops.core.state import DecisionRecord, RolloutRecord, StateStore
from ebmops.core.state.store import StateStoreError

PLAN = {"waves": [["us-east"], ["eu-west", "ap-south"]], "steps": [0.05, 1.0]}
STABLE = {"us-east": "3", "eu-west": "3", "ap-south": None}


@pytest.fixture
def store(state_url):
    s = StateStore(state_url)
    yield s
    s.close()


def new(store, model="m", version="4", **kw):
    return store.create_rollout(model_name=model, version=version, plan=PLAN, stable_before=STABLE,
                                created_by="ana", **kw)


def test_create_and_read_back(store):
    r = new(store)
    assert isinstance(r, RolloutRecord) and r.phase == "pending" and r.active and r.created_by == "ana"
    assert [(x.region, x.wave, x.phase, x.stable_version, x.canary_version, x.weight) for x in r.regions] == [
        ("us-east", 0, "pending", "3", "4", 0.0), ("eu-west", 1, "pending", "3", "4", 0.0),
        ("ap-south", 1, "pending", None, "4", 0.0)]
    got = store.get_rollout(r.id)
    assert got == r and got.plan == PLAN and got.stable_before == STABLE and got.created_at.tzinfo is not None
    assert store.active_rollout("m").id == r.id and store.active_rollout("other") is None
    assert store.get_rollout("nope") is None


def test_second_active_rollout_is_refused_with_the_active_id(store):
    first = new(store)
    with pytest.raises(RolloutConflict) as e:
        new(store, version="5")
    assert e.value.active_id == first.id and first.id in str(e.value)
    assert len(store.list_rollouts(model_name="m")) == 1
    new(store, model="other")  # another model is independent


def test_concurrent_creates_let_exactly_one_win(store):
    results, errors = [], []
    barrier = threading.Barrier(4)

    def go(v):
        barrier.wait()
        try:
            results.append(new(store, version=str(v)))
        except RolloutConflict as e:
            errors.append(e)

    threads = [threading.Thread(target=go, args=(v,)) for v in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 1 and len(errors) == 3
    assert {e.active_id for e in errors} == {results[0].id}


def test_database_refuses_a_second_active_row_even_past_the_check(store):
    first = new(store)
    real, calls = store.active_rollout, []

    def blind_once(model):  # simulate the race: the pre-check saw nothing, the create lost at insert
        calls.append(model)
        return None if len(calls) == 1 else real(model)

    store.active_rollout = blind_once
    with pytest.raises(RolloutConflict) as e:
        new(store, version="5")
    del store.active_rollout
    assert e.value.active_id == first.id and len(calls) == 2
    with pytest.raises(StateStoreError, match="cannot create rollout"):
        new(store, model="other", rollout_id=first.id)  # a reused id is not a conflict


def test_terminal_rollout_frees_the_model(store):
    r = new(store)
    store.update_rollout_phase(r.id, Phase.ABORTED, expected_old=Phase.PENDING, message="stopped by ana")
    done = store.get_rollout(r.id)
    assert done.phase == "aborted" and not done.active and done.message == "stopped by ana"
    assert store.active_rollout("m") is None
    r2 = new(store, version="5")
    assert [x.id for x in store.list_rollouts(model_name="m")] == [r2.id, r.id]
    assert [x.id for x in store.list_rollouts(active=True)] == [r2.id]
    assert [x.id for x in store.list_rollouts(active=False)] == [r.id]


def test_phase_walk_and_compare_and_set(store):
    r = new(store)
    for old, nxt in [("pending", "progressing"), ("progressing", "analysing"), ("analysing", "progressing"),
                     ("progressing", "analysing"), ("analysing", "awaiting_approval"),
                     ("awaiting_approval", "promoting"), ("promoting", "promoted")]:
        got = store.update_rollout_phase(r.id, nxt, expected_old=old)
        assert got.phase == nxt
    assert not store.get_rollout(r.id).active


def test_lost_update_is_refused(store):
    r = new(store)
    store.update_rollout_phase(r.id, "progressing", expected_old="pending")
    # a second writer that still believes the rollout is pending
    with pytest.raises(TransitionRefused, match="is progressing, not pending as expected"):
        store.update_rollout_phase(r.id, "aborted", expected_old="pending")
    assert store.get_rollout(r.id).phase == "progressing"


def test_concurrent_phase_writers_only_one_wins(store):
    r = new(store)
    store.update_rollout_phase(r.id, "progressing")
    store.update_rollout_phase(r.id, "analysing")
    wins, refusals = [], []
    barrier = threading.Barrier(2)

    def go(target):
        barrier.wait()
        try:
            wins.append(store.update_rollout_phase(r.id, target, expected_old="analysing").phase)
        except TransitionRefused as e:
            refusals.append(e)

    threads = [threading.Thread(target=go, args=(t,)) for t in ("promoting", "rolling_back")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(refusals) == 1
    assert store.get_rollout(r.id).phase == wins[0]


def test_illegal_transition_is_refused_and_nothing_changes(store):
    r = new(store)
    with pytest.raises(TransitionRefused, match="from pending to promoted"):
        store.update_rollout_phase(r.id, Phase.PROMOTED)
    assert store.get_rollout(r.id).phase == "pending" and store.get_rollout(r.id).active
    with pytest.raises(StateStoreError, match="no rollout nope"):
        store.update_rollout_phase("nope", "progressing")


def test_region_updates(store):
    r = new(store)
    analysis = {"verdict": "pass", "score": 100.0, "metrics": []}
    reg = store.update_region(r.id, "us-east", phase="progressing", expected_phase="pending", step_index=0,
                              weight=0.05)
    assert (reg.phase, reg.step_index, reg.weight) == ("progressing", 0, 0.05)
    reg = store.update_region(r.id, "us-east", phase="analysing", last_analysis=analysis, failed_checks=["x"])
    assert reg.last_analysis == analysis and reg.failed_checks == ["x"]
    got = store.get_rollout(r.id)
    assert got.region("us-east").phase == "analysing" and got.region("eu-west").phase == "pending"
    assert got.updated_at >= r.updated_at
    with pytest.raises(TransitionRefused, match="region us-east .* from analysing to pending"):
        store.update_region(r.id, "us-east", phase="pending")
    with pytest.raises(TransitionRefused, match="is analysing, not progressing as expected"):
        store.update_region(r.id, "us-east", expected_phase="progressing", weight=0.25)
    with pytest.raises(ValueError, match="unknown rollout region fields"):
        store.update_region(r.id, "us-east", colour="red")
    with pytest.raises(ValueError, match="weight"):
        store.update_region(r.id, "us-east", weight=1.5)
    with pytest.raises(StateStoreError, match="no region 'mars'"):
        store.update_region(r.id, "mars", weight=0.1)
    assert store.get_rollout(r.id).region("us-east").weight == 0.05


def test_decisions(store):
    r = new(store)
    a = store.record_decision(r.id, kind="approve", actor="oncall", region="us-east", wave=0, comment="lgtm",
                              analysis={"verdict": "pass", "score": 100.0})
    b = store.record_decision(r.id, kind="approve", actor="mallory", wave=1, accepted=False,
                              refusal_reason="mallory is not on the oncall roster")
    store.record_decision(r.id, kind="timeout", actor="ebmops", wave=1)
    assert isinstance(a, DecisionRecord) and a.accepted and a.created_at.tzinfo is not None
    got = store.list_decisions(r.id)
    assert [d.id for d in got] == [a.id, b.id, got[2].id]
    assert got[0].analysis == {"verdict": "pass", "score": 100.0} and got[0].comment == "lgtm"
    assert not got[1].accepted and "roster" in got[1].refusal_reason
    assert [d.kind for d in store.list_decisions(r.id, kind="timeout")] == ["timeout"]
    assert [d.id for d in store.list_decisions(region="us-east")] == [a.id]
    with pytest.raises(ValueError, match="decision kind"):
        store.record_decision(r.id, kind="maybe", actor="x")
    with pytest.raises(ValueError, match="refusal_reason"):
        store.record_decision(r.id, kind="approve", actor="x", accepted=False)
    with pytest.raises(StateStoreError, match="no rollout"):
        store.record_decision("nope", kind="approve", actor="x")
