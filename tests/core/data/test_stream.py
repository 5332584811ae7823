"""Streaming sources: partitions, canonical batches, exact resume positions, S3."""

import uuid

import numpy as np
import pandas as pd
import pytest

from ebmops.core.data import Position, budget, load_dataset, open_source
from ebmops.core.errors import ConfigError, DatasetError
from ebmops.core.settings import load_settings

N = 1000


def _frame(n=N, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"eid": np.arange(n, dtype=np.int64), "a": rng.random(n), "b": rng.random(n).astype("float32"),
                         "y": (rng.random(n) > 0.9).astype(int), "note": "x"})


@pytest.fixture()
def parts(tmp_path):
    """A hive-partitioned directory (region in the folder name), row groups smaller than a batch."""
    df = _frame()
    for region, rows in (("us-east", slice(0, 600)), ("eu-west", slice(600, N))):
        folder = tmp_path / "events" / f"region={region}"
        folder.mkdir(parents=True)
        df.iloc[rows].to_parquet(folder / "part-0.parquet", row_group_size=100, index=False)
    (tmp_path / "events" / "_SUCCESS").write_text("")
    return tmp_path / "events", df


def _settings(tmp_path, path, batch_rows=64, **src):
    spec = {"path": str(path), "features": ["b", "a"], "label": "y", "event_id": "eid", **src}
    return load_settings(home=tmp_path / "h", data={"sources": {"m": spec}, "batch_rows": batch_rows})


def test_partitioned_parquet_yields_canonical_batches_in_a_fixed_order(tmp_path, parts):
    path, df = parts
    src = open_source("m", _settings(tmp_path, path, region="region"))
    assert [p.hive for p in src.partitions] == [{"region": "eu-west"}, {"region": "us-east"}]  # sorted paths
    assert src.n_rows == N and [p.row0 for p in src.partitions] == [0, 400]
    batches = list(src.iter_batches())
    assert all(len(b) <= 64 for b in batches) and sum(len(b) for b in batches) == N
    # exact multiples of batch_rows inside each partition, whatever the row groups
    assert [len(b) for b in batches if b.position.partition == 0] == [64] * 6 + [16]
    first = batches[0]
    assert first.x.dtype == np.float32 and first.x.shape == (64, 2) and first.label.dtype == np.int8
    ids = np.concatenate([b.event_id for b in batches])
    expected = pd.concat([df.iloc[600:], df.iloc[:600]])
    np.testing.assert_array_equal(ids, expected["eid"])
    np.testing.assert_array_equal(np.concatenate([b.x for b in batches])[:, 0], expected["b"])  # model order b, a
    np.testing.assert_array_equal(np.concatenate([b.region for b in batches]),
                                  ["eu-west"] * 400 + ["us-east"] * 600)
    np.testing.assert_array_equal(np.concatenate([b.rows for b in batches]), np.arange(N))


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_scan_resumed_at_a_position_continues_with_the_same_rows(tmp_path, fmt):
    df = _frame()
    path = tmp_path / f"e.{fmt}"
    df.to_parquet(path, row_group_size=90) if fmt == "parquet" else df.to_csv(path, index=False)
    src = open_source("m", _settings(tmp_path, path))
    whole = list(src.iter_batches())
    resumed = list(src.iter_batches(start=Position(0, 5)))
    assert [b.position for b in resumed] == [b.position for b in whole[5:]]
    for a, b in zip(resumed, whole[5:]):
        assert a.row0 == b.row0
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.event_id, b.event_id)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_stream_matches_the_in_memory_loader(tmp_path, fmt):
    df = _frame()
    path = tmp_path / f"e.{fmt}"
    df.to_parquet(path) if fmt == "parquet" else df.to_csv(path, index=False)
    s = load_settings(home=tmp_path / "h", data={"sources": {"m": {"path": str(path), "features": ["b", "a"],
                                                                    "label": "y"}}, "batch_rows": 100})
    whole = load_dataset("m", s).frame
    streamed = open_source("m", s).read_dataset().frame
    assert list(streamed.columns) == list(whole.columns)
    for col in ("event_id", "region", "label"):
        np.testing.assert_array_equal(streamed[col].to_numpy(), whole[col].to_numpy())
    np.testing.assert_allclose(streamed[["b", "a"]], whole[["b", "a"]], rtol=1e-6)  # float32 on the way


def test_selected_partitions_only(tmp_path, parts):
    path, _ = parts
    src = open_source("m", _settings(tmp_path, path, region="region"))
    regions = {r for b in src.iter_batches(partitions=[1]) for r in b.region}
    assert regions == {"us-east"}
    with pytest.raises(ConfigError, match="partition 7 of dataset 'm' does not exist"):
        list(src.iter_batches(partitions=[7]))


def test_missing_column_names_the_field_and_file(tmp_path, parts):
    path, _ = parts
    s = load_settings(home=tmp_path / "h", data={"sources": {"m": {"path": str(path), "features": ["a", "zz"]}}})
    with pytest.raises(DatasetError, match=r"data.sources.m.features names column\(s\) \['zz'\]"):
        open_source("m", s)


def test_non_numeric_feature_is_refused_when_read_not_when_opened(tmp_path):
    path = tmp_path / "e.parquet"
    _frame().to_parquet(path)
    s = load_settings(home=tmp_path / "h", data={"sources": {"m": {"path": str(path), "features": ["a", "note"]}}})
    src = open_source("m", s)  # validation reads the raw tables and reports the type
    assert [(i, col) for i, col, _t in src.non_numeric()] == [(0, "note")]
    with pytest.raises(DatasetError, match="column 'note' .* not numeric"):
        next(src.iter_batches())


def test_missing_path_and_empty_directory(tmp_path):
    s = _settings(tmp_path, tmp_path / "nope")
    with pytest.raises(DatasetError, match="does not exist"):
        open_source("m", s)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no .parquet"):
        open_source("m", _settings(tmp_path, tmp_path / "empty"))


def test_budget_bounds_the_batch_and_the_samples(tmp_path):
    s = load_settings(home=tmp_path, data={"memory_budget_mb": 1})
    b = budget(s, 40)
    assert b.batch_rows * (12 * 40 + 40) <= 1024 * 1024 / 8
    assert b.shuffle_rows < s.training.shuffle_buffer_rows
    big = budget(load_settings(home=tmp_path, data={"memory_budget_mb": 100000}), 40)
    assert big.batch_rows == s.data.batch_rows and big.calibration_rows == s.training.calibration_rows


def test_s3_prefix_is_streamed_with_the_source_credentials(tmp_path, seaweedfs):
    import boto3

    bucket = f"ebmops-src-{uuid.uuid4().hex[:8]}"
    client = boto3.client("s3", endpoint_url=seaweedfs.endpoint_url, aws_access_key_id=seaweedfs.access_key,
                          aws_secret_access_key=seaweedfs.secret_key, region_name=seaweedfs.region_name)
    client.create_bucket(Bucket=bucket)
    df = _frame()
    for i, rows in enumerate((slice(0, 500), slice(500, N))):
        local = tmp_path / f"p{i}.parquet"
        df.iloc[rows].to_parquet(local, index=False)
        client.upload_file(str(local), bucket, f"events/day=2026-11-3{i}/part-{i}.parquet")
    s = _settings(tmp_path, f"s3://{bucket}/events", batch_rows=128, endpoint_url=seaweedfs.endpoint_url,
                  access_key=seaweedfs.access_key, secret_key=seaweedfs.secret_key)
    src = open_source("m", s)
    assert len(src.partitions) == 2 and src.partitions[0].hive == {"day": "2026-11-30"}
    batches = list(src.iter_batches())
    np.testing.assert_array_equal(np.concatenate([b.event_id for b in batches]), df["eid"])
    resumed = next(src.iter_batches(start=Position(1, 2)))
    np.testing.assert_array_equal(resumed.event_id, df["eid"].to_numpy()[756:884])
    wrong = _settings(tmp_path, f"s3://{bucket}/events", endpoint_url=seaweedfs.endpoint_url,
                      access_key=seaweedfs.access_key, secret_key="wrong-secret")
    with pytest.raises(DatasetError, match="check data.sources.m.endpoint_url, access_key and secret_key"):
        open_source("m", wrong)


def test_batches_without_regions_skip_them_and_keep_everything_else(tmp_path, parts):
    path, _ = parts
    src = open_source("m", _settings(tmp_path, path, region="region"))
    with_regions, without = list(src.iter_batches()), list(src.iter_batches(regions=False))
    assert all(b.region is None for b in without) and all(b.region is not None for b in with_regions)
    for a, b in zip(with_regions, without):
        assert a.position == b.position and a.row0 == b.row0
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.event_id, b.event_id)
