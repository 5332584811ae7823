import numpy as np
import torch

from training import EnergyMLP, build_model, fit_standardisation, model_from_state


def test_energy_is_one_scalar_per_event_on_standardised_raw_features():
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 3.0, size=(64, 4)).astype(np.float32)
    mean, std = fit_standardisation(x, 1e-3)
    model = build_model(4, [8], mean, std, seed=0)
    xt = torch.from_numpy(x)
    e = model(xt)
    assert e.shape == (64,)
    assert torch.allclose(e, model.net((xt - torch.from_numpy(mean)) / torch.from_numpy(std)).squeeze(-1))


def test_standardisation_floors_features_that_are_constant():
    x = np.c_[np.linspace(0, 1, 50), np.full(50, 0.3)].astype(np.float32)
    mean, std = fit_standardisation(x, 1e-3)
    assert std[1] == np.float32(1e-3) and abs(std[0] - x[:, 0].std()) < 1e-6 and abs(mean[1] - 0.3) < 1e-7


def test_uncalibrated_model_never_alerts():
    model = EnergyMLP(3, [4])
    assert torch.isinf(model.threshold) and not model.is_anomalous(torch.randn(20, 3) * 100).any()


def test_initial_weights_depend_on_the_seed_only_and_leave_global_rng_alone():
    before = torch.random.get_rng_state()
    a = build_model(5, [16, 16], np.zeros(5), np.ones(5), seed=7)
    b = build_model(5, [16, 16], np.zeros(5), np.ones(5), seed=7)
    c = build_model(5, [16, 16], np.zeros(5), np.ones(5), seed=8)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(a.net[0].weight, b.net[0].weight) and not torch.equal(a.net[0].weight, c.net[0].weight)


def test_model_rebuilds_from_spec_and_state():
    a = build_model(5, [16, 8], np.arange(5.0), np.full(5, 2.0), seed=1)
    a.threshold.fill_(1.5)
    b = model_from_state(a.spec(), a.state_dict())
    x = torch.randn(10, 5)
    assert torch.equal(a(x), b(x)) and float(b.threshold) == 1.5
