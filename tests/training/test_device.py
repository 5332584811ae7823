import numpy as np
import pytest
import torch

from ebmops.core.errors import ConfigError
from tests.training.helpers import small_cfg
from training import amp_mode, detection_metrics, resolve_device, score, split_dataset, train_energy_model

CUDA = torch.cuda.is_available()
MPS = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def test_cpu_resolves_to_cpu_without_mixed_precision():
    device = resolve_device("cpu")
    assert device.type == "cpu" and not amp_mode(device, True).enabled


def test_auto_prefers_cuda_then_mps_then_cpu():
    assert resolve_device("auto").type == ("cuda" if CUDA else "mps" if MPS else "cpu")


@pytest.mark.skipif(CUDA, reason="CUDA is available here")
def test_explicit_cuda_without_a_gpu_is_a_config_error_naming_the_setting():
    with pytest.raises(ConfigError, match="training.device.*'auto' or 'cpu'"):
        resolve_device("cuda")


@pytest.mark.skipif(MPS, reason="MPS is available here")
def test_explicit_mps_without_apple_silicon_is_a_config_error():
    with pytest.raises(ConfigError, match="training.device"):
        resolve_device("mps")


def test_unknown_device_is_a_config_error():
    with pytest.raises(ConfigError, match="'tpu'"):
        resolve_device("tpu")


@pytest.mark.gpu
def test_training_on_cuda_with_mixed_precision(synthetic, tmp_path):
    split = split_dataset(synthetic, train_fraction=0.5, calibration_fraction=0.1, seed=0)
    cfg = small_cfg(device="cuda", amp=True)
    result = train_energy_model(split.x_train, cfg, checkpoint_dir=tmp_path, progress=False)
    assert result.device == "cuda" and result.amp is True and result.epochs_completed == cfg.epochs
    assert result.model.mean.device.type == "cpu" and not result.model.training
    energies = score(result.model, split.x_test)
    assert np.isfinite(energies).all() and detection_metrics(energies, split.y_test)["auroc"] > 0.99
    assert result.cost == pytest.approx(result.seconds / 3600 * cfg.price_per_device_hour["cuda"])
    # a CUDA checkpoint resumes on CUDA: a longer run continues from it
    longer = train_energy_model(split.x_train, small_cfg(device="cuda", amp=True, epochs=cfg.epochs + 2),
                                checkpoint_dir=tmp_path, progress=False)
    assert longer.resumed_from_epoch == cfg.epochs and longer.epochs_completed == cfg.epochs + 2
