"""Small settings and checks shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ebmops.core.settings import TrainingSettings


def small_cfg(**overrides) -> TrainingSettings:
    """A tiny, fast configuration for synthetic data (a few hundred ms per training)."""
    # min_train_events=0: these tests count epochs, so none may be added for the small synthetic sets.
    base = dict(hidden=[32, 32], epochs=5, batch_size=128, lr=3e-3, device="cpu", seed=0, min_train_events=0)
    return TrainingSettings(**{**base, **overrides})


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def write_parts(root: Path, frame: pd.DataFrame, parts: int = 3) -> Path:
    """``frame`` as ``parts`` Parquet files under part=<i>/ folders, row groups smaller than a batch."""
    for i, chunk in enumerate(np.array_split(np.arange(len(frame)), parts)):
        (root / f"part={i}").mkdir(parents=True, exist_ok=True)
        frame.iloc[chunk].to_parquet(root / f"part={i}" / "events.parquet", row_group_size=211, index=False)
    return root
