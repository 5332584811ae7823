"""The reference profile: built from the first data seen, saved once, reused after."""

import json

import numpy as np
import pytest

from ebmops.core.errors import DatasetError
from ebmops.core.validation import ReferenceProfile, load_or_create_reference, reference_path, validate_batch
from tests.conftest import make_synthetic


def test_from_frame_records_schema_ranges_and_fingerprint(synthetic):
    p = ReferenceProfile.from_frame(synthetic.frame, synthetic.schema, dataset="synthetic")
    assert p.features == synthetic.schema.features and p.has_label is True
    assert p.n_rows == len(synthetic.frame) and p.fingerprint == synthetic.fingerprint()
    f0 = synthetic.frame["f0"]
    assert (p.columns["f0"].min, p.columns["f0"].max) == (f0.min(), f0.max())
    assert p.columns["f0"].dtype_kind == "f"
    assert p.schema == synthetic.schema


def test_save_and_load_round_trip(tmp_path, profile):
    path = profile.save(tmp_path / "ref" / "synthetic.json")
    assert ReferenceProfile.load(path) == profile
    assert json.loads(path.read_text())["columns"]["f1"]["max"] == profile.columns["f1"].max
    assert [p.name for p in path.parent.iterdir()] == ["synthetic.json"]  # no temp file left behind


def test_reference_is_created_once_and_reused(settings):
    first = make_synthetic(seed=0)
    created = load_or_create_reference(first, settings)
    path = reference_path(settings, "synthetic")
    assert path == settings.data_dir / "reference" / "synthetic.json" and path.is_file()
    saved = path.read_text()

    wider = make_synthetic(seed=1)  # same dataset name, later data with a wider range
    wider.frame["f0"] = wider.frame["f0"] * 4 - 1
    again = load_or_create_reference(wider, settings)
    assert again == created and path.read_text() == saved  # not re-profiled
    assert again.columns["f0"].max < wider.frame["f0"].max()
    result = validate_batch(wider.frame, again, settings)  # judged against the first baseline
    assert not result.success and {(f["column"], f["expectation"]) for f in result.failures} == {
        ("f0", "expect_column_min_to_be_between"), ("f0", "expect_column_max_to_be_between")}


def test_schema_change_asks_to_rebaseline(settings):
    load_or_create_reference(make_synthetic(n_features=6), settings)
    with pytest.raises(DatasetError, match=r"features added: \['f6'\].*delete .*synthetic.json"):
        load_or_create_reference(make_synthetic(n_features=7), settings)


def test_dirty_reference_is_refused(synthetic):
    synthetic.frame.loc[3, "f2"] = np.nan
    synthetic.frame["f4"] = synthetic.frame["f4"].astype(str)
    with pytest.raises(DatasetError, match=r"f2 \(has nulls.*f4 \(dtype object, not numeric\)"):
        ReferenceProfile.from_frame(synthetic.frame, synthetic.schema, dataset="synthetic")


def test_unreadable_reference_says_how_to_recover(tmp_path):
    bad = tmp_path / "kdd99.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match="delete it to rebuild"):
        ReferenceProfile.load(bad)
