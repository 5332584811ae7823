"""The train flow end to end on a real Prefect server, real MLflow and the real kdd99 data."""

import json
import numpy as np
import pytest

from ebmops.core.errors import ValidationFailed
from ebmops.core.state import open_store

pytestmark = pytest.mark.slow


def test_train_flow_validates_trains_and_registers(prefect_server, flow_env, kdd99):
    from flows.train import train
    from registry import ModelRegistry

    res = train(epochs=2, progress=False)
    assert res["version"] == "1" and res["dataset"] == "kdd99"
    assert {r["region"] for r in res["regions"]} == {"us-east", "eu-west", "ap-south"}
    m = res["metrics"]
    assert 0.9 < m["ebm_auroc"] <= 1 and 0 < m["iforest_auroc"] <= 1
    reg = ModelRegistry.from_settings(flow_env)
    v = reg.get_by_alias("challenger")
    assert v.version == "1" and v.tags["dataset"] == "kdd99"
    assert v.threshold == pytest.approx(res["threshold"])
    assert res["gate"]["verdict"] == "skipped"  # no champion yet: comparisons skipped, the rest passed
    assert v.version == reg.get_by_alias("candidate").version
    run = open_store(flow_env).get_training_run(res["state_run_id"])
    assert run.status == "registered" and run.model_version == "1" and run.device == "cpu"
    assert not (flow_env.checkpoint_dir / "x").exists()


def test_bad_batch_is_quarantined_and_nothing_is_trained(prefect_server, flow_env, kdd99, monkeypatch):
    from flows.train import train
    from registry import ModelRegistry

    feats = list(kdd99.schema.features)
    good = kdd99.frame.sample(3000, random_state=0)
    src = flow_env.home / "events.parquet"
    good[["event_id", "label", *feats]].to_parquet(src)
    monkeypatch.setenv("EBMOPS_DATA__SOURCES", json.dumps(
        {"mine": {"path": str(src), "features": feats, "label": "label", "event_id": "event_id"}}))
    train(dataset="mine", epochs=1, progress=False, run_gate=False)  # creates the reference profile and v1

    bad = good.copy()
    bad.loc[bad.index[:50], feats[3]] = 7.5       # far outside the reference range
    bad.loc[bad.index[50:60], feats[5]] = np.nan  # nulls
    bad[["event_id", "label", *feats]].to_parquet(src)
    with pytest.raises(ValidationFailed) as err:
        train(dataset="mine", epochs=1, progress=False, run_gate=False)
    msg = str(err.value)
    assert feats[3] in msg and feats[5] in msg and "quarantine" in msg.lower()
    # the source is its own model, ebm-mine: nothing new is registered under it
    assert len(ModelRegistry.from_settings(flow_env).for_model("ebm-mine").list_versions()) == 1
    store = open_store(flow_env)
    assert store.list_training_runs(limit=1)[0].status == "quarantined"
    assert store.list_quarantine(), "the failing batch is recorded"
