"""Categorical columns in the data layer: canonical values, vocabulary order and cap, unknown codes,
the declared schema, and streamed batches that carry raw categories."""

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from ebmops.core.data import FeatureSchema, open_source
from ebmops.core.data.categorical import (canonical_arrow, canonical_numbers, canonical_value, count_values, encode,
                                          top_values)
from ebmops.core.errors import DatasetError
from ebmops.core.settings import load_settings
from tests.core.data.cat_events import CATEGORICAL, FEATURES, events, source_settings, write_csv


def test_numbers_are_canonicalised_the_same_way_from_every_representation():
    assert canonical_value(6) == canonical_value(6.0) == canonical_value(np.int8(6)) == canonical_value(np.float32(6)) == "6"
    assert canonical_value(6.5) == "6.5" and canonical_value("tcp") == "tcp" and canonical_value("6.0") == "6.0"
    assert canonical_value(None) is None and canonical_value(float("nan")) is None
    assert canonical_numbers(np.array([6.0, 6.5, np.nan, -3.0])).tolist() == ["6", "6.5", None, "-3"]
    assert canonical_numbers(np.array([6, 17], dtype=np.int64)).tolist() == ["6", "17"]
    assert canonical_arrow(pa.array([6, None, 17])).tolist() == ["6", None, "17"]
    assert canonical_arrow(pa.array([6.0, 17.25])).tolist() == ["6", "17.25"]
    assert canonical_arrow(pa.array(["tcp", None])).tolist() == ["tcp", None]


def test_vocabulary_is_most_frequent_first_ties_by_text_and_capped():
    counts: dict = {}
    count_values(np.array(["b", "a", "c", "a", "b", None, "d"], dtype=object), counts)
    assert counts == {"a": 2, "b": 2, "c": 1, "d": 1}  # nulls are not counted
    assert top_values(counts, 64) == ("a", "b", "c", "d")
    assert top_values(counts, 3) == ("a", "b", "c")
    shuffled = dict(reversed(list(counts.items())))
    assert top_values(shuffled, 3) == top_values(counts, 3)  # the order counts came in does not matter


def test_unseen_values_get_the_unknown_code():
    assert encode(["udp", "tcp", "sctp", 6, None], ("tcp", "udp", "6")).tolist() == [1.0, 0.0, 3.0, 2.0, 3.0]


def test_schema_round_trips_and_old_dicts_load_as_all_numeric():
    s = FeatureSchema(("a", "b"), has_label=True, categorical=("b",))
    assert FeatureSchema.from_dict(s.to_dict()) == s and s.numeric == ("a",)
    old = {"features": ["a", "b"], "has_label": False}
    assert FeatureSchema.from_dict(old).categorical == () and FeatureSchema(("a", "b")).to_dict() == old
    with pytest.raises(ValueError, match=r"\['c'\] are not among the features"):
        FeatureSchema(("a",), categorical=("c",))


def test_settings_refuse_a_categorical_column_that_is_not_a_feature(tmp_path):
    with pytest.raises(ValidationError, match=r"categorical column\(s\) \['flag'\] are not among"):
        load_settings(home=tmp_path, data={"sources": {"ev": {"path": "x.csv", "features": ["a"],
                                                                "categorical": ["flag"]}}})
    s = load_settings(home=tmp_path)
    assert s.training.max_categories == 64


def test_streamed_batches_carry_raw_categories_and_codes_once_a_vocabulary_is_set(tmp_path):
    path = write_csv(tmp_path / "ev.csv")
    s = load_settings(home=tmp_path / "home", data={"sources": {"ev": source_settings(path)}, "batch_rows": 500})
    src = open_source("ev", s)
    assert src.schema.categorical == tuple(CATEGORICAL) and src.non_numeric() == []
    batch = next(src.iter_batches())
    frame = events()
    assert batch.cats["proto"].tolist() == frame["proto"][:500].tolist()
    assert batch.cats["port"].tolist() == frame["port"][:500].astype(str).tolist()  # CSV integers -> "80"
    assert np.isnan(batch.x[:, :2]).all() and np.isfinite(batch.x[:, 2:]).all()
    coded = next(src.with_vocabulary({"proto": ("udp", "tcp"), "port": ("443",)}).iter_batches())
    assert coded.x[:, 0].tolist() == [0.0 if p == "udp" else 1.0 for p in frame["proto"][:500]]
    assert coded.x[:, 1].tolist() == [0.0 if p == 443 else 1.0 for p in frame["port"][:500]]
    assert src.fingerprint() != src.with_vocabulary({"proto": ("udp",), "port": ("443",)}).fingerprint()


def test_a_text_feature_not_declared_categorical_is_refused_with_the_fix(tmp_path):
    path = write_csv(tmp_path / "ev.csv")
    src_settings = source_settings(path, categorical=["port"])
    s = load_settings(home=tmp_path / "home", data={"sources": {"ev": src_settings}})
    with pytest.raises(DatasetError, match=r"column 'proto' .* not numeric; declare it under "
                                           r"data.sources.ev.categorical"):
        next(open_source("ev", s).iter_batches())


def test_in_memory_load_keeps_categories_as_canonical_text(tmp_path):
    from ebmops.core.data import load_dataset

    path = write_csv(tmp_path / "ev.csv")
    s = load_settings(home=tmp_path / "home", data={"sources": {"ev": source_settings(path)}})
    ds = load_dataset("ev", s)
    assert ds.schema.categorical == tuple(CATEGORICAL)
    assert set(ds.frame["port"]) == {"80", "443", "53"}
    with pytest.raises(DatasetError, match="need a vocabulary"):
        ds.features_array()
    x = ds.features_array(vocabulary={"proto": ("tcp",), "port": ("80", "443")})
    assert set(np.unique(x[:, 0])) == {0.0, 1.0} and set(np.unique(x[:, 1])) == {0.0, 1.0, 2.0}
