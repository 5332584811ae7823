"""Detection quality: the EBM's metrics and the IsolationForest baseline on the same split.

Anomalies are rare (0.4 % of kdd99), so two threshold-free metrics are reported:

* AUROC: the chance that a random anomaly scores above a random normal event. It is
  dominated by the many normal events and saturates near 1 for any decent detector.
* Average precision (area under precision-recall): how clean the top of the ranking is,
  i.e. how many of the alerts an operator looks at are real. With 0.4 % anomalies this is
  the discriminating metric, and the one the EBM must match the baseline on.

IsolationForest is the baseline because it is the standard unsupervised detector for tabular
data, needs no tuning, and trains in a second: an energy model that does not beat it is not
worth its cost. It is fitted on the same training rows and scored on the same test rows.
"""

from __future__ import annotations

import time

import numpy as np

from ebmops.core.errors import DatasetError


def detection_metrics(scores: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """AUROC and average precision of ``scores`` (higher = more anomalous) against labels ``y`` (1 = anomaly)."""
    from sklearn.metrics import average_precision_score, roc_auc_score  # lazy: sklearn costs ~1.7 s to import

    s, y = np.asarray(scores, dtype=np.float64), np.asarray(y).astype(np.int64)
    if s.shape != y.shape:
        raise DatasetError(f"scores ({s.shape}) and labels ({y.shape}) differ in shape")
    if len(np.unique(y)) != 2:
        raise DatasetError("detection metrics need both normal (0) and anomalous (1) events in the test split; "
                           f"it holds only {np.unique(y).tolist()}")
    return {"auroc": float(roc_auc_score(y, s)), "ap": float(average_precision_score(y, s))}


def isolation_forest_baseline(x_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, *, seed: int,
                              trees: int = 100) -> dict[str, float]:
    """Fit IsolationForest on ``x_train``, score ``x_test`` (score = -score_samples); metrics and seconds."""
    from sklearn.ensemble import IsolationForest

    t0 = time.perf_counter()
    # n_jobs=1: deterministic and polite on a shared machine; it fits in about a second here.
    forest = IsolationForest(n_estimators=trees, random_state=seed, n_jobs=1).fit(x_train)
    scores = -forest.score_samples(x_test)
    seconds = time.perf_counter() - t0
    return {**detection_metrics(scores, y_test), "seconds": seconds}
