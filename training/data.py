"""Splitting a dataset for unsupervised training, threshold calibration and evaluation.

An energy model learns what *normal* looks like, so it trains on normal events only. The
normal rows (label 0, or every row when the dataset has no label) are shuffled by a seed
and cut into three parts:

* ``train``: ``train_fraction`` of them, the model's training set;
* ``calib``: ``calibration_fraction`` of them, never trained on, used to set the alert
  threshold as a quantile of their energies (so the threshold reflects unseen normal data);
* ``test``: the remaining normal rows plus *every* anomaly, used to measure detection.

Labels are used only here, to keep anomalies out of training and for evaluation. The same
seed always gives the same split, so the EBM and the IsolationForest baseline are compared
on identical rows, and a retried training run sees identical data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ebmops.core.data.categorical import count_values, top_values
from ebmops.core.data.schema import LABEL, Dataset
from ebmops.core.errors import ConfigError


@dataclass
class DataSplit:
    """Feature arrays (float32, model input order) of one seeded split."""

    x_train: np.ndarray
    x_calib: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray | None  # 1 = anomaly; None when the dataset has no label
    feature_names: tuple[str, ...]
    train_rows: np.ndarray  # row positions in the dataset's frame, for lineage and debugging
    calib_rows: np.ndarray
    test_rows: np.ndarray
    vocabulary: dict = field(default_factory=dict)  # categorical column -> categories (code order), learnt on train

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.x_train), "calib": len(self.x_calib), "test": len(self.x_test),
                "test_anomalies": int(self.y_test.sum()) if self.y_test is not None else 0}


def split_dataset(ds: Dataset, *, train_fraction: float, calibration_fraction: float, seed: int,
                  max_categories: int = 64) -> DataSplit:
    """Split ``ds`` into train / calibration / test as described in the module docstring. Categorical
    columns get a vocabulary from the training rows (at most ``max_categories`` values each) and
    become codes in every part."""
    if not (0 < train_fraction < 1 and 0 < calibration_fraction < 1 and train_fraction + calibration_fraction < 1):
        raise ConfigError(f"training.train_fraction ({train_fraction}) and training.calibration_fraction "
                          f"({calibration_fraction}) must each lie in (0, 1) and sum to less than 1; "
                          f"the rest of the normal events is the evaluation holdout")
    if ds.schema.categorical:
        return _split_categorical(ds, train_fraction=train_fraction, calibration_fraction=calibration_fraction,
                                  seed=seed, max_categories=max_categories)
    x = ds.features_array()
    if not np.isfinite(x).all():
        bad = [ds.schema.features[i] for i in np.flatnonzero(~np.isfinite(x).all(axis=0))]
        raise ConfigError(f"dataset '{ds.name}' has missing or infinite values in {bad[:10]}; "
                          f"clean or impute them before training")
    labelled = ds.schema.has_label and LABEL in ds.frame.columns
    if labelled:
        y = (ds.frame[LABEL].to_numpy() != 0).astype(np.int64)
        normal, anomalous = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    else:
        y, normal, anomalous = None, np.arange(len(x)), np.arange(0)

    order = np.random.default_rng(seed).permutation(normal)
    n_train = int(round(train_fraction * len(order)))
    n_calib = int(round(calibration_fraction * len(order)))
    if n_train < 1 or n_calib < 1:
        raise ConfigError(f"dataset '{ds.name}' has {len(order)} normal events: too few for a training part "
                          f"({n_train}) and a calibration part ({n_calib}); add data or raise the fractions")
    train_rows = np.sort(order[:n_train])
    calib_rows = np.sort(order[n_train:n_train + n_calib])
    # Sorted row order keeps the test set readable in event order; the trainer shuffles itself.
    test_rows = np.sort(np.concatenate([order[n_train + n_calib:], anomalous]))
    return DataSplit(x_train=x[train_rows], x_calib=x[calib_rows], x_test=x[test_rows],
                     y_test=None if y is None else y[test_rows], feature_names=tuple(ds.schema.features),
                     train_rows=train_rows, calib_rows=calib_rows, test_rows=test_rows)


def _split_categorical(ds: Dataset, *, train_fraction: float, calibration_fraction: float, seed: int,
                       max_categories: int) -> DataSplit:
    """The same split (same rows) for a dataset with categorical columns: the rows are drawn from
    the numeric columns' order of events, the vocabulary from the training rows, then encoded."""
    numeric_only = Dataset(name=ds.name, frame=ds.frame.drop(columns=list(ds.schema.categorical)),
                           schema=type(ds.schema)(features=ds.schema.numeric, has_label=ds.schema.has_label))
    if not numeric_only.schema.features:  # every feature categorical: split on an empty matrix
        numeric_only.frame["__row"] = 0.0
        numeric_only.schema = type(ds.schema)(features=("__row",), has_label=ds.schema.has_label)
    rows = split_dataset(numeric_only, train_fraction=train_fraction, calibration_fraction=calibration_fraction,
                         seed=seed)
    vocabulary = {}
    for c in ds.schema.categorical:
        counts: dict[str, int] = {}
        count_values(ds.frame[c].to_numpy(dtype=object)[rows.train_rows], counts)
        vocabulary[c] = top_values(counts, max_categories)
    x = ds.features_array(vocabulary=vocabulary)
    return DataSplit(x_train=x[rows.train_rows], x_calib=x[rows.calib_rows], x_test=x[rows.test_rows],
                     y_test=rows.y_test, feature_names=tuple(ds.schema.features), train_rows=rows.train_rows,
                     calib_rows=rows.calib_rows, test_rows=rows.test_rows, vocabulary=vocabulary)
