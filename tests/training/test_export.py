import numpy as np
import torch

from tests.training.helpers import small_cfg
from training import EnergyMLP, build_model, export_torchscript, load_torchscript, score, split_dataset, \
    train_energy_model


def test_torchscript_energies_match_eager(synthetic, tmp_path):
    split = split_dataset(synthetic, train_fraction=0.5, calibration_fraction=0.1, seed=0)
    model = train_energy_model(split.x_train, small_cfg(epochs=2), progress=False).model
    path = export_torchscript(model, tmp_path / "m" / "model.pt")
    loaded = load_torchscript(path)
    assert isinstance(loaded, torch.jit.ScriptModule) and isinstance(model, EnergyMLP)  # the original stays eager
    x = np.vstack([split.x_test, np.random.default_rng(0).uniform(-1, 2, size=(500, 6)).astype(np.float32)])
    assert np.abs(score(loaded, x) - score(model, x)).max() <= 1e-5
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]  # written atomically, no leftovers


def test_export_overwrites_an_existing_file(tmp_path):
    path = tmp_path / "model.pt"
    a = build_model(3, [4], np.zeros(3), np.ones(3), seed=0)
    b = build_model(3, [4], np.zeros(3), np.ones(3), seed=1)
    export_torchscript(a, path)
    export_torchscript(b, path)
    x = torch.randn(5, 3)
    assert torch.allclose(load_torchscript(path)(x), b(x))
