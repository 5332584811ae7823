"""Sync records in the state store, on SQLite and on a real PostgreSQL."""

import pytest

from ebmops.core.state import StateStore, SyncRecord


@pytest.fixture
def store(state_url):
    s = StateStore(state_url)
    yield s
    s.close()


def test_record_and_list_syncs_newest_first(store):
    big = 5 * 2**30  # beyond a 32-bit integer column
    a = store.record_sync(sync_id="s1", model_name="m", version="1", region="us-east", status="ok", seconds=0.25,
                          bytes_uploaded=big, blobs_uploaded=1, generation=1)
    b = store.record_sync(sync_id="s1", model_name="m", version="1", region="eu-west", status="failed", seconds=1.5,
                          message="StoreError: unreachable")
    assert isinstance(a, SyncRecord) and a.created_at.tzinfo is not None
    got = store.list_syncs()
    assert [r.id for r in got] == [b.id, a.id]
    assert got[1].bytes_uploaded == big and got[1].generation == 1 and got[1].seconds == 0.25
    assert (got[0].status, got[0].message, got[0].generation, got[0].blobs_skipped) == (
        "failed", "StoreError: unreachable", None, 0)


def test_list_syncs_filters(store):
    for sync_id, version, region in (("s1", "1", "us-east"), ("s1", "1", "eu-west"), ("s2", "2", "us-east")):
        store.record_sync(sync_id=sync_id, model_name="m", version=version, region=region, status="ok", seconds=0.1)
    store.record_sync(sync_id="s3", model_name="other", version="1", region="us-east", status="ok", seconds=0.1)
    assert len(store.list_syncs(model_name="m")) == 3
    assert [r.region for r in store.list_syncs(sync_id="s1")] == ["eu-west", "us-east"]
    assert [r.sync_id for r in store.list_syncs(model_name="m", region="us-east")] == ["s2", "s1"]
    assert [r.version for r in store.list_syncs(model_name="m", version="2")] == ["2"]
    assert len(store.list_syncs(limit=2)) == 2


@pytest.mark.parametrize("kwargs", [{"status": "done"}, {"seconds": -1.0}, {"bytes_uploaded": -5}])
def test_invalid_sync_records_are_refused_and_nothing_is_written(store, kwargs):
    args = {"sync_id": "s", "model_name": "m", "version": "1", "region": "us-east", "status": "ok", "seconds": 0.1}
    args.update(kwargs)
    with pytest.raises(ValueError):
        store.record_sync(**args)
    assert store.list_syncs() == []
