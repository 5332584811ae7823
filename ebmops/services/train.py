"""Steps of the ``train`` flow: load, validate, split, fit, finalize, evaluate, register.

Checkpoints live under ``<home>/checkpoints/<run_key>``, where the run key hashes the data
fingerprint and the training settings: a retried or re-run training with the same inputs
resumes where the last one stopped; a different config starts afresh. The checkpoint is
removed once the model is registered.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ebmops.core.aliases import CHALLENGER
from ebmops.core.data import Dataset, load_dataset
from ebmops.core.errors import ValidationFailed
from ebmops.core.settings import Settings

SAMPLE_ROWS = 5000  # training rows kept with the model as the data-drift reference


@dataclass
class Candidate:
    """A trained, calibrated, exported model waiting to be evaluated and registered."""

    run_key: str
    model: Any
    threshold: float
    device: str
    amp: bool
    seconds: float
    epochs_completed: int
    epochs_planned: int
    device_hours: float
    cost: float
    stopped_reason: str | None
    message: str | None
    artifacts_dir: Path
    scripted_path: Path
    loss_history: list = field(default_factory=list)
    result: Any = None  # the training.TrainResult it came from


def settings_for_run(base: Settings, *, dataset: str | None = None, epochs: int | None = None,
                     device: str | None = None, seed: int | None = None) -> Settings:
    """Apply per-run overrides (CLI flags, flow parameters) on top of the resolved settings."""
    upd_training = {k: v for k, v in {"epochs": epochs, "device": device, "seed": seed}.items() if v is not None}
    if epochs is not None:
        upd_training["min_train_events"] = 0  # asked for N epochs: train exactly N (training/schedule.py)
    data = base.data.model_copy(update={"dataset": dataset}) if dataset else base.data
    merged = base.model_dump()
    merged["training"].update(upd_training)
    merged["data"] = data.model_dump()
    return type(base).model_validate(merged)


def run_key(ds: Dataset, settings: Settings) -> str:
    cfg = settings.training.model_dump(mode="json", exclude={"time_budget_s", "cost_ceiling", "threads"})
    h = hashlib.sha256(ds.fingerprint().encode())
    h.update(json.dumps(cfg, sort_keys=True).encode())
    return h.hexdigest()[:16]


def load(settings: Settings) -> Dataset:
    return load_dataset(settings.data.dataset, settings)


def reference(ds: Dataset, settings: Settings):
    from ebmops.core.validation import load_or_create_reference

    return load_or_create_reference(ds, settings)


def validate_region(batch, *, dataset: str, region: str, profile, settings: Settings, store=None) -> dict:
    """Validate one regional batch; a failure quarantines it and raises ValidationFailed."""
    from ebmops.core.validation import validate_or_quarantine

    res = validate_or_quarantine(batch, dataset=dataset, region=region, profile=profile, settings=settings,
                                 store=store)
    return {"region": region, "rows": res.n_rows, "success": res.success, "seconds": round(res.seconds, 3)}


def split(ds: Dataset, settings: Settings):
    from training import split_dataset

    t = settings.training
    return split_dataset(ds, train_fraction=t.train_fraction, calibration_fraction=t.calibration_fraction, seed=t.seed)


def fit(data_split, settings: Settings, key: str, *, progress: bool = True):
    from training import train_energy_model

    return train_energy_model(data_split.x_train, settings.training, checkpoint_dir=settings.checkpoint_dir / key,
                              resume=True, progress=progress)


def finalize(result, data_split, settings: Settings, key: str) -> Candidate:
    """Calibrate the alert threshold on held-out normal events and export TorchScript."""
    import pandas as pd

    from training import calibrate, export_torchscript, torch_threads

    out = settings.runs_dir / key
    out.mkdir(parents=True, exist_ok=True)
    with torch_threads(settings.training.threads):
        threshold, calib = calibrate(result.model, data_split.x_calib, settings.training.threshold_quantile)
    np.save(out / "calibration_energies.npy", calib.astype(np.float32))
    rng = np.random.default_rng(settings.training.seed)
    idx = np.sort(rng.choice(len(data_split.x_train), size=min(SAMPLE_ROWS, len(data_split.x_train)), replace=False))
    pd.DataFrame(data_split.x_train[idx], columns=list(data_split.feature_names)).to_parquet(
        out / "training_sample.parquet", index=False)
    scripted = export_torchscript(result.model, out / "model.pt")
    (out / "loss_history.json").write_text(json.dumps(result.loss_history))
    return Candidate(run_key=key, model=result.model, threshold=float(threshold), device=result.device,
                     amp=result.amp, seconds=result.seconds, epochs_completed=result.epochs_completed,
                     epochs_planned=result.epochs_planned, device_hours=result.device_hours, cost=result.cost,
                     stopped_reason=result.stopped_reason, message=result.message, artifacts_dir=out,
                     scripted_path=scripted, loss_history=list(result.loss_history), result=result)


def evaluate(cand: Candidate, data_split, settings: Settings) -> dict:
    """Training figures, and EBM vs IsolationForest on the same labelled holdout, in the same run."""
    from training import evaluate as evaluate_model
    from training import torch_threads

    with torch_threads(settings.training.threads):
        return evaluate_model(cand.model, data_split, cand.result, settings.training)


def register(cand: Candidate, metrics: dict, ds: Dataset, settings: Settings, *, summary_md: str):
    """Log the run to MLflow and register it as a new version with the alias ``challenger``."""
    from registry import ModelRegistry

    reg = ModelRegistry.from_settings(settings)
    t = settings.training
    (cand.artifacts_dir / "summary.md").write_text(summary_md)
    params = {"dataset": ds.name, "hidden": ",".join(map(str, t.hidden)), "epochs": t.epochs,
              "epochs_completed": cand.epochs_completed, "batch_size": t.batch_size, "lr": t.lr,
              "objective": t.objective, "noise_sigma": f"{t.noise_sigma_min}-{t.noise_sigma_max}", "seed": t.seed, "threshold_quantile": t.threshold_quantile,
              "train_fraction": t.train_fraction, "device": cand.device, "amp": cand.amp,
              "n_features": ds.schema.n_features}
    tags = {"dataset": ds.name, "run_key": cand.run_key, "stopped_reason": cand.stopped_reason or "",
            "n_events": str(len(ds.frame))}
    example = ds.features_array(ds.frame.head(5))
    run_id = reg.log_training_run(
        params=params, metrics={k: float(v) for k, v in metrics.items()}, tags=tags,
        scripted_path=cand.scripted_path, input_example=example, threshold=cand.threshold,
        feature_names=list(ds.schema.features), device=cand.device, data_fingerprint=ds.fingerprint(),
        extra_artifacts={p.name: p for p in (cand.artifacts_dir / "summary.md",
                                             cand.artifacts_dir / "calibration_energies.npy",
                                             cand.artifacts_dir / "training_sample.parquet",
                                             cand.artifacts_dir / "loss_history.json")},
        run_name=f"train-{ds.name}-{cand.run_key[:8]}")
    price = settings.training.price_per_device_hour.get(cand.device.split(":")[0], 0.0)
    version_tags = {"dataset": ds.name, "n_features": str(ds.schema.n_features), "device": cand.device,
                    "cost": f"{cand.cost:.6g}", "device_hours": f"{cand.device_hours:.6g}", "price_per_hour": f"{price:g}",
                    **{k: f"{v:.6g}" for k, v in metrics.items() if k in ("ebm_auroc", "ebm_ap", "iforest_auroc",
                                                                          "iforest_ap", "train_seconds")}}
    info = reg.register(run_id, tags=version_tags, alias=CHALLENGER)
    shutil.rmtree(settings.checkpoint_dir / cand.run_key, ignore_errors=True)
    return info


def summary_markdown(ds: Dataset, cand: Candidate, metrics: dict, validated: list[dict],
                     version: str | None = None, model_name: str | None = None) -> str:
    def f(k):
        v = metrics.get(k)
        return "-" if v is None else f"{v:.4f}"

    lines = [f"# Training run `{cand.run_key}` on `{ds.name}`", "",
             f"- events: {len(ds.frame):,} in {len(validated)} regional batches, all validated",
             f"- device: `{cand.device}` (mixed precision: {cand.amp}), {cand.epochs_completed}/{cand.epochs_planned} "
             f"epochs in {cand.seconds:.1f} s, cost {cand.cost:.5f}",
             f"- alert threshold: {cand.threshold:.6g}; alert rate on the holdout {metrics.get('test_alert_rate', 0):.4f}",
             ]
    if cand.stopped_reason:
        lines.append(f"- stopped early ({cand.stopped_reason}): {cand.message}")
    if version:
        lines.append(f"- registered: `{model_name}` version **{version}**, alias `challenger`")
    lines += ["", "| model | AUROC | average precision |", "|---|---|---|",
              f"| EBM | {f('ebm_auroc')} | {f('ebm_ap')} |",
              f"| IsolationForest (same split) | {f('iforest_auroc')} | {f('iforest_ap')} |", "",
              "| region | rows | validation |", "|---|---|---|"]
    lines += [f"| {v['region']} | {v['rows']:,} | passed |" for v in validated]
    return "\n".join(lines) + "\n"


@dataclass
class TrainingRecord:
    """A training run's record in the state store: started, then registered, quarantined or failed.

    The flow runs its steps inside ``with TrainingRecord.start(...) as record:``; whatever stops them
    leaves the record with its status and reason, and is re-raised."""

    store: object
    dataset: Dataset
    id: int | None = None

    @classmethod
    @contextmanager
    def start(cls, store, ds: Dataset):
        rec = cls(store, ds, store.start_training_run(ds.name, data_fingerprint=ds.fingerprint()).id)
        try:
            yield rec
        except ValidationFailed as e:
            store.finish_training_run(rec.id, status="quarantined", message=str(e))
            raise
        except Exception as e:
            store.finish_training_run(rec.id, status="failed", message=f"{e.__class__.__name__}: {e}")
            raise

    def registered(self, cand: Candidate, metrics: dict, info, model_name: str) -> None:
        """Audit the registration and close the record as registered."""
        self.store.append_audit("registration", model=info.name, version=info.version, actor="ebmops-train",
                                payload={"run_id": info.run_id, "dataset": self.dataset.name,
                                         "data_fingerprint": self.dataset.fingerprint(), "device": cand.device,
                                         "alias": CHALLENGER})
        self.store.finish_training_run(self.id, status="registered", device=cand.device, seconds=cand.seconds,
                                       metrics=metrics, mlflow_run_id=info.run_id, model_name=model_name,
                                       model_version=info.version, message=cand.message)


def result(record: TrainingRecord, cand: Candidate, metrics: dict, info, validated: list[dict], gated) -> dict:
    """What the train flow returns (the CLI's tables and --json read it)."""
    return {"gate": gated, "state_run_id": record.id, "model_name": info.name, "version": info.version,
            "mlflow_run_id": info.run_id, "device": cand.device, "amp": cand.amp, "epochs": cand.epochs_completed,
            "stopped_reason": cand.stopped_reason, "message": cand.message, "threshold": cand.threshold,
            "metrics": metrics, "regions": validated, "dataset": record.dataset.name}
