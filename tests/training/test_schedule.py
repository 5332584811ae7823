"""Training length: epochs raised to a minimum of training events on small sets, exact when asked."""

import numpy as np

from ebmops.core.settings import load_settings
from ebmops.services.train import settings_for_run
from training import train_energy_model
from training.schedule import planned_epochs, with_min_train_events
from tests.training.helpers import small_cfg


def test_small_sets_get_epochs_until_min_train_events_large_sets_keep_theirs():
    assert planned_epochs(178, epochs=8, min_train_events=1_000_000) == 5618  # wbc's training rows
    assert planned_epochs(24056, epochs=8, min_train_events=1_000_000) == 42  # kdd99's
    assert planned_epochs(142650, epochs=8, min_train_events=1_000_000) == 8  # covertype's: 8 passes suffice
    assert planned_epochs(178, epochs=8, min_train_events=0) == 8
    assert planned_epochs(178, epochs=8, min_train_events=100) == 8


def test_with_min_train_events_returns_the_same_settings_when_nothing_changes():
    cfg = small_cfg(epochs=3, min_train_events=0)
    assert with_min_train_events(cfg, 100) is cfg
    raised = with_min_train_events(small_cfg(epochs=3, batch_size=50, min_train_events=1000), 100)
    assert (raised.epochs, raised.batch_size, cfg.epochs) == (10, 50, 3)


def test_trainer_runs_the_raised_epochs():
    x = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    result = train_energy_model(x, small_cfg(epochs=2, batch_size=32, min_train_events=360), progress=False)
    assert (result.epochs_completed, result.epochs_planned, len(result.loss_history)) == (6, 6, 6)


def test_an_explicit_epochs_override_trains_exactly_that_many(tmp_path):
    base = load_settings(home=tmp_path)
    assert base.training.min_train_events == 1_000_000
    assert settings_for_run(base, epochs=3).training.min_train_events == 0
    assert settings_for_run(base, seed=4).training.min_train_events == 1_000_000
