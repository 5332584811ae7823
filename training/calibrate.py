"""Scoring events and calibrating the alert threshold.

An energy has no natural unit: only its order matters. The alert threshold is therefore set
from data, as the ``quantile`` of energies on held-out *normal* events (the calibration
split, never trained on). With quantile ``q`` about ``1 - q`` of normal traffic alerts: the
false-alarm rate is chosen directly, which is what an operator can reason about, while the
detection rate follows from how well the model separates anomalies.

The threshold is written into the model's ``threshold`` buffer so it travels with the
exported TorchScript file and the serving side never needs a second artifact.
"""

from __future__ import annotations

import numpy as np
import torch

from ebmops.core.errors import ConfigError


def score(model: torch.nn.Module, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """Energies (float64, one per row of raw features ``x``), computed in batches without gradients."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ConfigError(f"score expects a 2-D array [events, features]; got shape {x.shape}")
    device = next(iter(model.buffers())).device
    was_training = model.training
    model.eval()
    out = np.empty(len(x), dtype=np.float64)
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            out[i:i + batch_size] = model(torch.from_numpy(x[i:i + batch_size]).to(device)).double().cpu().numpy()
    model.train(was_training)
    return out


def calibrate_threshold(energies: np.ndarray, quantile: float) -> float:
    """The ``quantile`` of calibration ``energies``: the alert threshold."""
    e = np.asarray(energies, dtype=np.float64)
    if not 0 < quantile < 1:
        raise ConfigError(f"training.threshold_quantile must lie in (0, 1); got {quantile}")
    if e.size == 0 or not np.isfinite(e).all():
        raise ConfigError("calibration energies are empty or not finite; the calibration split needs normal events "
                          "and the model must produce finite energies")
    return float(np.quantile(e, quantile))


def expected_alert_rate(energies: np.ndarray, quantile: float) -> float:
    """The share of normal events a threshold calibrated at ``quantile`` on ``energies`` flags
    (``energy > threshold``): ``1 - quantile`` for continuous energies, less where events tie at the
    threshold, as they do on discrete traffic (many identical connections score one energy)."""
    e = np.asarray(energies, dtype=np.float64)
    return float(np.mean(e > calibrate_threshold(e, quantile)))


def set_threshold(model: torch.nn.Module, threshold: float) -> None:
    """Store ``threshold`` in the model's buffer (exported with it)."""
    model.threshold.fill_(float(threshold))


def calibrate(model: torch.nn.Module, x_calib: np.ndarray, quantile: float) -> tuple[float, np.ndarray]:
    """Score ``x_calib``, set the model's threshold to their ``quantile``; return it and the energies."""
    energies = score(model, x_calib)
    threshold = calibrate_threshold(energies, quantile)
    set_threshold(model, threshold)
    return threshold, energies
