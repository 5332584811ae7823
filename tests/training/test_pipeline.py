import numpy as np
import pytest

from ebmops.core.settings import TrainingSettings
from tests.conftest import make_synthetic
from tests.training.helpers import small_cfg
from training import fit


def test_fit_splits_trains_calibrates_and_evaluates(synthetic, tmp_path):
    out = fit(synthetic, small_cfg(threshold_quantile=0.99), checkpoint_dir=tmp_path, progress=False)
    assert out.threshold == pytest.approx(float(out.model.threshold))
    assert len(out.calibration_energies) == len(out.split.x_calib) == 200
    m = out.metrics
    assert m["ebm_auroc"] > 0.99 and m["iforest_auroc"] > 0.9 and m["epochs_completed"] == 5
    assert m["events_per_s"] == pytest.approx(1000 * 5 / out.train.seconds)
    assert 0 <= m["false_alarm_rate"] < 0.05 and m["recall_at_threshold"] > 0.9
    assert (tmp_path / "checkpoint.pt").is_file()


def test_fit_on_unlabelled_data_reports_no_detection_metrics():
    ds = make_synthetic(n_normal=600, n_anomaly=0)
    ds.frame = ds.frame.drop(columns=["label"])
    ds.schema = type(ds.schema)(ds.schema.features, has_label=False)
    out = fit(ds, small_cfg(epochs=1), progress=False)
    assert out.split.y_test is None and "ebm_auroc" not in out.metrics and np.isfinite(out.threshold)


def test_default_settings_beat_isolation_forest_on_real_kdd99(kdd99):
    """The quality bar of the defaults, on the real data (seed 0; the benchmark covers 3 seeds)."""
    out = fit(kdd99, TrainingSettings(device="cpu"), progress=False)
    m = out.metrics
    assert m["ebm_auroc"] >= 0.98 and m["ebm_ap"] >= m["iforest_ap"], m
