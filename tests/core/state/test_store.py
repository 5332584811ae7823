"""The state store on SQLite and on a real PostgreSQL."""

import pytest

from ebmops.core.state import StateStore
from ebmops.core.state.store import StateStoreError


@pytest.fixture
def store(state_url):
    s = StateStore(state_url)
    yield s
    s.close()


def test_training_run_lifecycle(store):
    rec = store.start_training_run("kdd99", data_fingerprint="abc")
    assert rec.status == "running" and rec.created_at.tzinfo is not None
    done = store.finish_training_run(rec.id, status="registered", device="cpu", seconds=12.5,
                                     metrics={"ebm_auroc": 0.99}, model_name="m", model_version="3")
    assert done.status == "registered" and done.finished_at >= done.created_at
    again = store.get_training_run(rec.id)
    assert again.metrics == {"ebm_auroc": 0.99} and again.model_version == "3" and again.device == "cpu"


def test_list_training_runs_newest_first(store):
    ids = [store.start_training_run(f"d{i}").id for i in range(3)]
    assert [r.id for r in store.list_training_runs()] == ids[::-1]
    assert len(store.list_training_runs(limit=2)) == 2


def test_finish_unknown_run_is_an_error(store):
    with pytest.raises(StateStoreError, match="no training run"):
        store.finish_training_run("nope", status="failed")


def test_finish_rejects_unknown_field_and_changes_nothing(store):
    rec = store.start_training_run("kdd99")
    with pytest.raises(ValueError, match="unknown training run fields"):
        store.finish_training_run(rec.id, status="failed", colour="red")
    assert store.get_training_run(rec.id).status == "running"


def test_quarantine_records(store):
    store.record_quarantine(dataset="kdd99", region="eu-west", n_rows=10, path="/q/1",
                            failures=[{"expectation": "x", "column": "a"}])
    store.record_quarantine(dataset="kdd99", region="us-east", n_rows=5, path="/q/2", failures=[])
    got = store.list_quarantine()
    assert [q.path for q in got] == ["/q/2", "/q/1"]
    assert got[1].failures == [{"expectation": "x", "column": "a"}]


def test_state_survives_reopen(state_url):
    s1 = StateStore(state_url)
    rid = s1.start_training_run("kdd99").id
    s1.close()
    s2 = StateStore(state_url)
    assert s2.get_training_run(rid).dataset == "kdd99"
    s2.close()


def test_unreachable_database_error_names_the_setting():
    with pytest.raises(StateStoreError, match="state_url"):
        StateStore("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2")


def test_gate_reports_newest_first_and_filtered(store):
    store.record_gate_report(model_name="m", version="1", verdict="skipped", champion_version=None,
                             report={"verdict": "skipped", "checks": []})
    store.record_gate_report(model_name="m", version="2", verdict="fail", champion_version="1",
                             report={"verdict": "fail", "checks": [{"name": "latency_vs_champion"}]})
    store.record_gate_report(model_name="other", version="1", verdict="pass", champion_version=None, report={})
    got = store.list_gate_reports(model_name="m")
    assert [(g.version, g.verdict) for g in got] == [("2", "fail"), ("1", "skipped")]
    assert got[0].report["checks"][0]["name"] == "latency_vs_champion" and got[0].champion_version == "1"
    assert [g.model_name for g in store.list_gate_reports(version="1")] == ["other", "m"]
