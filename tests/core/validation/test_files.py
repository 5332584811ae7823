"""validate_file: a user's file checked against its dataset's reference, as the CLI does."""

import pytest

from ebmops.core.data import region_batches
from ebmops.core.errors import ConfigError, ValidationFailed
from ebmops.core.settings import load_settings
from ebmops.core.validation import reference_path, validate_file
from tests.conftest import make_synthetic


@pytest.fixture
def source_settings(tmp_path):
    """A configured CSV source with its own column names; its data becomes the reference."""
    ds = make_synthetic()
    raw = ds.frame.rename(columns={"event_id": "id", "label": "is_attack"}).drop(columns=["region"])
    raw.to_csv(tmp_path / "events.csv", index=False)
    sources = {"mine": {"path": str(tmp_path / "events.csv"), "features": list(ds.schema.features),
                        "label": "is_attack", "event_id": "id"}}
    return load_settings(home=tmp_path / "home", data={"sources": sources}), raw


def test_good_file_passes_and_creates_the_reference(source_settings, tmp_path):
    settings, raw = source_settings
    raw.head(500).to_parquet(tmp_path / "batch.parquet")
    result = validate_file(tmp_path / "batch.parquet", "mine", settings)
    assert result.success and result.n_rows == 500
    assert reference_path(settings, "mine").is_file()


def test_bad_file_is_quarantined_with_its_own_columns_named(source_settings, tmp_path):
    settings, raw = source_settings
    bad = raw.head(500).drop(columns=["is_attack"])
    bad["f1"] = bad["f1"] + 10
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValidationFailed) as exc:
        validate_file(tmp_path / "bad.csv", "mine", settings)
    assert [f["column"] for f in exc.value.failures] == ["label", "f1"]
    assert (settings.quarantine_dir / exc.value.quarantine_path.rsplit("/", 1)[-1] / "batch.parquet").is_file()


def test_kdd99_file_with_only_features_and_label(kdd99, kdd99_settings, tmp_path):
    batch = region_batches(kdd99)["ap-south"].drop(columns=["event_id", "region"])
    batch.to_parquet(tmp_path / "kdd.parquet")
    assert validate_file(tmp_path / "kdd.parquet", "kdd99", kdd99_settings).success
    batch.drop(columns=["att7"]).to_csv(tmp_path / "kdd.csv", index=False)
    with pytest.raises(ValidationFailed, match="column 'att7' is missing"):
        validate_file(tmp_path / "kdd.csv", "kdd99", kdd99_settings)


def test_unknown_dataset(settings, tmp_path):
    make_synthetic().frame.to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(ConfigError, match="not known"):
        validate_file(tmp_path / "x.csv", "nope", settings)
