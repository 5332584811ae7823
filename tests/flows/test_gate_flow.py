"""The gate end to end: real Prefect, real MLflow, real kdd99, real TorchScript benchmarks.

v1 is made champion by hand (promotion is the rollout's job). Then an ordinary retrain passes,
a much wider network fails the latency comparison, and a model trained on shifted data fails
the energy-drift check."""

import json

import pytest

from ebmops.core.state import open_store

pytestmark = pytest.mark.slow


def _verdicts(out):
    return {c["name"]: c["verdict"] for c in out["report"]["checks"]}


def test_gate_passes_a_retrain_and_catches_slow_and_shifted_candidates(prefect_server, flow_env, kdd99, monkeypatch):
    from flows.gate import gate
    from flows.train import train
    from registry import ModelRegistry

    reg = ModelRegistry.from_settings(flow_env)
    first = train(epochs=4, progress=False, run_gate=False)
    reg.set_alias("champion", first["version"])

    retrain = train(epochs=4, seed=1, progress=False)["gate"]
    v = _verdicts(retrain)
    assert retrain["verdict"] == "pass", retrain["report"]["checks"]
    assert retrain["champion"] == first["version"] and v["latency_vs_champion"] == "pass"
    assert reg.get_by_alias("candidate").version == retrain["version"]
    tags = reg.get_version(retrain["version"]).tags
    assert tags["gate.verdict"] == "pass" and tags["gate.energy_shift"] == "pass"

    monkeypatch.setenv("EBMOPS_TRAINING__HIDDEN", "[1024, 1024]")
    slow = train(epochs=1, progress=False)["gate"]
    assert slow["verdict"] == "fail" and _verdicts(slow)["latency_vs_champion"] == "fail"
    assert reg.get_by_alias("candidate").version == retrain["version"]  # the alias stays where it was
    monkeypatch.delenv("EBMOPS_TRAINING__HIDDEN")

    feats = list(kdd99.schema.features)
    shifted = kdd99.frame.copy()
    shifted[feats[:12]] = (shifted[feats[:12]] + 0.25).clip(upper=1.0)
    path = flow_env.home / "shifted.parquet"
    shifted.to_parquet(path)
    monkeypatch.setenv("EBMOPS_DATA__SOURCES", json.dumps(
        {"kdd99-shifted": {"path": str(path), "features": feats, "label": "label", "event_id": "event_id",
                           "region": "region"}}))
    # the shifted source is its own model, gated on its own data by default; gate.window_dataset (same
    # schema) gates it on kdd99's window, where its energies have moved
    monkeypatch.setenv("EBMOPS_GATE__WINDOW_DATASET", "kdd99")
    shifted_run = train(dataset="kdd99-shifted", epochs=4, progress=False)
    drifted = shifted_run["gate"]
    assert shifted_run["model_name"] == "ebm-kdd99-shifted" and drifted["champion"] is None
    assert drifted["verdict"] == "fail" and _verdicts(drifted)["energy_shift"] == "fail"

    store = open_store(flow_env)
    assert [r.verdict for r in store.list_gate_reports(model_name=flow_env.registry.model_name)] == ["fail", "pass"]
    assert [r.verdict for r in store.list_gate_reports(model_name="ebm-kdd99-shifted")] == ["fail"]
    md = (flow_env.home / "gates" / "ebm-kdd99-shifted" / f"v{drifted['version']}" / "gate.md").read_text()
    assert "energy_shift" in md and "fail" in md

    # re-gating by hand records a new report and keeps the verdict
    again = gate(version=drifted["version"], model="ebm-kdd99-shifted")
    assert again["verdict"] == "fail"
