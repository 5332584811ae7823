"""The rollout lease (one driver per rollout), on SQLite and on a real PostgreSQL: acquisition and its
fencing token, expiry and take-over, fencing of a stale holder's writes, waiting for a held lease."""

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from ebmops.core.errors import LeaseLost, RolloutLeaseHeld
from ebmops.core.state import StateStore
from ebmops.core.state.audit import verify
from ebmops.core.state.lease import acquire, hold

PLAN = {"waves": [["us-east"], ["eu-west"]], "steps": [0.5, 1.0]}
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def store(state_url):
    s = StateStore(state_url)
    yield s
    s.close()


@pytest.fixture
def rid(store):
    return store.create_rollout(model_name="m", version="2", plan=PLAN, stable_before={"us-east": "1", "eu-west": "1"},
                                created_by="ana").id


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def test_one_holder_at_a_time_and_the_refusal_names_it(store, rid):
    a = acquire(store, rid, ttl_s=30, now=at(0), who=("h1:11:a", "h1", 11))
    assert a.token == 1 and a.expires_at == at(30)
    with pytest.raises(RolloutLeaseHeld) as e:
        acquire(store, rid, ttl_s=30, now=at(10), who=("h2:22:b", "h2", 22))
    assert (e.value.host, e.value.pid, e.value.expires_at, e.value.token) == ("h1", 11, at(30), 1)
    assert e.value.exit_code == 17 and "h1 pid 11" in str(e.value) and "12:00:30 UTC" in str(e.value)
    rec = store.get_lease(rid)
    assert (rec.holder, rec.token) == ("h1:11:a", 1) and rec.held_at(at(29)) and not rec.held_at(at(30))


def test_an_expired_lease_is_taken_over_at_once_with_a_greater_token(store, rid):
    a = acquire(store, rid, ttl_s=30, now=at(0))
    b = acquire(store, rid, ttl_s=30, now=at(30))  # a killed driver renews nothing: expired at 30 s
    assert b.token == a.token + 1
    store.release_lease(b)
    c = store.acquire_lease(rid, ttl_s=30)  # released: free at once, and the token still grows
    assert c.token == b.token + 1


def test_renewal_keeps_the_lease_and_a_lost_one_cannot_be_renewed(store, rid):
    a = acquire(store, rid, ttl_s=30, now=at(0))
    a = store.renew_lease(a, now=at(25))
    with pytest.raises(RolloutLeaseHeld):
        acquire(store, rid, ttl_s=30, now=at(40))  # renewed at 25 s: held until 55 s
    b = acquire(store, rid, ttl_s=30, now=at(56))
    with pytest.raises(LeaseLost, match=f"took it over \\(token {b.token}"):
        store.renew_lease(a, now=at(57))
    assert not store.release_lease(a)  # a stale holder cannot release the new holder's lease
    assert store.get_lease(rid).token == b.token and store.get_lease(rid).held_at(at(60))


def test_a_stale_holder_s_writes_are_refused_and_change_nothing(store, rid):
    stale = acquire(store, rid, ttl_s=30)
    store.update_rollout_phase(rid, "progressing", expected_old="pending", lease=stale)  # renews it by 30 s
    # the stale holder is paused past its expiry; another driver takes the rollout over
    fresh = acquire(store, rid, ttl_s=3600, now=datetime.now(timezone.utc) + timedelta(seconds=31))
    before = store.get_rollout(rid)
    n_audit = len(store.list_audit(limit=1000))
    with pytest.raises(LeaseLost) as e:
        store.update_region(rid, "us-east", phase="progressing", expected_phase="pending", lease=stale, weight=0.5)
    assert e.value.token == fresh.token and e.value.exit_code == 17
    with pytest.raises(LeaseLost):
        store.update_rollout_phase(rid, "rolling_back", expected_old="progressing", lease=stale)
    with pytest.raises(LeaseLost):
        store.record_decision(rid, kind="approve", actor="alice", region="us-east", lease=stale)
    with pytest.raises(LeaseLost):
        store.append_audit("analysis", model="m", version="2", region="us-east", actor="ebmops-rollout",
                           payload={"rollout": rid}, lease=stale)
    assert store.get_rollout(rid) == before
    assert store.list_decisions(rid) == [] and len(store.list_audit(limit=1000)) == n_audit
    # the holder's writes go through, and each renews its lease
    store.update_region(rid, "us-east", phase="progressing", expected_phase="pending", lease=fresh, weight=0.5)
    store.record_decision(rid, kind="approve", actor="alice", region="us-east", lease=fresh)
    store.append_audit("analysis", model="m", version="2", region="us-east", actor="ebmops-rollout",
                       payload={"rollout": rid}, lease=fresh)
    assert store.get_rollout(rid).region("us-east").phase == "progressing"
    assert [d.actor for d in store.list_decisions(rid)] == ["alice"] and verify(store).ok
    rec = store.get_lease(rid)
    assert rec.token == fresh.token and rec.renewed_at != rec.acquired_at


def test_racing_acquisitions_let_exactly_one_win(store, rid):
    for round_ in range(2):  # the first acquisition (INSERT) and a take-over (UPDATE)
        won, refused = [], []
        barrier = threading.Barrier(4)

        def go(i):
            barrier.wait()
            try:
                won.append(acquire(store, rid, ttl_s=30, now=at(100 * round_), who=(f"h:{i}:x", "h", i)))
            except RolloutLeaseHeld as e:
                refused.append(e)

        threads = [threading.Thread(target=go, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1 and len(refused) == 3, (won, refused)
        assert {e.pid for e in refused} == {won[0].pid} and won[0].token == round_ + 1


def test_a_lease_of_an_unknown_rollout_is_refused(store):
    with pytest.raises(Exception, match="no rollout nope"):
        acquire(store, "nope", ttl_s=30)


class FakeClock:
    def __init__(self, t: datetime):
        self.t = t

    def __call__(self) -> datetime:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += timedelta(seconds=s)


def test_a_second_driver_waits_then_exits_naming_the_holder(store, rid):
    clock = FakeClock(at(0))
    acquire(store, rid, ttl_s=60, now=at(0), who=("h1:11:a", "h1", 11))
    told = []
    with pytest.raises(RolloutLeaseHeld) as e:
        with hold(store, rid, ttl_s=60, wait_s=20, progress=told.append, clock=clock, sleep=clock.sleep):
            raise AssertionError("the second driver must not drive")
    assert clock() >= at(20) and clock() < at(21)  # it waited wait_s, no longer
    assert "h1 pid 11" in str(e.value) and "waited 20 s" in str(e.value) and e.value.expires_at == at(60)
    assert len(told) == 1 and "h1 pid 11" in told[0]


def test_a_driver_waiting_for_an_expiring_lease_takes_over_and_releases_at_the_end(store, rid):
    clock = FakeClock(at(0))
    first = acquire(store, rid, ttl_s=10, now=at(0))
    with hold(store, rid, ttl_s=10, wait_s=60, clock=clock, sleep=clock.sleep) as lease:
        assert lease.token == first.token + 1 and at(10) <= clock() < at(11)
        store.update_rollout_phase(rid, "progressing", lease=lease)
    assert store.get_rollout(rid).phase == "progressing"
    rec = store.get_lease(rid)
    assert rec.token == lease.token and not rec.held_at(datetime.now(timezone.utc))  # released


def test_the_holder_renews_while_it_drives(store, rid):
    with hold(store, rid, ttl_s=1.5, wait_s=0) as lease:
        deadline = time.monotonic() + 30
        while (rec := store.get_lease(rid)).renewed_at == rec.acquired_at:  # poll until the renewer ran
            assert time.monotonic() < deadline, "the lease was never renewed"
            time.sleep(0.05)
        assert rec.token == lease.token and rec.expires_at > lease.expires_at
        with pytest.raises(RolloutLeaseHeld):
            acquire(store, rid, ttl_s=1.5)


# PostgreSQL only: SQLite has no row locks, a writer frozen mid-transaction holds the whole database
# (busy_timeout, 30 s), so there is no in-flight renewal to tell apart from a held lease.
@pytest.mark.parametrize("state_url", ["postgres"], indirect=True)
def test_a_renewal_in_flight_counts_as_held_instead_of_blocking_the_next_driver(store, rid):
    """PostgreSQL: a holder frozen inside its renewal keeps the lease row locked; a driver trying to take the
    lease over gets ``RolloutLeaseHeld`` after the lock timeout (and may wait and retry), not a hang."""
    assert store.engine.dialect.name == "postgresql"
    from sqlalchemy import text

    held = acquire(store, rid, ttl_s=30, now=at(0))
    with store.engine.connect() as frozen_holder:
        tx = frozen_holder.begin()
        frozen_holder.execute(text("UPDATE rollout_leases SET renewed_at = renewed_at WHERE rollout_id = :r"),
                              {"r": rid})
        t = time.monotonic()
        with pytest.raises(RolloutLeaseHeld) as e:
            acquire(store, rid, ttl_s=30, now=at(60))  # expired by the clock, but its renewal is in flight
        assert time.monotonic() - t < 20 and e.value.token == held.token
        tx.rollback()
    assert acquire(store, rid, ttl_s=30, now=at(60)).token == held.token + 1
