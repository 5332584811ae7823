"""validate_or_quarantine: a failing batch is moved aside whole, recorded, and stops the caller."""

import json

import numpy as np
import pandas as pd
import pytest

from ebmops.core.errors import ValidationFailed
from ebmops.core.validation import quarantine, validate_or_quarantine


def _bad(batch):
    batch = batch.drop(columns=["f3"])
    batch.loc[[1, 2], "f0"] = np.nan
    batch.loc[4, "f5"] = 99.0
    return batch


def test_failing_batch_is_quarantined_recorded_and_raised(batch, profile, settings, store):
    bad = _bad(batch)
    with pytest.raises(ValidationFailed) as exc:
        validate_or_quarantine(bad, dataset="synthetic", region="us-east", profile=profile, settings=settings,
                               store=store)
    err = exc.value
    expected = ["column 'f3' is missing", f"column 'f0' has 2 null value(s) in {len(bad)} rows",
                "column 'f5' has values up to 99, above the allowed maximum"]
    lines = str(err).splitlines()
    for msg in expected:  # each failed expectation on its own line
        assert sum(msg in line for line in lines) == 1, str(err)
    assert "3 expectation(s)" in lines[0] and err.quarantine_path in str(err)
    assert [f["column"] for f in err.failures] == ["f3", "f0", "f5"]

    folder = settings.quarantine_dir / err.quarantine_path.rsplit("/", 1)[-1]
    assert folder.is_dir() and folder.name.endswith("-synthetic-us-east")
    assert sorted(p.name for p in folder.iterdir()) == ["batch.parquet", "summary.md", "validation.json"]
    pd.testing.assert_frame_equal(pd.read_parquet(folder / "batch.parquet"), bad)
    saved = json.loads((folder / "validation.json").read_text())
    assert saved["success"] is False and saved["dataset"] == "synthetic" and saved["region"] == "us-east"
    assert saved["failures"] == err.failures and saved["n_rows"] == len(bad) and saved["raw"]["results"]
    summary = (folder / "summary.md").read_text()
    assert "- dataset: synthetic" in summary and "- region: us-east" in summary and f"- rows: {len(bad)}" in summary
    assert all(f"- {f['message']}" in summary for f in err.failures)

    [record] = store.list_quarantine()
    assert (record.dataset, record.region, record.n_rows) == ("synthetic", "us-east", len(bad))
    assert record.path == err.quarantine_path and record.failures == err.failures
    assert [p.name for p in settings.quarantine_dir.iterdir()] == [folder.name]  # no temp folder left


def test_passing_batch_leaves_nothing(batch, profile, settings, store):
    result = validate_or_quarantine(batch, dataset="synthetic", region="us-east", profile=profile,
                                    settings=settings, store=store)
    assert result.success
    assert not settings.quarantine_dir.exists() or not any(settings.quarantine_dir.iterdir())
    assert store.list_quarantine() == []


def test_two_failures_in_the_same_instant_get_separate_folders(batch, profile, settings):
    paths = set()
    for _ in range(2):
        with pytest.raises(ValidationFailed) as exc:
            validate_or_quarantine(batch.head(5), dataset="synthetic", region="us-east", profile=profile,
                                   settings=settings)
        paths.add(exc.value.quarantine_path)
    assert len(paths) == 2


def test_crash_while_quarantining_leaves_no_half_quarantine(batch, profile, settings, store, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(quarantine, "summary_markdown", boom)
    with pytest.raises(OSError, match="disk full"):
        validate_or_quarantine(_bad(batch), dataset="synthetic", region="us-east", profile=profile,
                               settings=settings, store=store)
    assert list(settings.quarantine_dir.iterdir()) == []
    assert store.list_quarantine() == []


def test_batch_parquet_cannot_hold_is_kept_as_pickle(batch, profile, settings):
    batch["f2"] = batch["f2"].astype(object)
    batch.loc[3, "f2"] = "n/a"  # strings mixed with floats: pyarrow refuses the column
    with pytest.raises(ValidationFailed, match="'f2' is not numeric") as exc:
        validate_or_quarantine(batch, dataset="synthetic", region=None, profile=profile, settings=settings)
    folder = settings.quarantine_dir / exc.value.quarantine_path.rsplit("/", 1)[-1]
    assert folder.name.endswith("-synthetic-all")
    assert sorted(p.name for p in folder.iterdir()) == ["batch.pkl", "summary.md", "validation.json"]
    pd.testing.assert_frame_equal(pd.read_pickle(folder / "batch.pkl"), batch)
    assert "read_pickle" in (folder / "summary.md").read_text()
