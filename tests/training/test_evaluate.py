import numpy as np
import pytest

from ebmops.core.errors import DatasetError
from training import detection_metrics, isolation_forest_baseline, split_dataset


def test_metrics_of_known_rankings():
    y = np.array([0, 0, 1, 1])
    assert detection_metrics(np.array([0.1, 0.2, 0.8, 0.9]), y) == {"auroc": 1.0, "ap": 1.0}
    assert detection_metrics(np.array([0.9, 0.8, 0.2, 0.1]), y)["auroc"] == 0.0
    # ranking: 0.8 (anomaly), 0.4 (normal), 0.35 (anomaly), 0.1: AUROC 3/4, AP = (1/1 + 2/3) / 2
    m = detection_metrics(np.array([0.1, 0.4, 0.35, 0.8]), y)
    assert m["auroc"] == pytest.approx(0.75) and m["ap"] == pytest.approx(5 / 6)


def test_metrics_need_both_classes():
    with pytest.raises(DatasetError, match="both normal"):
        detection_metrics(np.array([0.1, 0.2]), np.array([0, 0]))


def test_isolation_forest_baseline_finds_the_planted_cluster(synthetic):
    s = split_dataset(synthetic, train_fraction=0.5, calibration_fraction=0.1, seed=0)
    base = isolation_forest_baseline(s.x_train, s.x_test, s.y_test, seed=0, trees=50)
    assert set(base) == {"auroc", "ap", "seconds"} and base["auroc"] > 0.95 and base["seconds"] > 0
    assert base == {**isolation_forest_baseline(s.x_train, s.x_test, s.y_test, seed=0, trees=50),
                    "seconds": base["seconds"]}  # seeded: the same figures again
