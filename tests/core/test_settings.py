"""Settings resolve: keyword > environment > YAML file > defaults; bad values name the field."""

import pytest
from pydantic import ValidationError

from ebmops.core.settings import Settings, load_settings


def test_defaults_are_the_embedded_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.home == (tmp_path / ".ebmops").resolve()
    assert s.resolved_state_url == f"sqlite:///{s.home / 'state.db'}"
    assert s.resolved_tracking_uri.startswith("sqlite:///")
    assert s.data.regions == ["us-east", "eu-west", "ap-south"]


def test_env_over_yaml_over_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ebmops.yaml").write_text("training:\n  epochs: 3\n  lr: 0.01\nregistry:\n  model_name: from-yaml\n")
    s = load_settings()
    assert (s.training.epochs, s.training.lr, s.registry.model_name) == (3, 0.01, "from-yaml")
    monkeypatch.setenv("EBMOPS_TRAINING__EPOCHS", "7")
    s = load_settings()
    assert s.training.epochs == 7 and s.training.lr == 0.01  # env wins per field, YAML fills the rest
    assert load_settings(training={"epochs": 2}).training.epochs == 2


def test_config_env_names_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("EBMOPS_CONFIG", str(tmp_path / "absent.yaml"))
    with pytest.raises(FileNotFoundError, match="EBMOPS_CONFIG"):
        load_settings()


def test_bad_value_names_the_field(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EBMOPS_TRAINING__EPOCHS", "0")
    with pytest.raises(ValidationError, match="training.epochs"):
        load_settings()


def test_unknown_key_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ebmops.yaml").write_text("trainig:\n  epochs: 3\n")
    with pytest.raises(ValidationError, match="trainig"):
        load_settings()


def test_every_field_is_described():
    def walk(model, prefix=""):
        for name, f in model.model_fields.items():
            ann = f.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                yield from walk(ann, f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}", f.description

    missing = [n for n, d in walk(Settings) if not d]
    assert missing == []
