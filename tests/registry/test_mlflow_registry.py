"""ModelRegistry against a real SQLite-backed MLflow store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ebmops.core.errors import RegistryError
from registry import ModelRegistry, lineage
from tests.registry.conftest import FEATURES
from tests.servers import free_port


def test_register_creates_version_one_with_challenger_alias_and_lineage(store):
    reg = store.registry()
    run = store.runs[0]

    v = reg.register(run.run_id, tags={"gate": "pending"})

    assert (v.version, v.aliases, v.run_id) == ("1", ["challenger"], run.run_id)
    assert v.threshold == run.threshold
    assert v.tags["run_id"] == run.run_id
    assert v.tags["dataset"] == "synthetic"
    assert v.tags["data_fingerprint"] == f"sha256:{0:064d}"
    assert v.tags["device"] == "cpu"
    assert v.tags["code_version"] and v.tags["gate"] == "pending"
    assert v.source.startswith("models:/") and v.created_at is not None
    assert reg.get_by_alias("challenger") == v == reg.resolve("@challenger") == reg.resolve(1)


def test_logged_model_loads_back_with_same_energies_and_metadata(store):
    reg = store.registry()
    run = store.runs[0]
    v = reg.register(run.run_id)
    original = torch.jit.load(str(run.scripted_path))

    loaded = reg.load_torchscript(v.version)

    x = torch.from_numpy(np.random.default_rng(7).random((64, len(FEATURES)), dtype=np.float32))
    assert torch.equal(loaded(x), original(x))
    assert float(loaded.threshold) == run.threshold
    meta = reg.model_metadata(v.version)
    assert meta["feature_names"] == FEATURES and meta["threshold"] == run.threshold
    # The model files live under the configured artifact root, not in the working directory.
    assert any(store.artifact_root.rglob("MLmodel"))


def test_run_holds_params_metrics_tags_and_extra_artifacts(store):
    from mlflow import MlflowClient

    client = MlflowClient(store.tracking_uri)
    run = client.get_run(store.runs[1].run_id)

    assert run.data.params["epochs"] == "2" and run.data.params["hidden"] == "[8, 8]"
    assert run.data.metrics["auroc"] == pytest.approx(0.91)
    assert run.data.tags["threshold"] == "0.5" and run.data.tags["code_version"]
    assert "summary.md" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_registering_the_same_run_twice_creates_no_second_version(store):
    reg = store.registry()
    first = reg.register(store.runs[0].run_id)

    again = reg.register(store.runs[0].run_id)

    assert again.version == first.version == "1"
    assert [v.version for v in reg.list_versions()] == ["1"]


def test_retried_registration_keeps_aliases_of_later_versions(store):
    reg = store.registry()
    reg.register(store.runs[0].run_id)
    reg.register(store.runs[1].run_id)

    again = reg.register(store.runs[0].run_id)  # a retried step of the first training flow

    assert again.version == "1" and again.aliases == []
    assert reg.get_by_alias("challenger").version == "2"


def test_retry_after_a_failure_before_the_alias_sets_it(store):
    reg = store.registry()
    v = reg.register(store.runs[0].run_id)
    reg.delete_alias("challenger")  # as if the first attempt died between the two steps

    again = reg.register(store.runs[0].run_id)

    assert again.version == v.version and again.aliases == ["challenger"]


def test_second_run_becomes_version_two_and_aliases_move(store):
    reg = store.registry()
    reg.register(store.runs[0].run_id)
    v2 = reg.register(store.runs[1].run_id)
    assert v2.version == "2" and v2.aliases == ["challenger"]
    assert reg.get_version(1).aliases == []

    assert reg.move_alias("champion", 1) is None
    assert reg.move_alias("champion", 2) == "1"
    assert reg.get_by_alias("champion").version == "2"

    reg.set_version_tags(1, {"gate": "failed"})
    listed = reg.list_versions()
    assert [(v.version, v.aliases) for v in listed] == [("2", ["challenger", "champion"]), ("1", [])]
    assert listed[1].tags["gate"] == "failed" and listed[0].threshold == 0.5

    assert reg.delete_alias("champion") is True
    assert reg.delete_alias("champion") is False
    assert reg.get_by_alias("champion") is None


def test_log_version_artifacts_lands_in_the_versions_run(store, tmp_path):
    from mlflow import MlflowClient

    reg = store.registry()
    v = reg.register(store.runs[1].run_id)
    report = tmp_path / "anything.md"
    report.write_text("gate: pass\n")

    reg.log_version_artifacts(v.version, {"gates/report.md": report})

    listed = MlflowClient(store.tracking_uri).list_artifacts(v.run_id, "gates")
    assert [a.path for a in listed] == ["gates/report.md"]


def test_unknown_versions_and_aliases_raise_registry_errors_that_say_what_to_do(store):
    reg = store.registry()
    assert reg.list_versions() == []
    assert reg.get_by_alias("champion") is None
    with pytest.raises(RegistryError, match=r"no version 1 of model .*ebmops models list"):
        reg.get_version(1)

    reg.register(store.runs[0].run_id)
    with pytest.raises(RegistryError, match=r"no version 7 of model '.*'; `ebmops models list` shows"):
        reg.get_version(7)
    with pytest.raises(RegistryError, match=r"no version 9"):
        reg.set_alias("champion", 9)
    with pytest.raises(RegistryError, match=r"no alias 'nope' .*challenger -> 1"):
        reg.resolve("@nope")
    with pytest.raises(RegistryError, match="invalid model version"):
        reg.get_version("abc")
    with pytest.raises(RegistryError, match="reserved"):
        reg.set_alias("latest", 1)
    with pytest.raises(RegistryError, match="no run"):
        reg.register("0" * 32)


def test_bad_training_input_is_refused_before_any_run_is_created(store, tmp_path):
    from mlflow import MlflowClient

    reg = ModelRegistry(store.tracking_uri, "ebm-bad", "ebmops-bad-input", store.artifact_root)
    run = store.runs[0]
    common = dict(params={}, metrics={}, tags={}, scripted_path=run.scripted_path, threshold=0.5,
                  feature_names=FEATURES, device="cpu", data_fingerprint="x")

    with pytest.raises(RegistryError, match=r"float32\[B, 4\]"):
        reg.log_training_run(input_example=np.zeros((5, 3), np.float32), **common)
    with pytest.raises(RegistryError, match="not a number"):
        reg.log_training_run(input_example=run.example, **{**common, "metrics": {"auroc": "high"}})
    with pytest.raises(RegistryError, match="no TorchScript model"):
        reg.log_training_run(input_example=run.example, **{**common, "scripted_path": tmp_path / "missing.pt"})

    exp = MlflowClient(store.tracking_uri).get_experiment_by_name("ebmops-bad-input")
    assert exp is None or not MlflowClient(store.tracking_uri).search_runs([exp.experiment_id])


def test_unreachable_tracking_server_is_a_registry_error(monkeypatch):
    # Restored after the test: the registry sets these process-wide.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
    reg = ModelRegistry(f"http://127.0.0.1:{free_port()}", "ebm-anomaly", "ebmops", http_max_retries=0,
                        http_timeout_s=2)

    with pytest.raises(RegistryError, match="could not be reached; check that the tracking server is up"):
        reg.get_version(1)
    with pytest.raises(RegistryError, match="could not be reached"):
        reg.list_versions()


def test_from_settings_uses_the_home_store(settings):
    reg = ModelRegistry.from_settings(settings)
    assert reg.tracking_uri == f"sqlite:///{settings.home / 'mlflow.db'}"
    assert reg.artifact_root == settings.home / "mlartifacts"
    assert (reg.model_name, reg.experiment) == ("ebm-kdd99", "ebmops")

    remote = settings.model_copy(update={"registry": settings.registry.model_copy(
        update={"tracking_uri": "http://127.0.0.1:5000"})})
    assert ModelRegistry.from_settings(remote).artifact_root is None


def test_no_call_escapes_to_mlflows_default_store(store):
    reg = store.registry()
    reg.register(store.runs[0].run_id)
    reg.load_torchscript(1)

    assert not (store.workdir / "mlflow.db").exists() and not (store.workdir / "mlruns").exists()


def test_download_artifact_returns_the_logged_file(store, tmp_path):
    reg = store.registry()
    v = reg.register(store.runs[1].run_id)
    report = tmp_path / "energies.txt"
    report.write_text("1 2 3\n")
    reg.log_version_artifacts(v.version, {"extra/energies.txt": report})
    got = reg.download_artifact(v.version, "extra/energies.txt", tmp_path / "dl")
    assert got.read_text() == "1 2 3\n"
    with pytest.raises(RegistryError, match="no artifact 'nope.npy'|nope.npy"):
        reg.download_artifact(v.version, "nope.npy", tmp_path / "dl2")


def test_download_torchscript_returns_the_logged_file_byte_for_byte(store, tmp_path):
    reg = store.registry()
    run = store.runs[0]
    v = reg.register(run.run_id)
    got = reg.download_torchscript(v.version, tmp_path / "sync" / "model.pt")
    assert got == tmp_path / "sync" / "model.pt"
    stored = {p.read_bytes() for p in store.artifact_root.rglob("model.pth")}
    assert got.read_bytes() in stored  # the artifact MLflow keeps, as is
    again = reg.download_torchscript(v.version, tmp_path / "again.pt")
    assert again.read_bytes() == got.read_bytes()  # so every publish of a version hashes to the same blob
    assert not list((tmp_path / "sync").glob("*.partial"))
    x = torch.from_numpy(np.random.default_rng(3).random((16, len(FEATURES)), dtype=np.float32))
    assert torch.equal(torch.jit.load(str(got))(x), torch.jit.load(str(run.scripted_path))(x))


def test_registered_models_spans_models_and_for_model_switches_model(store):
    a = store.registry()
    b = a.for_model(f"{a.model_name}-other")
    a.register(store.runs[0].run_id)
    b.register(store.runs[1].run_id)
    assert {a.model_name, b.model_name} <= set(a.registered_models())
    assert a.registered_models() == sorted(a.registered_models())
    assert [v.version for v in b.list_versions()] == ["1"] and b.get_version("1").run_id == store.runs[1].run_id
    assert (b.tracking_uri, b.experiment) == (a.tracking_uri, a.experiment)
