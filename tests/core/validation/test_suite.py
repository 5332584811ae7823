"""The suite: what it expects, and that each kind of bad batch is caught and named."""

import json

import numpy as np
import pytest

from ebmops.core.data import region_batches
from ebmops.core.validation import build_suite, load_or_create_reference, validate_batch
from ebmops.core.validation.profile import ColumnProfile
from ebmops.core.validation.suite import allowed_range


def test_allowed_range_widens_by_tolerance_and_handles_constant_columns():
    assert allowed_range(ColumnProfile("f", 0.0, 2.0), 0.05) == pytest.approx((-0.1, 2.1))
    assert allowed_range(ColumnProfile("f", 0.0, 0.0), 0.05) == pytest.approx((-0.05, 0.05))
    assert allowed_range(ColumnProfile("f", 300.0, 300.0), 0.05) == pytest.approx((285.0, 315.0))
    assert allowed_range(ColumnProfile("f", 1.0, 1.0), 0.0) == (1.0, 1.0)


def test_suite_is_plain_data_covering_the_schema(profile, settings):
    specs = build_suite(profile, settings)
    json.dumps([s.to_dict() for s in specs])
    by_type = {}
    for s in specs:
        by_type.setdefault(s.type, []).append(s.column)
    assert specs[0].kwargs["column_set"] == ["event_id", "region", "label", *profile.features]
    assert by_type["expect_column_values_to_be_in_type_list"] == ["label", *profile.features]
    assert by_type["expect_column_proportion_of_non_null_values_to_be_between"] == [
        "event_id", "region", "label", *profile.features]
    assert by_type["expect_column_min_to_be_between"] == list(profile.features)
    assert by_type["expect_column_max_to_be_between"] == list(profile.features)
    assert [s.kwargs["min_value"] for s in specs if s.type == "expect_table_row_count_to_be_between"] == [100]


def test_good_synthetic_batches_pass(synthetic, profile, settings):
    for region, frame in region_batches(synthetic).items():
        result = validate_batch(frame, profile, settings)
        assert result.success, (region, result.messages)
        assert result.failures == [] and result.n_rows == len(frame) and result.seconds > 0
        assert result.raw["success"] is True and len(result.raw["results"]) == len(build_suite(profile, settings))
        json.dumps(result.to_dict(), allow_nan=False)


def test_real_kdd99_regional_batch_passes_against_the_kdd99_reference(kdd99, kdd99_settings):
    profile = load_or_create_reference(kdd99, kdd99_settings)
    assert profile.columns["att19"].range == 0  # a constant column: gets the small absolute slack
    batch = region_batches(kdd99)["eu-west"]
    result = validate_batch(batch, profile, kdd99_settings)
    assert result.success, result.messages
    assert result.n_rows == len(batch) > 15000


def _only_failure(result):
    assert not result.success
    assert len(result.failures) == 1, result.messages
    return result.failures[0]


def test_missing_column(batch, profile, settings):
    f = _only_failure(validate_batch(batch.drop(columns=["f3"]), profile, settings))
    assert (f["expectation"], f["column"]) == ("expect_table_columns_to_match_set", "f3")
    assert f["message"] == "column 'f3' is missing"


def test_missing_ids_and_label(batch, profile, settings):
    result = validate_batch(batch.drop(columns=["event_id", "label"]), profile, settings)
    assert result.messages == ["column 'event_id' is missing", "column 'label' is missing"]


def test_nulls(batch, profile, settings):
    batch.loc[[4, 9, 11], "f2"] = np.nan
    f = _only_failure(validate_batch(batch, profile, settings))
    assert (f["expectation"], f["column"]) == ("expect_column_proportion_of_non_null_values_to_be_between", "f2")
    assert f["message"] == f"column 'f2' has 3 null value(s) in {len(batch)} rows"


def test_null_ids(batch, profile, settings):
    batch["region"] = batch["region"].astype(object)
    batch.loc[0, "region"] = None
    f = _only_failure(validate_batch(batch, profile, settings))
    assert f["column"] == "region" and "1 null value(s)" in f["message"]


@pytest.mark.parametrize("side", ["above", "below"])
def test_out_of_range(batch, profile, settings, side):
    ref = profile.columns["f1"]
    lo, hi = allowed_range(ref, settings.validation.range_tolerance)
    inside = (ref.max + (hi - ref.max) / 2) if side == "above" else (ref.min - (ref.min - lo) / 2)
    batch.loc[7, "f1"] = inside  # beyond the reference, within the tolerance: fine
    assert validate_batch(batch, profile, settings).success

    outside = hi + 3 * (hi - ref.max) if side == "above" else lo - 3 * (ref.min - lo)
    batch.loc[7, "f1"] = outside
    f = _only_failure(validate_batch(batch, profile, settings))
    kind = "max" if side == "above" else "min"
    assert (f["expectation"], f["column"]) == (f"expect_column_{kind}_to_be_between", "f1")
    assert f["observed"] == pytest.approx(outside)
    assert f"allowed {'maximum' if side == 'above' else 'minimum'}" in f["message"]


def test_infinite_value_is_out_of_range(batch, profile, settings):
    batch.loc[2, "f0"] = np.inf
    f = _only_failure(validate_batch(batch, profile, settings))
    assert f["observed"] == "inf" and "values up to inf" in f["message"]


def test_non_numeric_type(batch, profile, settings):
    batch["f4"] = batch["f4"].map(lambda v: f"{v:.3f}")
    f = _only_failure(validate_batch(batch, profile, settings))  # its range checks fold into this one
    assert (f["expectation"], f["column"]) == ("expect_column_values_to_be_in_type_list", "f4")
    assert "column 'f4' is not numeric (dtype object" in f["message"]


def test_label_outside_zero_one(batch, profile, settings):
    batch.loc[5, "label"] = 7
    f = _only_failure(validate_batch(batch, profile, settings))
    assert (f["expectation"], f["column"]) == ("expect_column_distinct_values_to_be_in_set", "label")
    assert "[7]" in f["message"]


def test_too_few_rows(batch, profile, settings):
    f = _only_failure(validate_batch(batch.head(99), profile, settings))
    assert (f["expectation"], f["column"], f["observed"]) == ("expect_table_row_count_to_be_between", None, 99)
    assert f["message"] == "batch has 99 rows; at least 100 are required"
    assert validate_batch(batch.head(100), profile, settings).success


def test_empty_batch_reports_only_the_row_count(batch, profile, settings):
    result = validate_batch(batch.head(0), profile, settings)
    assert result.messages == ["batch has 0 rows; at least 100 are required"]


def test_min_rows_and_tolerance_come_from_settings(batch, profile):
    from ebmops.core.settings import load_settings

    strict = load_settings(validation={"min_rows": 1000, "range_tolerance": 0.0})
    batch.loc[0, "f0"] = profile.columns["f0"].max + 1e-9
    assert {f["expectation"] for f in validate_batch(batch, profile, strict).failures} == {
        "expect_table_row_count_to_be_between", "expect_column_max_to_be_between"}
