import numpy as np
import pytest
import torch

from ebmops.core.errors import ConfigError, TrainingStopped
from tests.training.helpers import same_weights, small_cfg
from training import CHECKPOINT_NAME, detection_metrics, score, split_dataset, train_energy_model


@pytest.fixture
def split(synthetic):
    return split_dataset(synthetic, train_fraction=0.5, calibration_fraction=0.1, seed=0)


def test_planted_anomaly_cluster_gets_higher_energy_than_normal_data(split):
    result = train_energy_model(split.x_train, small_cfg(), progress=False)
    energies = score(result.model, split.x_test)
    assert detection_metrics(energies, split.y_test)["auroc"] > 0.99
    anomalous = energies[split.y_test == 1]
    assert np.median(anomalous) > score(result.model, split.x_calib).max()
    assert result.model.training is False and result.device == "cpu" and result.amp is False
    assert result.epochs_completed == result.epochs_planned == 5 and result.stopped_reason is None
    assert len(result.loss_history) == 5 and result.loss_history[-1] < result.loss_history[0]


def test_nce_objective_also_separates_the_planted_cluster(split):
    result = train_energy_model(split.x_train, small_cfg(objective="nce"), progress=False)
    assert detection_metrics(score(result.model, split.x_test), split.y_test)["auroc"] > 0.99


def test_same_seed_gives_identical_weights_and_another_seed_does_not(split):
    a = train_energy_model(split.x_train, small_cfg(seed=1), progress=False)
    b = train_energy_model(split.x_train, small_cfg(seed=1), progress=False)
    c = train_energy_model(split.x_train, small_cfg(seed=2), progress=False)
    assert same_weights(a.model, b.model) and a.loss_history == b.loss_history
    assert not torch.equal(a.model.net[0].weight, c.model.net[0].weight)


def test_resuming_a_checkpoint_gives_the_weights_of_an_uninterrupted_run(split, tmp_path):
    straight = train_energy_model(split.x_train, small_cfg(epochs=5), progress=False)
    first = train_energy_model(split.x_train, small_cfg(epochs=2), checkpoint_dir=tmp_path, progress=False)
    assert first.epochs_completed == 2 and (tmp_path / CHECKPOINT_NAME).is_file()
    (tmp_path / f".{CHECKPOINT_NAME}.99999.tmp").write_bytes(b"torn")  # as a writer killed mid-write leaves
    resumed = train_energy_model(split.x_train, small_cfg(epochs=5), checkpoint_dir=tmp_path, progress=False)
    assert resumed.resumed_from_epoch == 2 and resumed.epochs_completed == 5
    assert same_weights(resumed.model, straight.model) and resumed.loss_history == straight.loss_history
    assert "resumed from epoch 2" in resumed.message
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]  # stale temporary files removed


def test_resume_false_ignores_an_existing_checkpoint(split, tmp_path):
    train_energy_model(split.x_train, small_cfg(epochs=2, seed=5), checkpoint_dir=tmp_path, progress=False)
    fresh = train_energy_model(split.x_train, small_cfg(epochs=3), checkpoint_dir=tmp_path, resume=False, progress=False)
    straight = train_energy_model(split.x_train, small_cfg(epochs=3), progress=False)
    assert fresh.resumed_from_epoch == 0 and same_weights(fresh.model, straight.model)


def test_a_checkpoint_of_other_settings_is_refused(split, tmp_path):
    train_energy_model(split.x_train, small_cfg(epochs=1), checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="different training run"):
        train_energy_model(split.x_train, small_cfg(epochs=2, lr=1e-2), checkpoint_dir=tmp_path, progress=False)


def test_time_budget_stops_cleanly_after_the_epoch_and_training_resumes_later(split, tmp_path):
    stopped = train_energy_model(split.x_train, small_cfg(epochs=4, time_budget_s=1e-9), checkpoint_dir=tmp_path,
                                 progress=False)
    assert (stopped.stopped_reason, stopped.epochs_completed, stopped.epochs_planned) == ("time_budget", 1, 4)
    assert "training.time_budget_s" in stopped.message and "epoch 1 of 4" in stopped.message
    assert np.isfinite(score(stopped.model, split.x_calib)).all()  # still a usable model
    with pytest.raises(TrainingStopped, match="time budget|time_budget"):
        stopped.raise_if_stopped()
    done = train_energy_model(split.x_train, small_cfg(epochs=4), checkpoint_dir=tmp_path, progress=False)
    straight = train_energy_model(split.x_train, small_cfg(epochs=4), progress=False)
    assert done.stopped_reason is None and same_weights(done.model, straight.model)


def test_cost_ceiling_stops_before_an_epoch_that_would_pass_it(split):
    # 3600 per device-hour = 1 per second: any epoch costs far more than the ceiling.
    cfg = small_cfg(epochs=4, cost_ceiling=1e-9, price_per_device_hour={"cpu": 3600.0})
    result = train_energy_model(split.x_train, cfg, progress=False)
    assert (result.stopped_reason, result.epochs_completed) == ("cost_ceiling", 1)
    assert result.cost == pytest.approx(result.seconds) and result.device_hours == pytest.approx(result.seconds / 3600)
    assert "training.cost_ceiling" in result.message


def test_a_device_without_a_price_is_a_config_error(split):
    with pytest.raises(ConfigError, match="training.price_per_device_hour"):
        train_energy_model(split.x_train, small_cfg(price_per_device_hour={"cuda": 2.0}), progress=False)


def test_thread_setting_applies_during_training_only(split):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train_energy_model(split.x_train, small_cfg(epochs=1, threads=1), progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_progress_bar_per_epoch_goes_to_stderr_and_can_be_disabled(split, capsys):
    train_energy_model(split.x_train, small_cfg(epochs=2), progress=True)
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err
    train_energy_model(split.x_train, small_cfg(epochs=2), progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("bad", [np.zeros((0, 3)), np.zeros(5), np.array([[0.0, np.nan]])])
def test_unusable_training_arrays_are_refused(bad):
    with pytest.raises(ConfigError, match="x_train"):
        train_energy_model(bad, small_cfg(), progress=False)
