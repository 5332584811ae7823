"""Distribution shift of model energies and features. Pure numpy; see ``drift.delta`` for Δ."""

from drift.delta import alert_rate, effective_size, energy_shift, noise_floor, robust_spread, wasserstein_1d

__all__ = ["alert_rate", "effective_size", "energy_shift", "noise_floor", "robust_spread", "wasserstein_1d"]
