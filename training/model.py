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

A source with categorical columns trains a :class:`CategoricalEnergyMLP`: those input columns
carry integer codes, which ``standardise`` expands to one-hot vectors (one slot per category and
one for "unknown"), while the numeric columns are standardised as above. The vocabularies travel
inside the module too, with the exported ``encode(column, values)`` that maps raw values
(canonical strings, :mod:`ebmops.core.data.categorical`) to codes, so the TorchScript file alone
scores raw events. Numeric-only models are plain :class:`EnergyMLP` s, untouched by any of this.

SiLU activations keep ``E`` smooth, which the score-matching objective needs: it trains the
gradient ``-dE/dx``, and a ReLU network's gradient is piecewise constant.
"""

from __future__ import annotations

from typing import List, Sequence

import numpy as np
import torch
from torch import nn


class EnergyMLP(nn.Module):
    """MLP energy ``E(x)`` with standardisation and the alert threshold inside."""

    def __init__(self, n_features: int, hidden: list[int], mean: np.ndarray | torch.Tensor | None = None,
                 std: np.ndarray | torch.Tensor | None = None, *, input_width: int | None = None):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features if input_width is None else int(input_width)
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


class CategoricalEnergyMLP(EnergyMLP):
    """An :class:`EnergyMLP` whose input columns ``categories`` (feature index -> its categories,
    in code order) carry codes: one-hot expanded inside the model, unknown = ``len(categories)``."""

    def __init__(self, n_features: int, hidden: list[int], categories: dict[int, Sequence[str]],
                 mean: np.ndarray | torch.Tensor | None = None, std: np.ndarray | torch.Tensor | None = None):
        cols = sorted(int(j) for j in categories)
        if not cols or cols[0] < 0 or cols[-1] >= n_features:
            raise ValueError(f"categorical columns {cols} must be among the {n_features} input columns")
        numeric = [j for j in range(n_features) if j not in set(cols)]
        sizes = [len(categories[j]) + 1 for j in cols]  # + the unknown slot
        super().__init__(n_features, hidden, mean, std, input_width=len(numeric) + sum(sizes))
        self.categories = {j: [str(c) for c in categories[j]] for j in cols}  # Python side: spec()
        self.vocab = {j: {str(c): i for i, c in enumerate(categories[j])} for j in cols}
        self.cat_columns = cols
        self.cat_sizes = sizes
        self.register_buffer("numeric_index", torch.tensor(numeric, dtype=torch.long))

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        """Numeric columns standardised, categorical code columns one-hot (unknown, NaN or out of
        range codes: the unknown slot)."""
        idx = self.numeric_index
        parts = [(x.index_select(1, idx) - self.mean.index_select(0, idx)) / self.std.index_select(0, idx)]
        for k in range(len(self.cat_columns)):
            size = self.cat_sizes[k]
            code = x[:, self.cat_columns[k]]
            valid = (code >= 0) & (code < size - 1)  # False for NaN too
            code = torch.where(valid, code, torch.full_like(code, size - 1)).round().long()
            parts.append(nn.functional.one_hot(code, size).to(x.dtype))
        return torch.cat(parts, 1)

    @torch.jit.export
    def categorical_columns(self) -> List[int]:
        """Input columns that take codes (see ``encode``), in order."""
        return self.cat_columns

    @torch.jit.export
    def vocabulary(self, column: int) -> List[str]:
        """The categories of input ``column``, in code order (code ``len`` of it: unknown)."""
        pairs = self.vocab[column]
        out = ["" for _ in range(len(pairs))]
        for value, code in pairs.items():
            out[code] = value
        return out

    @torch.jit.export
    def encode(self, column: int, values: List[str]) -> torch.Tensor:
        """float32 codes of canonical raw ``values`` of input ``column``; unseen values get the
        unknown code (the number of categories)."""
        pairs = self.vocab[column]
        unknown = len(pairs)
        codes: List[float] = []
        for v in values:
            codes.append(float(pairs.get(v, unknown)))
        return torch.tensor(codes, dtype=torch.float32)

    def spec(self) -> dict:
        return {"n_features": self.n_features, "hidden": list(self.hidden),
                "categories": {str(j): list(c) for j, c in self.categories.items()}}


def categories_by_index(features: Sequence[str], vocabulary: dict) -> dict[int, tuple[str, ...]]:
    """``vocabulary`` (column name -> categories) keyed by input column index instead."""
    return {list(features).index(c): tuple(v) for c, v in vocabulary.items()}


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


def build_model(n_features: int, hidden: list[int], mean: np.ndarray, std: np.ndarray, *, seed: int,
                categories: dict[int, Sequence[str]] | None = None) -> EnergyMLP:
    """A freshly initialised model whose weights depend only on ``seed`` (not on global RNG state);
    with ``categories`` (input column -> its categories) a :class:`CategoricalEnergyMLP`."""
    # fork_rng keeps the caller's global RNG untouched while nn.Linear draws its init from it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if categories:
            return CategoricalEnergyMLP(n_features, hidden, categories, mean, std)
        return EnergyMLP(n_features, hidden, mean, std)


def model_from_state(spec: dict, state_dict: dict) -> EnergyMLP:
    """Rebuild a model saved as ``(model.spec(), model.state_dict())``."""
    if spec.get("categories"):
        cats = {int(j): list(c) for j, c in spec["categories"].items()}
        model = CategoricalEnergyMLP(int(spec["n_features"]), list(spec["hidden"]), cats)
        model.load_state_dict(state_dict)
        return model.eval()
    model = EnergyMLP(int(spec["n_features"]), list(spec["hidden"]))
    model.load_state_dict(state_dict)
    return model.eval()
