"""The objectives are checked where the answer is known in closed form: Gaussian data.

For data z ~ N(0, I) perturbed with noise sigma, the perturbed density is N(0, (1+sigma^2) I),
so the DSM-optimal energy is |z|^2 / (2 (1+sigma^2)). For NCE against N(0, s^2 I) with the
noise normaliser left out of log q, the optimum is E = |z|^2/2 - d log s. Each loss must be
lower at its optimum than at energies with the wrong sign, scale or offset.
"""

import math
from types import SimpleNamespace

import pytest
import torch

from ebmops.core.errors import ConfigError
from training.objective import dsm_loss, nce_loss, objective_for, sample_sigmas

D, N = 4, 20000


def _loss(fn, energy, **kw):
    z = torch.randn(N, D, generator=torch.Generator().manual_seed(1))
    return float(fn(energy, z, torch.Generator().manual_seed(2), **kw).detach())


def test_dsm_is_minimised_by_the_smoothed_log_density():
    sigma = 0.5
    best = lambda c: lambda z: c * (z ** 2).sum(1) / (2 * (1 + sigma ** 2))
    losses = {c: _loss(dsm_loss, best(c), sigma_min=sigma, sigma_max=sigma) for c in (1.0, -1.0, 3.0, 0.3)}
    assert losses[1.0] < min(losses[-1.0], losses[3.0], losses[0.3])
    # at the optimum the residual (sigma z - eps) / (1 + sigma^2) is what no score can predict: d / (1 + sigma^2)
    assert losses[1.0] == pytest.approx(D / (1 + sigma ** 2), rel=0.05)


def test_nce_is_minimised_by_the_log_density_with_its_constant():
    s = 2.0
    energy = lambda scale, offset: lambda z: scale * (z ** 2).sum(1) / 2 - D * math.log(s) + offset
    best = _loss(nce_loss, energy(1.0, 0.0), noise_sigma=s)
    for scale, offset in [(-1.0, 0.0), (2.0, 0.0), (1.0, 1.0), (1.0, -1.0)]:
        assert best < _loss(nce_loss, energy(scale, offset), noise_sigma=s)


def test_noise_scales_are_log_uniform_within_bounds():
    sig = sample_sigmas(10000, 0.1, 10.0, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert sig.shape == (10000, 1) and sig.min() >= 0.1 and sig.max() <= 10.0
    assert float(torch.log10(sig).median()) == pytest.approx(0.0, abs=0.05)  # log-uniform: median at the geometric mean


def test_unknown_objective_is_a_config_error():
    with pytest.raises(ConfigError, match="training.objective"):
        objective_for(SimpleNamespace(objective="mle"))
