"""A real SQLite-backed MLflow store per test module, holding two logged training runs.

Logging a run is the slow part (model files, signature, serving check), so the runs are logged
once per module; each test registers them under its own model name and so starts from an empty
registry.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from registry import ModelRegistry

FEATURES = ["f0", "f1", "f2", "f3"]


class TinyEnergy(torch.nn.Module):
    """A stand-in for the trained MLP: energies float32[B] and a threshold buffer."""

    def __init__(self, seed: int, threshold: float):
        super().__init__()
        torch.manual_seed(seed)
        self.linear = torch.nn.Linear(len(FEATURES), 3)
        self.register_buffer("threshold", torch.tensor(threshold, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.linear(x) ** 2).sum(dim=1)


@dataclass
class LoggedRun:
    run_id: str
    scripted_path: Path
    threshold: float
    example: np.ndarray


@dataclass
class Store:
    tracking_uri: str
    artifact_root: Path
    experiment: str
    runs: list[LoggedRun]
    workdir: Path

    def registry(self, model_name: str | None = None) -> ModelRegistry:
        return ModelRegistry(self.tracking_uri, model_name or f"ebm-{uuid.uuid4().hex[:8]}", self.experiment,
                             self.artifact_root)


def save_scripted(path: Path, seed: int, threshold: float) -> Path:
    torch.jit.save(torch.jit.script(TinyEnergy(seed, threshold)), str(path))
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    root = tmp_path_factory.mktemp("mlflow")
    # MLflow falls back to ./mlflow.db wherever a call escapes the registry's own URI; running in
    # the store's directory lets a test see such a leak instead of writing into the checkout.
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        yield _logged_store(root)


def _logged_store(root: Path) -> Store:
    uri, artifacts = f"sqlite:///{root / 'db' / 'mlflow.db'}", root / "artifacts"
    logger = ModelRegistry(uri, "unused", "ebmops-test", artifacts)
    summary = root / "summary.md"
    summary.write_text("# run summary\n")
    runs = []
    for i, threshold in enumerate((0.75, 0.5)):
        scripted = save_scripted(root / f"model{i}.pt", seed=i, threshold=threshold)
        example = np.random.default_rng(i).random((5, len(FEATURES)), dtype=np.float32)
        run_id = logger.log_training_run(
            params={"epochs": 2, "hidden": [8, 8]}, metrics={"auroc": 0.9 + i / 100, "seconds": 1.5},
            tags={"dataset": "synthetic"}, scripted_path=scripted, input_example=example, threshold=threshold,
            feature_names=FEATURES, device="cpu", data_fingerprint=f"sha256:{i:064d}",
            extra_artifacts={"summary.md": summary}, run_name=f"run-{i}")
        runs.append(LoggedRun(run_id, scripted, threshold, example))
    return Store(uri, artifacts, "ebmops-test", runs, root)
