import numpy as np
import pytest

from ebmops.core.errors import ConfigError
from tests.conftest import make_synthetic
from training import split_dataset


def test_split_puts_every_anomaly_in_test_and_sizes_follow_fractions(synthetic):
    s = split_dataset(synthetic, train_fraction=0.5, calibration_fraction=0.1, seed=0)
    assert s.sizes() == {"train": 1000, "calib": 200, "test": 800 + 40, "test_anomalies": 40}
    labels = synthetic.frame["label"].to_numpy()
    assert labels[s.train_rows].sum() == 0 and labels[s.calib_rows].sum() == 0
    assert np.array_equal(s.y_test, labels[s.test_rows])
    # the three parts are disjoint and cover the dataset
    rows = np.concatenate([s.train_rows, s.calib_rows, s.test_rows])
    assert np.array_equal(np.sort(rows), np.arange(len(synthetic.frame)))
    assert s.x_train.dtype == np.float32 and s.feature_names == synthetic.schema.features


def test_split_is_deterministic_for_a_seed_and_differs_across_seeds(synthetic):
    a = split_dataset(synthetic, train_fraction=0.5, calibration_fraction=0.1, seed=3)
    b = split_dataset(synthetic, train_fraction=0.5, calibration_fraction=0.1, seed=3)
    c = split_dataset(synthetic, train_fraction=0.5, calibration_fraction=0.1, seed=4)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.train_rows, c.train_rows)


def test_unlabelled_dataset_splits_all_rows_and_has_no_test_labels():
    ds = make_synthetic(n_normal=300, n_anomaly=0)
    ds.frame = ds.frame.drop(columns=["label"])
    ds.schema = type(ds.schema)(ds.schema.features, has_label=False)
    s = split_dataset(ds, train_fraction=0.6, calibration_fraction=0.2, seed=0)
    assert s.y_test is None and (len(s.x_train), len(s.x_calib), len(s.x_test)) == (180, 60, 60)


@pytest.mark.parametrize("train, calib", [(0.9, 0.1), (0.0, 0.1), (0.5, 0.0)])
def test_fractions_that_leave_no_holdout_are_refused(synthetic, train, calib):
    with pytest.raises(ConfigError, match="training.train_fraction"):
        split_dataset(synthetic, train_fraction=train, calibration_fraction=calib, seed=0)


def test_missing_values_are_refused_with_the_column_named(synthetic):
    synthetic.frame.loc[5, "f2"] = np.nan
    with pytest.raises(ConfigError, match="f2"):
        split_dataset(synthetic, train_fraction=0.5, calibration_fraction=0.1, seed=0)
