"""The whole training recipe in one call, built from separately callable steps.

``fit`` runs: split -> train -> calibrate the threshold on the calibration split -> evaluate
the EBM and IsolationForest on the same test split. Each step is a plain function in its own
module (``split_dataset``, ``train_energy_model``, ``calibrate``, ``evaluate``), so an
orchestrator can run them as separate, retryable tasks; ``fit`` is the same wiring for
scripts, tests and the benchmark.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ebmops.core.data import Dataset
from training.calibrate import calibrate, score
from training.data import DataSplit, split_dataset
from training.evaluate import detection_metrics, isolation_forest_baseline
from training.model import EnergyMLP, categories_by_index
from training.trainer import TrainResult, torch_threads, train_energy_model


@dataclass
class TrainOutcome:
    model: EnergyMLP  # on CPU, eval mode, threshold set
    threshold: float
    metrics: dict[str, float]
    calibration_energies: np.ndarray
    split: DataSplit
    train: TrainResult


def evaluate(model: EnergyMLP, split: DataSplit, train: TrainResult, cfg, *, n_train: int | None = None) -> dict[str, float]:
    """Training figures, alert rates and (with labels) EBM vs IsolationForest metrics on the test split.

    ``n_train``: the training rows when ``split.x_train`` holds only a sample of them (a streamed
    source: the baseline is fitted on that sample, throughput counts every row)."""
    n_train = len(split.x_train) if n_train is None else int(n_train)
    metrics: dict[str, float] = {
        "train_seconds": train.seconds, "epochs_completed": train.epochs_completed, "cost": train.cost,
        "device_hours": train.device_hours,
        # events/s over the whole run: rows seen in all completed epochs per second of training.
        "events_per_s": n_train * train.epochs_completed / max(train.seconds, 1e-9),
        "threshold": float(model.threshold), "n_train": n_train, "n_test": len(split.x_test)}
    t0 = time.perf_counter()
    energies = score(model, split.x_test)
    metrics["score_events_per_s"] = len(energies) / max(time.perf_counter() - t0, 1e-9)
    metrics["test_alert_rate"] = float((energies > float(model.threshold)).mean())
    if split.y_test is None:
        return metrics
    ebm = detection_metrics(energies, split.y_test)
    base = isolation_forest_baseline(split.x_train, split.x_test, split.y_test, seed=cfg.seed, trees=cfg.baseline_trees)
    normal = split.y_test == 0
    metrics.update(ebm_auroc=ebm["auroc"], ebm_ap=ebm["ap"], iforest_auroc=base["auroc"], iforest_ap=base["ap"],
                   iforest_seconds=base["seconds"],
                   # At the calibrated threshold: share of test anomalies caught, share of test normals alerted.
                   recall_at_threshold=float((energies[~normal] > float(model.threshold)).mean()),
                   false_alarm_rate=float((energies[normal] > float(model.threshold)).mean()))
    return metrics


def fit(ds: Dataset, cfg, *, checkpoint_dir: Path | None = None, resume: bool = True,
        progress: bool = True) -> TrainOutcome:
    """Split ``ds``, train, calibrate and evaluate with ``cfg: TrainingSettings``."""
    split = split_dataset(ds, train_fraction=cfg.train_fraction, calibration_fraction=cfg.calibration_fraction,
                          seed=cfg.seed, max_categories=cfg.max_categories)
    result = train_energy_model(split.x_train, cfg, checkpoint_dir=checkpoint_dir, resume=resume, progress=progress,
                                categories=categories_by_index(split.feature_names, split.vocabulary))
    with torch_threads(cfg.threads):  # scoring suffers the same thread contention as training
        threshold, calib_energies = calibrate(result.model, split.x_calib, cfg.threshold_quantile)
        metrics = evaluate(result.model, split, result, cfg)
    return TrainOutcome(model=result.model, threshold=threshold, metrics=metrics,
                        calibration_energies=calib_energies, split=split, train=result)
