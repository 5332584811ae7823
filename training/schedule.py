"""How long to train: epochs, raised on small training sets to a minimum of training events.

``training.epochs`` counts passes over the training rows, which suits kdd99 (24k training
rows) but starves a small set: wbc trains on 178 rows, one minibatch, so 8 epochs are 8
optimizer steps and the energy is still close to its random start. What the denoising
objective needs is noisy samples and steps: every pass draws fresh noise, so a small set yields
new training pairs on every pass. ``training.min_train_events`` (default 1,000,000, what about
42 epochs of kdd99 see) therefore raises the epochs until ``rows x epochs`` reaches it. The
compute of a run is proportional to ``rows x epochs``, so every small set gets the same budget,
a few seconds here; a set large enough to reach it in ``epochs`` passes (covertype, 143k
training rows) trains exactly ``epochs``. The quality benchmark (bench/quality_bench.py,
docs/training.md) measures what this bought.

``min_train_events = 0`` trains exactly ``epochs``; an explicit ``--epochs`` (CLI, flow
parameter) sets it so (``ebmops.services.train.settings_for_run``).
"""

from __future__ import annotations

import math


def planned_epochs(n_rows: int, *, epochs: int, min_train_events: int) -> int:
    """Epochs to train ``n_rows`` rows: ``epochs``, or more where ``n_rows x epochs`` falls short of ``min_train_events``."""
    return max(epochs, math.ceil(min_train_events / max(n_rows, 1)))


def with_min_train_events(cfg, n_rows: int):
    """``cfg`` (TrainingSettings) with ``epochs`` raised as :func:`planned_epochs` says (``cfg`` itself when unchanged)."""
    epochs = planned_epochs(n_rows, epochs=cfg.epochs, min_train_events=getattr(cfg, "min_train_events", 0))
    return cfg if epochs == cfg.epochs else cfg.model_copy(update={"epochs": epochs})
