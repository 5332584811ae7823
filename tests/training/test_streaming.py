"""Training from a stream: the seeded split, bounded samples, the shuffle-buffer trainer."""

import numpy as np
import pytest
import torch

from ebmops.core.data import budget, open_path
from ebmops.core.errors import ConfigError
from ebmops.core.settings import load_settings
from tests.conftest import make_synthetic
from tests.training.helpers import same_weights, small_cfg, write_parts
from training import CHECKPOINT_NAME
from training.stream_trainer import train_stream
from training.streaming import prepare


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    ds = make_synthetic(n_normal=3000, n_anomaly=60)
    return ds, write_parts(tmp_path_factory.mktemp("stream") / "events", ds.frame)


def _source(events, batch_rows=256):
    ds, path = events
    return open_path(str(path), name="syn", features=list(ds.schema.features), label="label", event_id="event_id",
                     region="region", regions=["us-east", "eu-west", "ap-south"], batch_rows=batch_rows)


def _sizes(**training):
    return budget(load_settings(training=training), 6)


def test_split_sends_anomalies_to_test_and_follows_the_fractions(events):
    ds, _ = events
    cfg = small_cfg()
    sp = prepare(_source(events), cfg, _sizes())
    normal = 3000
    assert sp.n_train + sp.n_calib + sp.n_test == len(ds.frame) and sp.n_test_anomalies == 60
    assert abs(sp.n_train - cfg.train_fraction * normal) < 4 * np.sqrt(normal * 0.25)
    assert abs(sp.n_calib - cfg.calibration_fraction * normal) < 4 * np.sqrt(normal * 0.09)
    assert sp.y_test.sum() == 60 and len(sp.x_test) == sp.n_test  # all fit under the caps here
    labels = ds.frame["label"].to_numpy()
    assert labels[sp.calib_rows].sum() == 0 and labels[sp.baseline_rows].sum() == 0
    assert not set(sp.calib_rows) & set(sp.test_rows) and not set(sp.baseline_rows) & set(sp.test_rows)
    train_x = np.delete(ds.features_array(), np.r_[sp.calib_rows, sp.test_rows], axis=0)
    np.testing.assert_allclose(sp.mean, train_x.mean(axis=0), rtol=1e-5)  # the exact mean of every training row
    np.testing.assert_allclose(sp.std, train_x.astype(np.float64).std(axis=0), rtol=1e-4)


def test_split_and_samples_do_not_depend_on_the_batch_size(events):
    cfg = small_cfg()
    caps = _sizes(calibration_rows=100, evaluation_rows=50, baseline_rows=80)
    a = prepare(_source(events, batch_rows=64), cfg, caps)
    b = prepare(_source(events, batch_rows=5000), cfg, caps)
    assert a.sizes() == b.sizes() and len(a.x_calib) == 100 and len(a.x_baseline) == 80
    assert len(a.x_test) == 100 and a.y_test.sum() == 50  # 50 normal, 50 of the 60 anomalies
    for field in ("calib_rows", "test_rows", "baseline_rows"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    c = prepare(_source(events), small_cfg(seed=1), caps)
    assert not np.array_equal(a.calib_rows, c.calib_rows)


def test_stream_training_is_deterministic_and_learns(events):
    from training import detection_metrics, score

    cfg = small_cfg(epochs=3)
    src = _source(events)
    sp = prepare(src, cfg, _sizes())
    a = train_stream(src, sp, cfg, shuffle_rows=500, progress=False)
    b = train_stream(src, sp, cfg, shuffle_rows=500, progress=False)
    assert same_weights(a.model, b.model) and a.epochs_completed == 3 and len(a.loss_history) == 3
    assert detection_metrics(score(a.model, sp.x_test), sp.y_test)["auroc"] > 0.95


def _interrupted_then_resumed(src, sp, cfg, ckpt, monkeypatch, *, windows_before_stop=5):
    """Train until ``windows_before_stop`` windows are done (KeyboardInterrupt in the next one), check
    the checkpoint left is mid-epoch, then resume to the end."""
    import training.stream_trainer as st

    real, calls = st._train_window, []

    def stop_mid_epoch(*args, **kwargs):
        if len(calls) == windows_before_stop:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(st, "_train_window", stop_mid_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_stream(src, sp, cfg, shuffle_rows=400, checkpoint_dir=ckpt, progress=False)
    state = torch.load(ckpt / CHECKPOINT_NAME, weights_only=True, map_location="cpu")
    assert state["epoch"] == 1 and state["cursor"] is not None  # stopped mid-epoch (epoch 2)
    monkeypatch.setattr(st, "_train_window", real)
    return train_stream(src, sp, cfg, shuffle_rows=400, checkpoint_dir=ckpt, progress=False)


def test_resume_from_a_mid_epoch_checkpoint_equals_a_straight_run(events, tmp_path, monkeypatch):
    """In-process variant of the kill test: stop after a window's checkpoint, then resume."""
    cfg = small_cfg(epochs=2)
    src = _source(events)
    sp = prepare(src, cfg, _sizes())
    straight = train_stream(src, sp, cfg, shuffle_rows=400, progress=False)
    resumed = _interrupted_then_resumed(src, sp, cfg, tmp_path, monkeypatch)
    assert same_weights(resumed.model, straight.model) and resumed.loss_history == straight.loss_history
    assert "resumed in epoch 2 at window" in resumed.message

    with pytest.raises(ConfigError, match="different training run"):  # another buffer size: other windows
        train_stream(src, sp, cfg, shuffle_rows=300, checkpoint_dir=tmp_path, progress=False)


@pytest.mark.gpu
def test_stream_training_on_cuda_with_mixed_precision_resumes_mid_epoch(events, tmp_path, monkeypatch):
    from training import detection_metrics, score

    cfg = small_cfg(device="cuda", amp=True, epochs=2)
    src = _source(events)
    sp = prepare(src, cfg, _sizes())
    straight = train_stream(src, sp, cfg, shuffle_rows=400, progress=False)
    assert straight.device == "cuda" and straight.amp is True and straight.model.mean.device.type == "cpu"
    resumed = _interrupted_then_resumed(src, sp, cfg, tmp_path, monkeypatch)
    assert resumed.device == "cuda" and resumed.epochs_completed == 2 and "resumed in epoch 2" in resumed.message
    energies = score(resumed.model, sp.x_test)
    assert np.isfinite(energies).all() and detection_metrics(energies, sp.y_test)["auroc"] > 0.95
    # the same windows, generators and states on the same GPU: the same weights
    assert same_weights(resumed.model, straight.model)
