import numpy as np
import pytest
import torch

from ebmops.core.errors import ConfigError
from tests.training.helpers import small_cfg
from training import calibrate, calibrate_threshold, export_torchscript, load_torchscript, score, split_dataset, \
    train_energy_model


@pytest.mark.parametrize("q", [0.9, 0.99, 0.995])
def test_share_of_energies_above_the_threshold_is_one_minus_the_quantile(q):
    energies = np.random.default_rng(0).standard_cauchy(20000)  # heavy tails: the quantile must not care
    share = float((energies > calibrate_threshold(energies, q)).mean())
    assert abs(share - (1 - q)) <= 1 / len(energies)


def test_bad_quantiles_and_energies_are_refused():
    with pytest.raises(ConfigError, match="threshold_quantile"):
        calibrate_threshold(np.arange(10.0), 1.0)
    with pytest.raises(ConfigError, match="not finite"):
        calibrate_threshold(np.array([0.0, np.nan]), 0.5)


def test_threshold_is_stored_in_the_model_and_in_the_torchscript_file(synthetic, tmp_path):
    split = split_dataset(synthetic, train_fraction=0.5, calibration_fraction=0.3, seed=0)
    model = train_energy_model(split.x_train, small_cfg(epochs=2), progress=False).model
    threshold, energies = calibrate(model, split.x_calib, 0.95)
    assert float(model.threshold) == pytest.approx(threshold) and len(energies) == len(split.x_calib)
    alerts = model.is_anomalous(torch.from_numpy(split.x_calib)).float().mean().item()
    assert abs(alerts - 0.05) <= 1 / len(split.x_calib) + 1e-6
    loaded = load_torchscript(export_torchscript(model, tmp_path / "model.pt"))
    assert float(loaded.threshold) == pytest.approx(threshold)
    assert torch.equal(loaded.is_anomalous(torch.from_numpy(split.x_calib)),
                       model.is_anomalous(torch.from_numpy(split.x_calib)))


def test_score_restores_the_training_flag_and_batches_consistently(synthetic):
    split = split_dataset(synthetic, train_fraction=0.5, calibration_fraction=0.1, seed=0)
    model = train_energy_model(split.x_train, small_cfg(epochs=1), progress=False).model.train()
    whole, batched = score(model, split.x_test), score(model, split.x_test, batch_size=7)
    assert model.training and np.allclose(whole, batched, rtol=0, atol=1e-5)


def test_expected_alert_rate_counts_the_ties_at_the_threshold():
    from training.calibrate import expected_alert_rate

    rng = np.random.default_rng(3)
    continuous = rng.normal(size=20_000)
    assert abs(expected_alert_rate(continuous, 0.99) - 0.01) < 1e-3
    # discrete traffic: 60 % of events score one energy, the rest spread above; at q = 0.5 the threshold
    # sits on the tied value and only the events above it alert: 40 %, not 50 %
    discrete = np.concatenate([np.full(6_000, 2.0), rng.uniform(3.0, 9.0, 4_000)])
    assert expected_alert_rate(discrete, 0.5) == pytest.approx(0.4)
    assert expected_alert_rate(discrete, 0.9) == pytest.approx(0.1, abs=1e-3)
