"""Validation of a source with categorical columns: any type there, no nulls; a string in a
numeric column fails naming the column and the fix, and the region is quarantined."""

import numpy as np
import pytest

from ebmops.core.data import open_source
from ebmops.core.errors import ValidationFailed
from ebmops.core.settings import load_settings
from ebmops.core.state import StateStore
from ebmops.core.validation import ReferenceProfile, reference_path, validate_source
from tests.core.data.cat_events import events, source_settings, write_csv


def _settings(tmp_path, path):
    return load_settings(home=tmp_path / "home", data={"sources": {"ev": source_settings(path)}, "batch_rows": 700},
                         validation={"sample_rows": 200})


def test_categorical_columns_pass_with_strings_and_numbers_and_have_no_range(tmp_path):
    s = _settings(tmp_path, write_csv(tmp_path / "good.csv"))
    profile, summaries = validate_source(open_source("ev", s), s)
    assert all(r["success"] for r in summaries)
    assert profile.categorical == ("proto", "port") and set(profile.columns) == {"bytes", "duration"}
    assert ReferenceProfile.load(reference_path(s, "ev")).categorical == ("proto", "port")
    frame = events()
    frame.loc[5, "proto"] = "sctp"  # unseen in the reference: allowed (scores as unknown)
    frame.loc[6, "port"] = 8080
    s2 = _settings(tmp_path, write_csv(tmp_path / "new.csv", frame))
    _profile, summaries = validate_source(open_source("ev", s2), s2)
    assert all(r["success"] for r in summaries)


def test_a_null_category_fails_naming_the_column(tmp_path):
    s = _settings(tmp_path, write_csv(tmp_path / "good.csv"))
    validate_source(open_source("ev", s), s)
    frame = events()
    frame.loc[[10, 11], "proto"] = None  # Parquet keeps nulls (an empty CSV text field is the category "")
    frame.to_parquet(tmp_path / "nulls.parquet", index=False)
    s2 = _settings(tmp_path, tmp_path / "nulls.parquet")
    with pytest.raises(ValidationFailed, match=r"column 'proto' has 2 null value\(s\)"):
        validate_source(open_source("ev", s2), s2)


def test_a_string_in_a_numeric_column_fails_naming_it_and_the_fix_and_is_quarantined(tmp_path):
    s = _settings(tmp_path, write_csv(tmp_path / "good.csv"))
    validate_source(open_source("ev", s), s)
    frame = events().astype({"bytes": object})
    frame.loc[42, "bytes"] = "lots"
    s2 = _settings(tmp_path, write_csv(tmp_path / "bad.csv", frame))
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    with pytest.raises(ValidationFailed) as exc:
        validate_source(open_source("ev", s2), s2, store=store)
    msg = str(exc.value)
    assert "column 'bytes' is not numeric" in msg and "data.sources.ev.categorical" in msg and "clean it" in msg
    assert "column 'proto'" not in msg and "column 'port'" not in msg  # categorical columns may be text
    quarantined = store.list_quarantine()
    assert quarantined and all(q.dataset == "ev" for q in quarantined)
    assert (tmp_path / "home").exists() and any(p.is_dir() for p in s2.quarantine_dir.iterdir())


def test_validating_a_file_allows_text_categories_and_names_a_text_number(tmp_path):
    from ebmops.core.validation import validate_file

    s = _settings(tmp_path, write_csv(tmp_path / "good.csv"))
    validate_source(open_source("ev", s), s)
    ok = validate_file(write_csv(tmp_path / "batch.csv", events(n=500, seed=1)), "ev", s)
    assert ok.success
    frame = events(n=500, seed=2).astype({"duration": object})
    frame.loc[3, "duration"] = "lots"
    with pytest.raises(ValidationFailed) as exc:
        validate_file(write_csv(tmp_path / "bad.csv", frame), "ev", s)
    assert "column 'duration' is not numeric" in str(exc.value) and "categorical" in str(exc.value)
