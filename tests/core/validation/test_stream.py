"""Streamed validation: exact checks over every batch, the suite on a seeded sample, one report."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ebmops.core.data import open_source
from ebmops.core.errors import ValidationFailed
from ebmops.core.settings import load_settings
from ebmops.core.state import StateStore
from ebmops.core.validation import ReferenceProfile, reference_path, validate_source
from tests.conftest import make_synthetic

FEATS = [f"f{i}" for i in range(6)]


def _write(root: Path, frame: pd.DataFrame, parts: int = 3) -> Path:
    """Write ``frame`` as ``parts`` Parquet files under day=<i>/ folders (small row groups)."""
    for i, chunk in enumerate(np.array_split(np.arange(len(frame)), parts)):
        folder = root / f"day={i}"
        folder.mkdir(parents=True, exist_ok=True)
        frame.iloc[chunk].to_parquet(folder / "part.parquet", row_group_size=97, index=False)
    return root


def _settings(tmp_path, path, **validation):
    src = {"path": str(path), "features": FEATS, "label": "label", "event_id": "event_id", "region": "region"}
    return load_settings(home=tmp_path / "home", data={"sources": {"ev": src}, "batch_rows": 128},
                         validation={"sample_rows": 50, **validation})


@pytest.fixture
def good(tmp_path):
    frame = make_synthetic().frame
    return frame, _write(tmp_path / "good", frame)


def test_a_good_source_passes_and_its_reference_is_built_from_the_same_pass(tmp_path, good):
    frame, path = good
    s = _settings(tmp_path, path)
    profile, summaries = validate_source(open_source("ev", s), s)
    assert [(r["region"], r["rows"], r["success"]) for r in summaries] == [
        (r, int((frame["region"] == r).sum()), True) for r in ("us-east", "eu-west", "ap-south")]
    assert all(r["sample_rows"] == 50 for r in summaries)  # the suite ran on the seeded samples
    whole = ReferenceProfile.from_frame(frame, make_synthetic().schema, dataset="ev")
    assert profile.columns == whole.columns and profile.n_rows == len(frame)  # exact ranges, not the sample's
    assert ReferenceProfile.load(reference_path(s, "ev")).columns == whole.columns


def test_bad_rows_outside_the_sample_fail_with_exact_counts_and_the_region_is_quarantined(tmp_path, good):
    frame, path = good
    s = _settings(tmp_path, path)
    validate_source(open_source("ev", s), s)  # the reference, from good data
    bad = frame.copy()
    east = np.flatnonzero(bad["region"] == "us-east")
    bad.loc[east[[3, 400]], "f1"] = np.nan       # two nulls
    bad.loc[east[555], "f4"] = 9.0               # one value far outside the reference range
    bad.loc[east[600], "label"] = 3              # a label that is not 0/1
    bad_path = _write(tmp_path / "bad", bad)
    s = _settings(tmp_path, bad_path)
    source = open_source("ev", s)
    store = StateStore(s.resolved_state_url)
    try:
        with pytest.raises(ValidationFailed) as exc:
            validate_source(source, s, store=store)
        [record] = store.list_quarantine()
    finally:
        store.close()
    err = str(exc.value)
    rows = int((bad["region"] == "us-east").sum())
    assert "failed validation in 1 of 3 region(s)" in err and "region 'us-east'" in err
    assert f"column 'f1' has 2 null value(s) in {rows} rows" in err
    assert "column 'f4' has values up to 9, above the allowed maximum" in err
    assert "column 'label' has values [3.0] outside the allowed [0, 1]" in err
    folder = Path(exc.value.quarantine_path)
    sample = pd.read_parquet(folder / "batch.parquet")
    assert len(sample) == 50 < rows and record.n_rows == rows and record.region == "us-east"
    assert "seeded sample of 50" in (folder / "summary.md").read_text()
    report = json.loads((folder / "validation.json").read_text())
    assert report["n_rows"] == rows and report["sample_of"] == str(bad_path) and report["raw"]["results"]


def test_a_partition_with_a_text_column_fails_the_type_check_naming_it(tmp_path, good):
    frame, path = good
    s = _settings(tmp_path, path)
    validate_source(open_source("ev", s), s)
    folder = tmp_path / "typed"
    _write(folder, frame)
    odd = pd.read_parquet(folder / "day=1" / "part.parquet")
    odd["f2"] = odd["f2"].astype(str)
    odd.to_parquet(folder / "day=1" / "part.parquet", index=False)
    with pytest.raises(ValidationFailed) as exc:
        validate_source(open_source("ev", _settings(tmp_path, folder)), s)
    assert "column 'f2' is not numeric (string in " in str(exc.value) and "day=1" in str(exc.value)


def test_rows_without_a_region_are_not_dropped(tmp_path, good):
    frame, path = good
    s = _settings(tmp_path, path)
    validate_source(open_source("ev", s), s)
    bad = frame.copy()
    bad["region"] = bad["region"].astype(object)
    bad.loc[[5, 6, 7], "region"] = None
    with pytest.raises(ValidationFailed) as exc:
        validate_source(open_source("ev", _settings(tmp_path, _write(tmp_path / "noregion", bad))), s)
    assert "region 'None' (3 rows)" in str(exc.value) and "column 'region' has 3 null value(s) in 3 rows" in str(exc.value)


def test_the_sample_is_the_same_whatever_the_batch_size(tmp_path, good):
    from ebmops.core.validation.stream import sample_frame, tally_source

    _frame, path = good
    a = tally_source(open_source("ev", _settings(tmp_path, path)), sample_rows=40)
    s = load_settings(home=tmp_path / "home", data={"sources": {"ev": {"path": str(path), "features": FEATS,
                      "label": "label", "event_id": "event_id", "region": "region"}}, "batch_rows": 1000})
    b = tally_source(open_source("ev", s), sample_rows=40)
    for region in a:
        assert sorted(sample_frame(a[region])["event_id"]) == sorted(sample_frame(b[region])["event_id"])
        assert a[region].rows == b[region].rows and np.array_equal(a[region].mins, b[region].mins)
