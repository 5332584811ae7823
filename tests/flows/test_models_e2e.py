"""Several sources, several models, end to end: real Prefect, real MLflow, real kdd99 and a user's CSV.

The issue's crash: a 9-feature CSV source trained with ``--dataset`` landed under the one registered
model and was gated on kdd99 against the kdd99 champion, and the TorchScript model failed inside the
gate ("size of tensor a (40) must match ... (9)"). Now the CSV is its own model, ``ebm-<name>``,
gated on its own data, and the kdd99 model and its champion are left alone."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

pytestmark = pytest.mark.slow

FEATURES = [f"m{i}" for i in range(9)]


def _write_csv(path, n_normal=3000, n_anomaly=60, seed=0):
    rng = np.random.default_rng(seed)
    x = np.vstack([rng.normal(0.0, 1.0, (n_normal, 9)), rng.normal(4.0, 0.5, (n_anomaly, 9))])
    frame = pd.DataFrame(x, columns=FEATURES)
    frame.insert(0, "id", np.arange(len(frame)))
    frame["is_attack"] = np.r_[np.zeros(n_normal), np.ones(n_anomaly)].astype(int)
    frame.sample(frac=1.0, random_state=seed).to_csv(path, index=False)


@pytest.fixture
def small_training(monkeypatch):
    """Tiny networks and samples, a short latency benchmark: CPU time stays low."""
    for k, v in {"EBMOPS_TRAINING__HIDDEN": "[16]", "EBMOPS_TRAINING__EVALUATION_ROWS": "20000",
                 "EBMOPS_TRAINING__CALIBRATION_ROWS": "20000", "EBMOPS_TRAINING__BASELINE_TREES": "10",
                 "EBMOPS_GATE__LATENCY_ITERATIONS": "200", "EBMOPS_GATE__LATENCY_MIN_ITERATIONS": "100",
                 "EBMOPS_GATE__LATENCY_WARMUP": "10"}.items():
        monkeypatch.setenv(k, v)


def test_a_csv_source_is_its_own_model_gated_on_its_own_data(prefect_server, flow_env, kdd99, small_training,
                                                             monkeypatch):
    from ebmops.cli.main import app
    from ebmops.core.settings import get_settings, load_settings
    from flows.train import train
    from registry import ModelRegistry
    from registry.desired_state import desired_key
    from registry.objectstore.factory import store_for_region

    kdd = train(epochs=1, progress=False, run_gate=False)
    assert kdd["model_name"] == "ebm-kdd99"
    kdd_reg = ModelRegistry.from_settings(load_settings())
    kdd_reg.set_alias("champion", kdd["version"])

    csv = flow_env.home / "mycsv.csv"
    _write_csv(csv)
    monkeypatch.setenv("EBMOPS_DATA__SOURCES", json.dumps(
        {"mycsv": {"path": str(csv), "features": FEATURES, "label": "is_attack", "event_id": "id"}}))
    get_settings.cache_clear()
    res = train(dataset="mycsv", epochs=1, progress=False)

    assert (res["model_name"], res["version"], res["dataset"]) == ("ebm-mycsv", "1", "mycsv")
    gate = res["gate"]["report"]
    assert gate["model_name"] == "ebm-mycsv" and gate["champion_version"] is None  # no kdd99 champion here
    assert gate["measurements"]["n_features"] == 9  # the window and holdout are the CSV's own
    s = load_settings()
    reg = ModelRegistry.from_settings(s).for_model("ebm-mycsv")
    v = reg.get_version("1")
    assert v.tags["dataset"] == "mycsv" and v.tags["n_features"] == "9"
    schema = json.loads(reg.download_artifact("1", "feature_schema.json", flow_env.home / "lineage").read_text())
    assert schema["features"] == FEATURES and schema["dataset"] == "mycsv"
    profile = json.loads(reg.download_artifact("1", "reference_profile.json", flow_env.home / "lineage").read_text())
    assert profile["dataset"] == "mycsv"

    # the kdd99 model is untouched: one version, still the champion
    assert [x.version for x in kdd_reg.list_versions()] == [kdd["version"]]
    assert kdd_reg.get_by_alias("champion").version == kdd["version"]

    listed = CliRunner().invoke(app, ["models", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {m["model"]: m for m in json.loads(listed.output)}
    assert rows["ebm-kdd99"]["champion"] == kdd["version"] and rows["ebm-kdd99"]["dataset"] == "kdd99"
    assert rows["ebm-mycsv"]["versions"] == 1 and rows["ebm-mycsv"]["dataset"] == "mycsv"

    # two models registered: a command that acts on one model must be told which
    ambiguous = CliRunner().invoke(app, ["models", "show", "@challenger"])
    assert ambiguous.exit_code != 0 and "ebm-kdd99, ebm-mycsv" in str(ambiguous.exception)
    shown = CliRunner().invoke(app, ["models", "show", "1", "--model", "ebm-mycsv", "--json"])
    assert shown.exit_code == 0 and json.loads(shown.output)["name"] == "ebm-mycsv"

    # regions status spans models: a model synced nowhere is listed as such, not as an inconsistency;
    # named, it is inconsistent (no desired state, no node: exit 7)
    monkeypatch.setenv("EBMOPS_SYNC__SIGNING_KEY", "h" * 40)
    get_settings.cache_clear()
    store_for_region(s, s.data.regions[0]).put_bytes(desired_key("ebm-kdd99"), b"{}")  # "synced" (unreadable)
    status = CliRunner().invoke(app, ["regions", "status", "--json"])
    report = json.loads(status.output)
    assert status.exit_code != 0 and report["consistent"] is False
    assert set(report["models"]) == {"ebm-kdd99"} and report["not_synced"] == ["ebm-mycsv"]
    named = CliRunner().invoke(app, ["regions", "status", "--model", "ebm-mycsv", "--json"])
    one = json.loads(named.output)
    assert named.exit_code != 0 and one["model"] == "ebm-mycsv" and set(one["regions"]) == set(s.data.regions)
