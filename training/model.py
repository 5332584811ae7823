"""The energy network: raw features in, one scalar energy per event out.

``EnergyMLP`` maps an event ``x`` (``[B, F]`` raw features) to an energy ``E(x)`` (``[B]``);
low energy means "looks like the normal traffic it was trained on", high energy means
anomalous. Everything needed to score travels inside the module as buffers, so the
TorchScript artifact is self-contained and a serving process needs no side files:

* ``mean`` / ``std``: the per-feature standardisation fitted on the training rows. Training
  and noise happen in standardised units (so one noise scale suits every feature); callers
  always pass raw features.
* ``threshold``: the alert threshold, set after calibration (``+inf`` until then, so an
  uncalibrated model never alerts).

SiLU activations keep ``E`` smooth, which the score-matching objective needs: it trains the
gradient ``-dE/dx``, and a ReLU network's gradient is piecewise constant.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class EnergyMLP(nn.Module):
    """MLP energy ``E(x)`` with standardisation and the alert threshold inside."""

    def __init__(self, n_features: int, hidden: list[int], mean: np.ndarray | torch.Tensor | None = None,
                 std: np.ndarray | torch.Tensor | None = None):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.SiLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        self.n_features = n_features
        self.hidden = [int(h) for h in hidden]
        mean_t = torch.zeros(n_features) if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        std_t = torch.ones(n_features) if std is None else torch.as_tensor(std, dtype=torch.float32)
        self.register_buffer("mean", mean_t.reshape(n_features).clone())
        self.register_buffer("std", std_t.reshape(n_features).clone())
        self.register_buffer("threshold", torch.tensor(float("inf")))

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def energy_standardised(self, z: torch.Tensor) -> torch.Tensor:
        """Energy of already standardised inputs; the training objectives work here."""
        return self.net(z).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.energy_standardised(self.standardise(x))

    @torch.jit.export
    def is_anomalous(self, x: torch.Tensor) -> torch.Tensor:
        """True where the energy exceeds the calibrated threshold."""
        return self.forward(x) > self.threshold

    def spec(self) -> dict:
        """Constructor arguments (besides the buffers) needed to rebuild this module."""
        return {"n_features": self.n_features, "hidden": list(self.hidden)}


def fit_standardisation(x: np.ndarray, std_floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of ``x`` (float64 sums for stability), std floored at ``std_floor``.

    The floor matters for features that are constant on normal training rows: an anomaly
    that moves them then lands many standard units away, which is what should happen, but
    not infinitely many.
    """
    x64 = np.asarray(x, dtype=np.float64)
    mean = x64.mean(axis=0)
    std = np.maximum(x64.std(axis=0), std_floor)
    return mean.astype(np.float32), std.astype(np.float32)


def build_model(n_features: int, hidden: list[int], mean: np.ndarray, std: np.ndarray, *, seed: int) -> EnergyMLP:
    """A freshly initialised model whose weights depend only on ``seed`` (not on global RNG state)."""
    # fork_rng keeps the caller's global RNG untouched while nn.Linear draws its init from it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return EnergyMLP(n_features, hidden, mean, std)


def model_from_state(spec: dict, state_dict: dict) -> EnergyMLP:
    """Rebuild a model saved as ``(model.spec(), model.state_dict())``."""
    model = EnergyMLP(int(spec["n_features"]), list(spec["hidden"]))
    model.load_state_dict(state_dict)
    return model.eval()
