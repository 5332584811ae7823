"""Steps of the ``train`` flow: open, validate, split, fit, finalize, evaluate, register.

The dataset is streamed, never loaded whole (:mod:`ebmops.core.data.stream`): validation is one
pass (exact checks on every row, the suite on a seeded sample per region), the split is one
pass that keeps the training rows' standardisation and bounded seeded samples for
calibration, evaluation and the IsolationForest baseline (:mod:`training.streaming`), and each
training epoch is one pass through a shuffle buffer (:mod:`training.stream_trainer`). Memory is
bounded by ``data.memory_budget_mb``, not by the number of events.

Checkpoints live under ``<home>/checkpoints/<run_key>``, where the run key hashes the source's
fingerprint and the training settings: a retried or re-run training with the same inputs
resumes where the last one stopped (mid-epoch, at the same batch); a different config starts
afresh. The checkpoint is removed once the model is registered.
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
from ebmops.core.data import StreamSource, budget, open_source
from ebmops.core.errors import ConfigError, ValidationFailed
from ebmops.core.settings import Settings

SAMPLE_ROWS = 5000  # training rows kept with the model as the data-drift reference
FEATURE_SCHEMA = "feature_schema.json"        # artifact: the version's dataset and FeatureSchema.to_dict()
REFERENCE_PROFILE = "reference_profile.json"  # artifact: the reference profile its data was validated against


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


def settings_for_run(base: Settings, *, dataset: str | None = None, model: str | None = None,
                     epochs: int | None = None, device: str | None = None, seed: int | None = None) -> Settings:
    """Apply per-run overrides (CLI flags, flow parameters) on top of the resolved settings, scoped to the
    model being trained: ``dataset``'s model (``model`` alone names its configured dataset)."""
    from ebmops.core.models import dataset_of, model_of, scoped

    if dataset is None and model is not None:
        dataset = dataset_of(base, model)
        if dataset is None:
            raise ConfigError(f"model: no dataset is configured for {model!r}; train it with --dataset NAME "
                              "(its model is data.sources.NAME.model, else ebm-NAME)")
    dataset = dataset or base.data.dataset
    if model is not None and model != model_of(base, dataset):
        raise ConfigError(f"model: dataset {dataset!r} is the model {model_of(base, dataset)!r}, not {model!r} "
                          f"(set data.sources.{dataset}.model to rename it)")
    upd_training = {k: v for k, v in {"epochs": epochs, "device": device, "seed": seed}.items() if v is not None}
    if epochs is not None:
        upd_training["min_train_events"] = 0  # asked for N epochs: train exactly N (training/schedule.py)
    merged = base.model_dump()
    merged["training"].update(upd_training)
    merged["data"]["dataset"] = dataset
    merged["registry"]["model_name"] = model_of(base, dataset)
    return scoped(type(base).model_validate(merged), model_of(base, dataset), dataset)


def run_key(source: StreamSource, settings: Settings) -> str:
    cfg = settings.training.model_dump(mode="json", exclude={"time_budget_s", "cost_ceiling", "threads"})
    h = hashlib.sha256(source.fingerprint().encode())
    h.update(json.dumps(cfg, sort_keys=True).encode())
    h.update(json.dumps({"batch_rows": source.batch_rows, "budget_mb": settings.data.memory_budget_mb}).encode())
    return h.hexdigest()[:16]


def load(settings: Settings) -> StreamSource:
    """Open the configured dataset for streaming (reads only file footers)."""
    return open_source(settings.data.dataset, settings)


def validate(source: StreamSource, settings: Settings, store=None, *, progress: bool = False) -> list[dict]:
    """Validate every region in one streamed pass (the reference profile is built from it on first
    use); a failing region is quarantined and ValidationFailed raised. One summary per region."""
    from ebmops.core.validation import validate_source

    _profile, summaries = validate_source(source, settings, store=store, progress=progress)
    return summaries


def split(source: StreamSource, settings: Settings, *, progress: bool = False):
    """One pass: the seeded split's sizes, standardisation and bounded samples (training.streaming)."""
    from training.streaming import prepare

    return prepare(source, settings.training, budget(settings, source.schema.n_features), progress=progress)


def fit(source: StreamSource, data_split, settings: Settings, key: str, *, progress: bool = True):
    from training.stream_trainer import train_stream

    sizes = budget(settings, source.schema.n_features)
    return train_stream(source, data_split, settings.training, shuffle_rows=sizes.shuffle_rows,
                        checkpoint_dir=settings.checkpoint_dir / key, resume=True, progress=progress)


def finalize(result, data_split, settings: Settings, key: str) -> Candidate:
    """Calibrate the alert threshold on held-out normal events and export TorchScript."""
    import pandas as pd

    from training import calibrate, export_torchscript, torch_threads

    out = settings.runs_dir / key
    out.mkdir(parents=True, exist_ok=True)
    with torch_threads(settings.training.threads):
        threshold, calib = calibrate(result.model, data_split.x_calib, settings.training.threshold_quantile)
    np.save(out / "calibration_energies.npy", calib.astype(np.float32))
    # The baseline sample is already a seeded uniform sample of the training rows, in key order:
    # its first rows are a uniform sample too.
    pd.DataFrame(data_split.x_baseline[:SAMPLE_ROWS], columns=list(data_split.feature_names)).to_parquet(
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
        metrics = evaluate_model(cand.model, data_split.as_data_split(), cand.result, settings.training,
                                 n_train=data_split.n_train)
    metrics.update(n_calib=data_split.n_calib, calib_sample=len(data_split.x_calib),
                   test_sample=len(data_split.x_test), baseline_sample=len(data_split.x_baseline))
    return metrics


def register(cand: Candidate, metrics: dict, ds: StreamSource, settings: Settings, *, summary_md: str,
             data_split=None):
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
    tags = {"dataset": ds.name, "model": settings.registry.model_name, "run_key": cand.run_key, "stopped_reason": cand.stopped_reason or "",
            "n_events": str(ds.n_rows if ds.n_rows is not None else "")}
    example = (data_split.x_test[:5] if data_split is not None
               else next(ds.iter_batches(batch_rows=5)).x)
    lineage_files = _lineage_files(ds, settings, cand.artifacts_dir)
    run_id = reg.log_training_run(
        params=params, metrics={k: float(v) for k, v in metrics.items()}, tags=tags,
        scripted_path=cand.scripted_path, input_example=example, threshold=cand.threshold,
        feature_names=list(ds.schema.features), device=cand.device, data_fingerprint=ds.fingerprint(),
        extra_artifacts={p.name: p for p in (cand.artifacts_dir / "summary.md",
                                             cand.artifacts_dir / "calibration_energies.npy",
                                             cand.artifacts_dir / "training_sample.parquet",
                                             cand.artifacts_dir / "loss_history.json")} | lineage_files,
        run_name=f"train-{ds.name}-{cand.run_key[:8]}")
    price = settings.training.price_per_device_hour.get(cand.device.split(":")[0], 0.0)
    version_tags = {"dataset": ds.name, "n_features": str(ds.schema.n_features), "features_sha256": _schema_hash(ds),
                    "device": cand.device,
                    "cost": f"{cand.cost:.6g}", "device_hours": f"{cand.device_hours:.6g}", "price_per_hour": f"{price:g}",
                    **{k: f"{v:.6g}" for k, v in metrics.items() if k in ("ebm_auroc", "ebm_ap", "iforest_auroc",
                                                                          "iforest_ap", "train_seconds")}}
    info = reg.register(run_id, tags=version_tags, alias=CHALLENGER)
    shutil.rmtree(settings.checkpoint_dir / cand.run_key, ignore_errors=True)
    return info


def _schema_hash(ds: StreamSource) -> str:
    return hashlib.sha256(json.dumps(ds.schema.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _lineage_files(ds: StreamSource, settings: Settings, out: Path) -> dict[str, Path]:
    """The version's own data contract, logged with it: the feature schema (names, order, types) and the
    reference profile its batches were validated against."""
    from ebmops.core.validation.profile import reference_path

    files = {FEATURE_SCHEMA: out / FEATURE_SCHEMA}
    files[FEATURE_SCHEMA].write_text(json.dumps({"dataset": ds.name, **ds.schema.to_dict()}, indent=1))
    ref = reference_path(settings, ds.name)
    if ref.is_file():
        files[REFERENCE_PROFILE] = out / REFERENCE_PROFILE
        shutil.copyfile(ref, files[REFERENCE_PROFILE])
    return files


def summary_markdown(ds: StreamSource, cand: Candidate, metrics: dict, validated: list[dict],
                     version: str | None = None, model_name: str | None = None) -> str:
    def f(k):
        v = metrics.get(k)
        return "-" if v is None else f"{v:.4f}"

    lines = [f"# Training run `{cand.run_key}` on `{ds.name}`", "",
             f"- events: {sum(v['rows'] for v in validated):,} in {len(validated)} regional batches, all validated "
             f"(streamed: exact checks on every event, the suite on a seeded sample)",
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
    dataset: StreamSource
    id: int | None = None

    @classmethod
    @contextmanager
    def start(cls, store, ds: StreamSource):
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
