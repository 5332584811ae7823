"""Model identity: which registered model a dataset is, and which model (and data) a command acts on.

Settings and ``ebmops.core.models`` are pure; ``resolve`` reads a real SQLite-backed MLflow store whose
versions carry the ``dataset`` tag a training registration sets."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from ebmops.core.errors import ConfigError, ModelAmbiguous
from ebmops.core.models import configured_models, dataset_of, model_of, scoped
from ebmops.core.settings import load_settings
from ebmops.services.models import list_models, resolve, scopes

SOURCES = {"netflow": {"path": "netflow.csv", "features": ["a", "b"]},
           "dns": {"path": "dns.parquet", "features": ["q"], "model": "dns-detector"}}


def test_each_dataset_is_its_own_model(tmp_path):
    s = load_settings(home=tmp_path, data={"sources": SOURCES})
    assert s.registry.model_name == "ebm-kdd99"  # data.dataset's model
    assert model_of(s, "netflow") == "ebm-netflow" and model_of(s, "dns") == "dns-detector"
    assert model_of(s, "wbc") == "ebm-wbc"
    assert configured_models(s) == {"ebm-kdd99": "kdd99", "ebm-netflow": "netflow", "dns-detector": "dns"}
    assert dataset_of(s, "dns-detector") == "dns" and dataset_of(s, "ebm-shuttle") == "shuttle"
    assert dataset_of(s, "ebm-nothing") is None
    on_dns = load_settings(home=tmp_path, data={"dataset": "dns", "sources": SOURCES})
    assert on_dns.registry.model_name == "dns-detector"
    # an explicit registry.model_name still names data.dataset's model
    named = load_settings(home=tmp_path, registry={"model_name": "ebm-anomaly"})
    assert named.registry.model_name == "ebm-anomaly" and model_of(named, "kdd99") == "ebm-anomaly"


def test_two_datasets_under_one_model_name_is_a_settings_error(tmp_path):
    with pytest.raises(ValidationError, match=r"data.sources.dns and data.sources.netflow.*'ebm-netflow'"):
        load_settings(home=tmp_path, data={"sources": {**SOURCES, "dns": {**SOURCES["dns"], "model": "ebm-netflow"}}})
    with pytest.raises(ValidationError, match=r"data.sources.netflow and data.dataset 'kdd99'"):
        load_settings(home=tmp_path, registry={"model_name": "ebm-netflow"}, data={"sources": SOURCES})
    with pytest.raises(ValidationError, match="model"):
        load_settings(home=tmp_path, data={"sources": {"x": {**SOURCES["dns"], "model": "bad name'"}}})


def test_a_scope_is_a_validated_copy_with_secrets_kept(tmp_path):
    s = load_settings(home=tmp_path, data={"sources": SOURCES}, sync={"signing_key": "k" * 64})
    t = scoped(s, "ebm-netflow", "netflow")
    assert (t.registry.model_name, t.data.dataset) == ("ebm-netflow", "netflow")
    assert (s.registry.model_name, s.data.dataset) == ("ebm-kdd99", "kdd99")  # the original is untouched
    assert isinstance(t.sync.signing_key, SecretStr) and t.sync.signing_key.get_secret_value() == "k" * 64
    assert scoped(s, "ebm-kdd99", "kdd99") is s
    # a version recorded on another dataset than the model's configured one: its own data wins
    moved = scoped(s, "ebm-netflow", "shuttle")
    assert moved.data.dataset == "shuttle" and "netflow" not in moved.data.sources


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    from tests.registry.conftest import _logged_store

    root = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        yield _logged_store(root)


def _settings(tmp_path, store, **kw):
    return load_settings(home=tmp_path, registry={"tracking_uri": store.tracking_uri, "experiment": store.experiment,
                                                  "artifact_root": str(store.artifact_root)},
                         data={"sources": SOURCES}, **kw)


def _register(store, model: str, dataset: str, run: int = 0) -> str:
    return store.registry(model).register(store.runs[run].run_id, tags={"dataset": dataset}).version


def test_resolve_names_the_model_and_its_data(tmp_path, mlflow_store):
    s = _settings(tmp_path, mlflow_store)
    assert resolve(s, dataset="netflow").registry.model_name == "ebm-netflow"
    assert resolve(s, model="dns-detector").data.dataset == "dns"
    with pytest.raises(ConfigError, match=r"no model 'ebm-unknown'.*ebm-netflow"):
        resolve(s, model="ebm-unknown")
    with pytest.raises(ConfigError, match="--dataset: 'nope'"):
        resolve(s, dataset="nope")


def test_resolve_with_none_one_and_several_models_registered(tmp_path_factory):
    from tests.registry.conftest import _logged_store

    root = tmp_path_factory.mktemp("mlflow-own")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        store = _logged_store(root)
    s = _settings(root / "home", store)
    assert resolve(s).registry.model_name == "ebm-kdd99"  # nothing registered: the configured default
    _register(store, "ebm-netflow", "netflow")
    one = resolve(s)
    assert (one.registry.model_name, one.data.dataset) == ("ebm-netflow", "netflow")  # the only one registered
    _register(store, "ebm-anomaly", "kdd99", run=1)  # a model no setting names: its lineage says kdd99
    with pytest.raises(ModelAmbiguous, match="ebm-anomaly, ebm-netflow") as err:
        resolve(s)
    assert err.value.exit_code == 2 and "--model" in str(err.value)
    legacy = resolve(s, model="ebm-anomaly")
    assert (legacy.registry.model_name, legacy.data.dataset) == ("ebm-anomaly", "kdd99")
    # configured explicitly, the default model is named: nothing is ambiguous
    named = load_settings(home=root / "home", registry={"tracking_uri": store.tracking_uri,
                                                        "model_name": "ebm-anomaly"})
    assert resolve(named).registry.model_name == "ebm-anomaly"
    assert [x.registry.model_name for x in scopes(s)] == ["ebm-anomaly", "ebm-netflow"]
    assert [x.registry.model_name for x in scopes(s, "ebm-netflow")] == ["ebm-netflow"]
    rows = {m["model"]: m for m in list_models(s)}
    assert rows["ebm-netflow"]["dataset"] == "netflow" and rows["ebm-netflow"]["versions"] == 1
    assert rows["ebm-anomaly"]["champion"] is None and set(rows["ebm-anomaly"]["prod"]) == set(s.data.regions)


def test_the_versions_own_dataset_wins(tmp_path, mlflow_store):
    s = _settings(tmp_path, mlflow_store)
    # dns-detector is configured on "dns", but this version was trained on shuttle
    v = _register(mlflow_store, "dns-detector", "shuttle")
    got = resolve(s, model="dns-detector", version=v)
    assert (got.registry.model_name, got.data.dataset) == ("dns-detector", "shuttle")
    assert resolve(s, model="dns-detector").data.dataset == "shuttle"  # the newest version's data
    with pytest.raises(ConfigError, match="trained on 'shuttle'"):
        resolve(s, model="dns-detector", dataset="dns", version=v)


def test_the_drift_monitor_watches_a_model_where_it_is_synced(tmp_path):
    from ebmops.services.sync import synced_regions
    from registry.desired_state import desired_key
    from registry.objectstore.factory import store_for_region

    s = load_settings(home=tmp_path, data={"sources": SOURCES})
    netflow = scoped(s, "ebm-netflow", "netflow")
    store_for_region(s, "eu-west").put_bytes(desired_key("ebm-netflow"), b"{}")
    assert synced_regions(netflow, list(s.data.regions)) == ["eu-west"]
    assert synced_regions(s, list(s.data.regions)) == []  # ebm-kdd99 was synced nowhere


def test_the_gate_window_is_the_versions_own_dataset(tmp_path):
    import numpy as np
    import pandas as pd

    from ebmops.services.gate import window_source

    for name, cols in {"nine": [f"m{i}" for i in range(9)], "nine-b": [f"m{i}" for i in range(9)],
                       "two": ["a", "b"]}.items():
        frame = pd.DataFrame(np.random.default_rng(0).random((50, len(cols))), columns=cols)
        frame.to_csv(tmp_path / f"{name}.csv", index_label="id")
    sources = {name: {"path": str(tmp_path / f"{name}.csv"), "features": cols, "event_id": "id"}
               for name, cols in {"nine": [f"m{i}" for i in range(9)], "nine-b": [f"m{i}" for i in range(9)],
                                  "two": ["a", "b"]}.items()}
    s = load_settings(home=tmp_path / "home", data={"sources": sources})
    nine = scoped(s, "ebm-nine", "nine")
    assert window_source(nine).name == "nine"
    same_schema = nine.model_copy(update={"gate": nine.gate.model_copy(update={"window_dataset": "nine-b"})})
    assert window_source(same_schema).name == "nine-b"
    other = nine.model_copy(update={"gate": nine.gate.model_copy(update={"window_dataset": "two"})})
    with pytest.raises(ConfigError, match=r"gate.window_dataset 'two' has 2 features.*not the 9 of ebm-nine"):
        window_source(other)


def test_training_derives_the_model_from_the_dataset(tmp_path):
    from ebmops.services.train import settings_for_run

    s = load_settings(home=tmp_path, data={"sources": SOURCES})
    run = settings_for_run(s, dataset="netflow", epochs=1)
    assert (run.registry.model_name, run.data.dataset, run.training.epochs) == ("ebm-netflow", "netflow", 1)
    assert settings_for_run(s, model="dns-detector").data.dataset == "dns"
    assert settings_for_run(s).registry.model_name == "ebm-kdd99"
    with pytest.raises(ConfigError, match="dataset 'netflow' is the model 'ebm-netflow', not 'dns-detector'"):
        settings_for_run(s, dataset="netflow", model="dns-detector")
    with pytest.raises(ConfigError, match="no dataset is configured for 'ebm-unknown'"):
        settings_for_run(s, model="ebm-unknown")
