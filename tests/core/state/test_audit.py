"""The tamper-evident audit log on SQLite and on a real PostgreSQL; tampering by raw SQL."""

import hashlib
import json
import threading

import pytest
from sqlalchemy import text

from ebmops.core.state import audit
from ebmops.core.state.audit import GENESIS_HASH, AuditLog, AuditRecord, verify
from ebmops.core.state import StateStore


@pytest.fixture
def store(state_url):
    s = StateStore(state_url)
    yield s
    s.close()


def fill(store, n=5):
    log = AuditLog(store)
    kinds = ["registration", "gate", "sync", "rollout_step", "analysis", "approval", "promotion"]
    return [log.append(kinds[i % len(kinds)], model="m" if i % 2 == 0 else "other", version=str(i + 1),
                       region="us-east" if i % 3 == 0 else None, actor=f"actor{i}",
                       payload={"i": i, "score": 99.5, "nested": {"b": [1, 2], "a": None}, "ratio": float("inf")})
            for i in range(n)]


def sql(store, statement, **params):
    with store.engine.begin() as c:
        c.execute(text(statement), params)


def test_append_chains_records_and_verifies(store):
    recs = fill(store)
    assert [r.seq for r in recs] == [1, 2, 3, 4, 5]
    assert recs[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in zip(recs, recs[1:]))
    assert recs[0].payload["ratio"] == "inf"  # strict JSON
    body = {"seq": 1, "created_at": recs[0].created_at.isoformat(), "kind": "registration", "model": "m",
            "version": "1", "region": "us-east", "actor": "actor0", "payload": recs[0].payload,
            "prev_hash": GENESIS_HASH}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert recs[0].hash == hashlib.sha256(canonical.encode()).hexdigest()
    v = verify(store)
    assert v.ok and v.n_records == 5 and v.first_bad_seq is None and v.last_hash == recs[-1].hash


def test_empty_log_verifies(store):
    v = verify(store)
    assert v.ok and v.n_records == 0 and v.last_hash is None


def test_list_newest_first_and_by_model(store):
    fill(store)
    log = AuditLog(store)
    got = log.list()
    assert isinstance(got[0], AuditRecord) and [r.seq for r in got] == [5, 4, 3, 2, 1]
    assert [r.seq for r in log.list(model="m")] == [5, 3, 1]
    assert [r.seq for r in log.list(limit=2)] == [5, 4]
    assert [r.seq for r in store.list_audit(model="other")] == [4, 2]
    assert got[-1].payload["nested"] == {"b": [1, 2], "a": None}


def test_unknown_kind_and_missing_actor_are_refused(store):
    with pytest.raises(ValueError, match="audit kind"):
        audit.append(store, "coffee", actor="ana")
    with pytest.raises(ValueError, match="actor"):
        audit.append(store, "gate", actor="")
    assert verify(store).n_records == 0


def test_edited_record_is_caught(store):
    fill(store)
    sql(store, "UPDATE audit_log SET actor = 'mallory' WHERE seq = 3")
    v = verify(store)
    assert not v.ok and v.first_bad_seq == 3 and v.problem.startswith("edited") and "record 3" in v.problem


def test_edited_payload_is_caught(store):
    fill(store)
    cast = "CAST(:p AS JSON)" if store.engine.dialect.name == "postgresql" else ":p"
    sql(store, f"UPDATE audit_log SET payload = {cast} WHERE seq = 2", p=json.dumps({"i": 1, "score": 100}))
    v = verify(store)
    assert not v.ok and v.first_bad_seq == 2 and v.problem.startswith("edited")


def test_deleted_record_is_caught(store):
    fill(store)
    sql(store, "DELETE FROM audit_log WHERE seq = 3")
    v = verify(store)
    assert not v.ok and v.first_bad_seq == 3 and v.problem.startswith("deleted")
    assert "seq jumps from 2 to 4" in v.problem


def test_deleted_first_record_is_caught(store):
    fill(store)
    sql(store, "DELETE FROM audit_log WHERE seq = 1")
    v = verify(store)
    assert not v.ok and v.first_bad_seq == 1 and "starts at seq 2" in v.problem


def test_deleted_and_renumbered_record_is_caught(store):
    fill(store)
    sql(store, "DELETE FROM audit_log WHERE seq = 3")
    for seq in (4, 5):
        sql(store, "UPDATE audit_log SET seq = :new WHERE seq = :old", new=seq - 1, old=seq)
    v = verify(store)
    assert not v.ok and v.first_bad_seq == 3


def test_swapped_records_are_caught(store):
    fill(store)
    sql(store, "UPDATE audit_log SET seq = -1 WHERE seq = 2")
    sql(store, "UPDATE audit_log SET seq = 2 WHERE seq = 3")
    sql(store, "UPDATE audit_log SET seq = 3 WHERE seq = -1")
    v = verify(store)
    assert not v.ok and v.first_bad_seq == 2 and v.problem.startswith("reordered")


def test_relinked_record_is_caught(store):
    # a record rewritten with a consistent hash of its own, but linked to the wrong predecessor
    recs = fill(store)
    r = recs[3]
    fake_prev = recs[1].hash
    h = audit.record_hash(seq=r.seq, created_at=r.created_at, kind=r.kind, model=r.model, version=r.version,
                          region=r.region, actor=r.actor, payload=r.payload, prev_hash=fake_prev)
    sql(store, "UPDATE audit_log SET prev_hash = :p, hash = :h WHERE seq = 4", p=fake_prev, h=h)
    v = verify(store)
    assert not v.ok and v.first_bad_seq == 4 and "does not follow record 3" in v.problem


def test_verify_reads_in_batches(store):
    fill(store, 7)
    assert verify(store, batch=2).ok
    sql(store, "DELETE FROM audit_log WHERE seq = 6")
    v = verify(store, batch=2)
    assert v.first_bad_seq == 6 and v.n_records == 6


def test_record_slipped_in_before_the_chain_is_caught(store):
    fill(store, 3)
    sql(store, "UPDATE audit_log SET seq = 0 WHERE seq = 3")
    v = verify(store)
    assert not v.ok and v.first_bad_seq == 0 and v.problem.startswith("inserted")


def test_concurrent_appends_keep_one_chain(state_url):
    stores = [StateStore(state_url) for _ in range(3)]  # separate engines, as separate processes would have
    errors = []

    def go(s, k):
        try:
            for i in range(6):
                audit.append(s, "analysis", model="m", actor=f"w{k}", payload={"i": i})
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=go, args=(s, k)) for k, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        v = verify(stores[0])
        assert v.ok and v.n_records == 18
        assert sorted(r.seq for r in audit.list_entries(stores[0], limit=100)) == list(range(1, 19))
    finally:
        for s in stores:
            s.close()


# ---- the command line (``ebmops audit``; run with the app registered as main.py will) ----------------

def cli(args, home):
    import os
    import subprocess
    import sys

    boot = ("import sys; from ebmops.cli import main as m; from ebmops.cli.audit import audit_app; "
            "m.app.add_typer(audit_app, name='audit'); sys.argv = ['ebmops'] + sys.argv[1:]; m.main()")
    from pathlib import Path

    # verify needs the audit key; the records below are written without one (as before MACs existed)
    env = {**os.environ, "EBMOPS_HOME": str(home), "COLUMNS": "200", "EBMOPS_SYNC__SIGNING_KEY": "k" * 40,
           "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    env.pop("EBMOPS_CONFIG", None)
    return subprocess.run([sys.executable, "-c", boot, *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=home.parent)


def test_cli_verify_and_log(tmp_path):
    home = tmp_path / "home"
    store = StateStore(f"sqlite:///{home / 'state.db'}")
    fill(store, 4)
    r = cli(["audit", "verify", "--json"], home)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ok"] is True and json.loads(r.stdout)["n_legacy"] == 4
    r = cli(["audit", "log", "--model", "m", "--json"], home)
    assert r.returncode == 0, r.stderr
    assert [x["seq"] for x in json.loads(r.stdout)] == [3, 1]
    r = cli(["audit", "log", "--limit", "2"], home)
    assert r.returncode == 0 and "rollout_step" in r.stdout and "registration" not in r.stdout
    sql(store, "UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
    store.close()
    r = cli(["audit", "verify"], home)
    assert r.returncode == 8
    assert "record 2" in r.stderr and "edited" in r.stderr
    r = cli(["audit", "verify", "--json"], home)
    assert r.returncode == 8 and json.loads(r.stdout)["first_bad_seq"] == 2


# ---- MACs: a database writer who recomputes the chain (ebmops/core/state/audit_key.py) -----------------

from datetime import datetime, timezone  # noqa: E402

from ebmops.core.state.audit_checkpoint import (  # noqa: E402
    CheckpointInvalid,
    CheckpointOtherKey,
    make_document,
    read_document,
)
from ebmops.core.state.audit_key import derive  # noqa: E402
from tests.core.state import attacker  # noqa: E402

KEY = derive(b"audit-test-secret-" + b"s" * 32)


@pytest.fixture
def keyed(state_url):
    s = StateStore(state_url, audit_key=KEY)
    yield s
    s.close()


def checkpoint_of(store, key=KEY):
    """The checkpoint the services would write now, read back as verify gets it."""
    v = verify(store, key=key)
    doc = make_document(seq=v.last_seq, head_hash=v.last_hash, legacy=v.n_legacy, key=key)
    return read_document(json.dumps(doc).encode(), key, where="test")


def test_records_carry_a_mac_of_their_body(keyed):
    recs = fill(keyed, 3)
    assert all(r.mac_key_id == KEY.key_id and len(r.mac) == 64 for r in recs)
    body = audit.record_body(seq=2, created_at=recs[1].created_at, kind=recs[1].kind, model=recs[1].model,
                             version=recs[1].version, region=recs[1].region, actor=recs[1].actor,
                             payload=recs[1].payload, prev_hash=recs[1].prev_hash)
    assert KEY.check("record", body, recs[1].mac) and not KEY.check("checkpoint", body, recs[1].mac)
    v = verify(keyed)
    assert v.ok and v.macs_checked and v.n_legacy == 0 and v.key_id == KEY.key_id and v.last_seq == 3


def test_a_recomputed_chain_is_caught_by_the_mac(keyed, state_url):
    fill(keyed, 5)
    attacker.rewrite(state_url, 3)
    assert verify(keyed, key=None).ok  # the chain alone: the rewrite is invisible
    v = verify(keyed)
    assert not v.ok and v.first_bad_seq == 3 and v.problem.startswith("rewritten: record 3")
    assert "mallory" in v.problem


def test_a_stripped_mac_is_caught(keyed):
    fill(keyed, 4)
    sql(keyed, "UPDATE audit_log SET mac = NULL WHERE seq = 3")
    v = verify(keyed)
    assert not v.ok and v.first_bad_seq == 3 and v.problem.startswith("unauthenticated: record 3")


def test_a_record_macd_with_another_key_is_named(keyed, state_url):
    fill(keyed, 2)
    other = StateStore(state_url, audit_key=derive(b"another-secret-" + b"x" * 32))
    try:
        audit.append(other, "gate", actor="eve")
    finally:
        other.close()
    v = verify(keyed)
    assert not v.ok and v.first_bad_seq == 3 and "wrong key" in v.problem and KEY.key_id in v.problem


def test_legacy_records_before_macs_are_counted_not_failed(store, state_url):
    fill(store, 3)  # a store without a key: records without a MAC, as before MACs existed
    keyed_store = StateStore(state_url, audit_key=KEY)
    try:
        fill(keyed_store, 2)
        v = verify(keyed_store)
        assert v.ok and v.n_records == 5 and v.n_legacy == 3
    finally:
        keyed_store.close()


# ---- checkpoints: the head of the log outside the database (audit_checkpoint.py) -----------------------

def test_a_cut_off_tail_is_caught_by_the_checkpoint(keyed, state_url):
    fill(keyed, 5)
    cp = checkpoint_of(keyed)
    assert verify(keyed, checkpoint=cp).ok
    attacker.delete_tail(state_url, 2)
    assert verify(keyed).ok  # without the checkpoint the cut is invisible
    v = verify(keyed, checkpoint=cp)
    assert not v.ok and v.first_bad_seq == 4 and v.problem.startswith("truncated: records after seq 3 are missing")


def test_a_rewrite_with_macs_stripped_is_caught_by_the_checkpoint(keyed, state_url):
    fill(keyed, 5)
    cp = checkpoint_of(keyed)
    attacker.rewrite(state_url, 2, strip_macs=True)  # now every record looks like a legacy one
    v = verify(keyed, checkpoint=cp)
    assert not v.ok and v.first_bad_seq == 5 and v.problem.startswith("rewritten: record 5 was rewritten")


def test_macs_stripped_below_the_checkpoint_are_caught(keyed, state_url):
    fill(keyed, 3)
    cp = checkpoint_of(keyed)
    fill(keyed, 2)
    sql(keyed, "UPDATE audit_log SET mac = NULL")  # hashes unchanged: only the MACs went
    v = verify(keyed, checkpoint=cp)
    assert not v.ok and v.problem.startswith("unauthenticated: records 1-5 have no MAC")


def test_records_after_a_checkpoint_of_a_legacy_log_need_a_mac(store, keyed, state_url):
    fill(store, 2)  # legacy records, then a checkpoint of them (the first hour after the upgrade)
    cp = checkpoint_of(keyed)
    assert cp.legacy == 2
    fill(keyed, 3)
    assert verify(keyed, checkpoint=cp).ok
    attacker.rewrite(state_url, 4, strip_macs=True)  # records 3-5 now look like legacy ones, and 4 was changed
    v = verify(keyed, checkpoint=cp)
    assert not v.ok and v.first_bad_seq == 3 and v.problem.startswith("unauthenticated: records 3-5 have no MAC")


def test_a_checkpoint_is_authenticated():
    doc = make_document(seq=4, head_hash="a" * 64, legacy=0, key=KEY, now=datetime(2026, 1, 1, tzinfo=timezone.utc))
    cp = read_document(json.dumps(doc).encode(), KEY, where="x")
    assert (cp.seq, cp.head_hash, cp.time) == (4, "a" * 64, "2026-01-01T00:00:00+00:00")
    with pytest.raises(CheckpointInvalid, match="does not match its MAC"):
        read_document(json.dumps({**doc, "seq": 9}).encode(), KEY, where="x")
    with pytest.raises(CheckpointOtherKey, match="key rotated"):
        read_document(json.dumps(doc).encode(), derive(b"z" * 40), where="x")
    with pytest.raises(CheckpointInvalid, match="not an audit checkpoint"):
        read_document(b'{"seq": 1}', KEY, where="x")


# ---- the MAC columns on a database made before they existed -------------------------------------------

def test_an_old_database_gets_the_mac_columns_and_keeps_its_records(state_url):
    old = StateStore(state_url)
    fill(old, 3)
    sql(old, "ALTER TABLE audit_log DROP COLUMN mac")
    sql(old, "ALTER TABLE audit_log DROP COLUMN mac_key_id")
    old.close()
    stores = [StateStore(state_url, audit_key=KEY) for _ in range(2)]  # the second finds them added
    try:
        audit.append(stores[1], "promotion", actor="ebmops-rollout")
        v = verify(stores[0])
        assert v.ok and v.n_records == 4 and v.n_legacy == 3
    finally:
        for s in stores:
            s.close()


def test_a_drivers_fenced_append_is_macd_too(keyed):
    # the rollout controller appends through its lease (lease.FencedStore): the store's key must reach it
    rid = keyed.create_rollout(model_name="m", version="2", plan={"waves": [["us-east"]], "steps": [1.0]},
                               stable_before={"us-east": "1"}, created_by="ana").id
    lease = keyed.acquire_lease(rid, ttl_s=60)
    rec = keyed.append_audit("promotion", model="m", actor="ebmops-rollout", lease=lease)
    assert rec.mac_key_id == KEY.key_id and verify(keyed).ok
