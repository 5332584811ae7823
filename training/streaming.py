"""The split of a streamed source, and the bounded samples training needs besides the stream.

A source too large to hold cannot be permuted as :func:`training.data.split_dataset` does, so
here every event is assigned by its own seeded uniform draw (``unit_draws(row, seed)``, see
:mod:`ebmops.core.data.sample`): a normal event (label 0, or any event without labels) goes to

* ``train`` when the draw is below ``train_fraction``,
* ``calib`` when it is below ``train_fraction + calibration_fraction``,
* ``test`` otherwise; every anomaly goes to ``test``.

The parts have the configured shares up to binomial noise, and the assignment of an event never
depends on batch size, partition order or which pass reads it: the trainer re-derives the
training rows batch by batch (:func:`part_masks`), and a resumed run sees the same rows.

:func:`prepare` makes one pass and keeps, with memory independent of the number of events:
the exact size of each part, the mean and standard deviation of the training rows (merged
per batch in float64, Chan et al.), and seeded samples (:class:`~ebmops.core.data.sample.BottomK`)
of the calibration rows (threshold), the test rows (normal events and anomalies, evaluation and
the gate's holdout) and the training rows (the IsolationForest baseline and the drift reference).

A source with categorical columns first has their vocabulary learnt (:func:`learn_vocabulary`:
one more pass, counting each column's values among the training rows); the split then reads the
source with that vocabulary, so every sample and every training window holds codes, and the
vocabulary goes with the split to the model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ebmops.core.data.categorical import count_values, top_values
from ebmops.core.data.sample import BottomK, unit_draws, row_keys
from ebmops.core.data.stream import Budget, EventBatch, StreamSource
from ebmops.core.errors import ConfigError
from training.data import DataSplit

SPLIT_SALT = 0x5B117
CALIB_SALT, TEST_SALT, ANOMALY_SALT, TRAIN_SALT = 0xCA11B, 0x7E57, 0xA7A7, 0x7A1


def check_fractions(train_fraction: float, calibration_fraction: float) -> None:
    if not (0 < train_fraction < 1 and 0 < calibration_fraction < 1 and train_fraction + calibration_fraction < 1):
        raise ConfigError(f"training.train_fraction ({train_fraction}) and training.calibration_fraction "
                          f"({calibration_fraction}) must each lie in (0, 1) and sum to less than 1; "
                          f"the rest of the normal events is the evaluation holdout")


def part_masks(batch: EventBatch, cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, calib, test) boolean masks of a batch's rows."""
    u = unit_draws(batch.rows, cfg.seed, SPLIT_SALT)
    normal = batch.label == 0 if batch.label is not None else np.ones(len(batch), dtype=bool)
    train = normal & (u < cfg.train_fraction)
    calib = normal & ~train & (u < cfg.train_fraction + cfg.calibration_fraction)
    return train, calib, ~(train | calib)


def _take(p: dict, i: np.ndarray) -> dict:
    return {k: v[i] for k, v in p.items()}


def _concat(ps: list[dict]) -> dict:
    return {k: np.concatenate([p[k] for p in ps]) for k in ps[0]}


def _sampler(k: int) -> BottomK:
    return BottomK(k, take=_take, concat=_concat)


def _offer(sampler: BottomK, batch: EventBatch, mask: np.ndarray, seed: int, salt: int) -> None:
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return
    keys = row_keys(batch.rows[idx], seed, salt)
    if sampler.bound is not None:
        keep = keys < sampler.bound
        idx, keys = idx[keep], keys[keep]
    if len(idx):
        payload = {"x": batch.x[idx], "rows": batch.rows[idx]}
        if batch.label is not None:
            payload["y"] = batch.label[idx].astype(np.int64)
        sampler.offer(keys, payload)


def _take_batch(source, batch, cfg, n, mean, m2, counts, calib, base, test_normal, test_anom):
    """Fold one batch into the running standardisation, part counts and samples."""
    if not np.isfinite(batch.x).all():
        bad = [source.schema.features[j] for j in np.flatnonzero(~np.isfinite(batch.x).all(axis=0))]
        raise ConfigError(f"dataset '{source.name}' has missing or infinite values in {bad[:10]} (rows from "
                          f"{batch.row0}); clean or impute them before training")
    train, cal, test = part_masks(batch, cfg)
    xt = batch.x[train].astype(np.float64)
    if len(xt):  # Chan et al.: merge this batch's mean and M2 into the running ones
        bn, bmean = len(xt), xt.mean(axis=0)
        bm2 = ((xt - bmean) ** 2).sum(axis=0)
        delta, total = bmean - mean, n + bn
        mean = mean + delta * (bn / total)
        m2 = m2 + bm2 + delta ** 2 * (n * bn / total)
        n = total
    anom = test & (batch.label != 0) if batch.label is not None else np.zeros(len(batch), dtype=bool)
    counts["calib"] += int(cal.sum())
    counts["test"] += int(test.sum())
    counts["anom"] += int(anom.sum())
    _offer(calib, batch, cal, cfg.seed, CALIB_SALT)
    _offer(base, batch, train, cfg.seed, TRAIN_SALT)
    _offer(test_normal, batch, test & ~anom, cfg.seed, TEST_SALT)
    _offer(test_anom, batch, anom, cfg.seed, ANOMALY_SALT)
    return n, mean, m2


@dataclass
class StreamSplit:
    """What one pass over a streamed source leaves for training: exact part sizes, the training
    rows' standardisation, and seeded samples (float32 features, global row numbers)."""

    feature_names: tuple[str, ...]
    n_train: int
    n_calib: int
    n_test: int
    n_test_anomalies: int
    mean: np.ndarray
    std: np.ndarray
    x_calib: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray | None
    x_baseline: np.ndarray  # a sample of the training rows
    calib_rows: np.ndarray
    test_rows: np.ndarray
    baseline_rows: np.ndarray
    seconds: float = 0.0
    vocabulary: dict = field(default_factory=dict)  # categorical column -> categories (code order)

    def sizes(self) -> dict[str, int]:
        return {"train": self.n_train, "calib": self.n_calib, "test": self.n_test,
                "test_anomalies": self.n_test_anomalies, "calib_sample": len(self.x_calib),
                "test_sample": len(self.x_test), "baseline_sample": len(self.x_baseline)}

    def as_data_split(self) -> DataSplit:
        """The samples in the in-memory split's shape (x_train: the baseline sample), for the
        evaluation and export code that takes a :class:`DataSplit`."""
        return DataSplit(x_train=self.x_baseline, x_calib=self.x_calib, x_test=self.x_test, y_test=self.y_test,
                         feature_names=self.feature_names, train_rows=self.baseline_rows,
                         calib_rows=self.calib_rows, test_rows=self.test_rows, vocabulary=dict(self.vocabulary))


def counts_limit(max_categories: int) -> int:
    """Distinct values a column's count may hold while learning its vocabulary."""
    return max(100_000, 100 * int(max_categories))


def learn_vocabulary(source: StreamSource, cfg, *, progress: bool = False) -> dict[str, tuple[str, ...]]:
    """Each categorical column's categories: its ``cfg.max_categories`` most frequent values among
    the training rows (ties by the text), from one pass. A column with more distinct values than
    :func:`counts_limit` keeps counting only its most frequent half each time it passes that
    (heavy hitters; exact below the limit)."""
    cats = source.schema.categorical
    counts: dict[str, dict[str, int]] = {c: {} for c in cats}
    limit = counts_limit(cfg.max_categories)
    from ebmops.core.data.stream import progress_bar

    with progress_bar(source, f"categories {source.name}", progress) as bar:
        for batch in source.iter_batches(regions=False):
            bar.update(len(batch))
            train = part_masks(batch, cfg)[0]
            for c in cats:
                count_values(batch.cats[c][train], counts[c])
                if len(counts[c]) > limit:
                    counts[c] = dict(sorted(counts[c].items(), key=lambda kv: (-kv[1], kv[0]))[:limit // 2])
    empty = [c for c in cats if not counts[c]]
    if empty:
        raise ConfigError(f"dataset '{source.name}': categorical column(s) {empty} have no values in the training "
                          f"rows; add data or drop them from data.sources.{source.name}.features")
    return {c: top_values(counts[c], cfg.max_categories) for c in cats}


def prepare(source: StreamSource, cfg, sizes: Budget, *, progress: bool = False) -> StreamSplit:
    """One pass over ``source``: the split's exact sizes, standardisation and bounded samples
    (after one more pass learning the vocabulary of categorical columns, if any)."""
    check_fractions(cfg.train_fraction, cfg.calibration_fraction)
    started = time.perf_counter()
    if source.schema.categorical and not source.vocabulary:
        source = source.with_vocabulary(learn_vocabulary(source, cfg, progress=progress))
    f = source.schema.n_features
    n = 0
    mean, m2 = np.zeros(f), np.zeros(f)
    counts = {"calib": 0, "test": 0, "anom": 0}
    calib, base = _sampler(sizes.calibration_rows), _sampler(sizes.baseline_rows)
    test_normal, test_anom = _sampler(sizes.evaluation_rows), _sampler(sizes.evaluation_rows)
    from ebmops.core.data.stream import progress_bar

    with progress_bar(source, f"split {source.name}", progress) as bar:
        for batch in source.iter_batches(regions=False):
            bar.update(len(batch))
            n, mean, m2 = _take_batch(source, batch, cfg, n, mean, m2, counts, calib, base, test_normal, test_anom)

    if n < 1 or counts["calib"] < 1:
        raise ConfigError(f"dataset '{source.name}' has too few normal events for a training part ({n}) and a "
                          f"calibration part ({counts['calib']}); add data or raise the fractions")
    std = np.maximum(np.sqrt(m2 / n), cfg.std_floor)
    empty = {"x": np.empty((0, f), np.float32), "rows": np.empty(0, np.int64), "y": np.empty(0, np.int64)}
    c = calib.result()[1] or empty
    b = base.result()[1] or empty
    tn, ta = test_normal.result()[1] or empty, test_anom.result()[1] or empty
    test = _concat([tn, ta]) if source.schema.has_label else {k: v for k, v in tn.items()}
    order = np.argsort(test["rows"], kind="stable")  # event order, as the in-memory split keeps it
    y_test = test["y"][order] if source.schema.has_label else None
    return StreamSplit(feature_names=tuple(source.schema.features), n_train=int(n), n_calib=counts["calib"],
                       n_test=counts["test"], n_test_anomalies=counts["anom"], mean=mean.astype(np.float32),
                       std=std.astype(np.float32), x_calib=c["x"], x_test=test["x"][order], y_test=y_test,
                       x_baseline=b["x"], calib_rows=c["rows"], test_rows=test["rows"][order], baseline_rows=b["rows"],
                       seconds=time.perf_counter() - started, vocabulary=dict(source.vocabulary))
