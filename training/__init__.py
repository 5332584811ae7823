"""Training energy-based anomaly models: plain functions, no orchestrator or tracker imports.

Steps, each callable on its own (an orchestrator runs them as separate tasks):

* :func:`split_dataset` -> :class:`DataSplit` (normal rows to train / calibration / test, anomalies to test);
* :func:`train_energy_model` -> :class:`TrainResult` (checkpointed, resumable, budgeted);
* :func:`calibrate` / :func:`score` / :func:`calibrate_threshold` (alert threshold inside the model);
* :func:`export_torchscript` / :func:`load_torchscript` (the self-contained serving artifact);
* :func:`detection_metrics` / :func:`isolation_forest_baseline` / :func:`evaluate`;
* :func:`fit`: all of the above in order, returning a :class:`TrainOutcome`;
* :func:`torch_threads`: run a block with ``training.threads`` torch threads (scoring included).
"""

from training.calibrate import calibrate, calibrate_threshold, score, set_threshold
from training.data import DataSplit, split_dataset
from training.device import amp_mode, resolve_device
from training.evaluate import detection_metrics, isolation_forest_baseline
from training.export import export_torchscript, load_torchscript
from training.model import EnergyMLP, build_model, fit_standardisation, model_from_state
from training.pipeline import TrainOutcome, evaluate, fit
from training.trainer import CHECKPOINT_NAME, TrainResult, torch_threads, train_energy_model

__all__ = [
    "CHECKPOINT_NAME", "DataSplit", "EnergyMLP", "TrainOutcome", "TrainResult", "amp_mode", "build_model",
    "calibrate", "calibrate_threshold", "detection_metrics", "evaluate", "export_torchscript",
    "fit", "fit_standardisation", "isolation_forest_baseline", "load_torchscript", "model_from_state",
    "resolve_device", "score", "set_threshold", "split_dataset", "torch_threads", "train_energy_model",
]
