"""Drift observations and hotfix records, on SQLite and PostgreSQL."""

from datetime import datetime, timedelta, timezone

import pytest

from ebmops.core.settings import load_settings
from ebmops.core.state import open_store
from ebmops.core.state.store import HotfixConflict


@pytest.fixture
def store(state_url, tmp_path):
    s = open_store(load_settings(home=tmp_path / "home", state_url=state_url))
    yield s
    s.close()


def test_observations_are_kept_with_their_sketch_and_found_by_time(store):
    t0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
    for h in range(0, 48, 6):
        store.record_drift(model_name="m", version="1", region="eu-west", delta=h / 100, level="ok",
                           reference_kind="calibration", reference_at=None, n_events=500, quantiles=[0.0, h, 2.0 * h],
                           created_at=t0 + timedelta(hours=h))
    store.record_drift(model_name="m", version="1", region="us-east", delta=0.5, level="hotfix",
                       reference_kind="calibration", reference_at=None, n_events=500, quantiles=[1.0],
                       created_at=t0 + timedelta(hours=12))
    found = store.list_drift(model_name="m", region="eu-west", since=t0 + timedelta(hours=10),
                             until=t0 + timedelta(hours=25))
    assert [o.quantiles[1] for o in found] == [24, 18, 12]  # newest first, region filtered
    assert found[0].created_at == t0 + timedelta(hours=24)


def test_one_hotfix_per_model_and_region_in_flight(store):
    first = store.start_hotfix(model_name="m", region="eu-west", version="3", delta=0.2)
    with pytest.raises(HotfixConflict) as e:
        store.start_hotfix(model_name="m", region="eu-west", version="3", delta=0.3)
    assert e.value.active_id == first.id and first.id in str(e.value)
    other = store.start_hotfix(model_name="m", region="us-east", version="3", delta=0.3)  # another region may
    assert other.status == "running"
    done = store.update_hotfix(first.id, status="succeeded", event="serving v4", new_version="4")
    assert done.finished_at is not None and done.timeline[-1]["event"] == "serving v4"
    again = store.start_hotfix(model_name="m", region="eu-west", version="4", delta=0.25)  # the slot is free again
    assert again.status == "running"
    assert [h.id for h in store.list_hotfixes(model_name="m", region="eu-west")] == [again.id, first.id]
