"""Steps of the ``drift-monitor`` and ``hotfix`` flows, as plain functions (no Prefect).

drift-monitor, per region: read the node's recent energies per served version (``/stats``),
pick the reference (the same region's observation a week earlier, else the version's
calibration energies), compute Δ, store the observation (with a quantile sketch that becomes a
later reference) and log it as an MLflow metric of the version's run. A breach gets an Evidently
report of the region's recent features and energies, and (if no hotfix runs for that model and
region and the cooldown allows it) becomes an ``ebmops.drift.breached`` event, emitted by the flow.

hotfix: fetch the region's recent events from its node, validate them, recalibrate the
threshold on them (same network) or retrain on them, register the result, gate it on the
region's recent traffic, and roll it out to the region with the expedited hotfix plan.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from drift import monitor
from ebmops.adapters.nodes import fetch_recent, node_stats
from ebmops.core.aliases import CHALLENGER
from ebmops.core.settings import Settings

log = logging.getLogger(__name__)

BREACH_EVENT = "ebmops.drift.breached"


def _calibration(settings: Settings, version: str, cache: dict) -> np.ndarray | None:
    if version not in cache:
        from registry import ModelRegistry

        try:
            dst = settings.home / "drift" / "calibration" / str(settings.registry.model_name) / version
            cache[version] = np.load(ModelRegistry.from_settings(settings).download_artifact(
                version, "calibration_energies.npy", dst))
        except Exception as e:  # noqa: BLE001 - a version logged without calibration: no fallback reference
            log.warning("no calibration energies for version %s: %s", version, e)
            cache[version] = None
    return cache[version]


def monitor_region(settings: Settings, store, region: str, *, now: datetime | None = None,
                   calibration_cache: dict | None = None) -> list[dict]:
    """One observation per version the region's node serves (stable, canary) of the scope's model."""
    now = now or datetime.now(timezone.utc)
    cfg = settings.drift
    cache = calibration_cache if calibration_cache is not None else {}
    try:
        stats = node_stats(settings, region)
    except Exception as e:  # noqa: BLE001 - an unreachable node is reported, not fatal for other regions
        return [{"model": settings.registry.model_name, "region": region, "version": None, "role": None,
                 "delta": None, "level": monitor.NO_DATA,
                 "reference_kind": None, "n_events": 0, "error": f"node unreachable: {type(e).__name__}: {e}"}]
    model = settings.registry.model_name
    roles = {stats.get("stable_version"): "stable", stats.get("canary_version"): "canary"}
    out = []
    for version, role in roles.items():
        if not version:
            continue
        vs = (stats.get("by_version") or {}).get(version) or {}
        current = np.asarray(vs.get("energies") or [], dtype=np.float64)
        earlier = store.list_drift(model_name=model, version=version, region=region,
                                   until=now - _hours(cfg.reference_age_h - cfg.reference_tolerance_h),
                                   since=now - _hours(cfg.reference_age_h + cfg.reference_tolerance_h), limit=500)
        ref = monitor.choose_reference(earlier, now, age_h=cfg.reference_age_h, tolerance_h=cfg.reference_tolerance_h,
                                       calibration=_calibration(settings, version, cache))
        delta, level = monitor.observe(current, ref, min_events=cfg.min_events, warn=cfg.warn_delta,
                                       hotfix=cfg.hotfix_delta)
        rec = store.record_drift(model_name=model, version=version, region=region, delta=delta, level=level,
                                 reference_kind=ref.kind if ref else "none", reference_at=ref.at if ref else None,
                                 n_events=len(current), quantiles=monitor.sketch(current, cfg.quantiles),
                                 created_at=now)
        out.append({"model": model, "region": region, "version": version, "role": role, "delta": delta, "level": level,
                    "reference_kind": rec.reference_kind, "n_events": len(current), "observation_id": rec.id,
                    "at": now.isoformat()})
    return out


def _hours(h: float):
    from datetime import timedelta

    return timedelta(hours=h)


def log_metrics(settings: Settings, observations: list[dict]) -> None:
    """Each Δ as the MLflow metric ``drift.delta.<region>`` of the version's run (a time series in the UI)."""
    from registry import ModelRegistry

    reg = ModelRegistry.from_settings(settings)
    for o in observations:
        if o.get("delta") is not None:
            try:
                reg.log_version_metrics(o["version"], {f"drift.delta.{o['region']}": o["delta"]})
            except Exception as e:  # noqa: BLE001 - the observation is in the state store either way
                log.warning("could not log drift metric of v%s to MLflow: %s", o["version"], e)


def breach_report(settings: Settings, observation: dict) -> str | None:
    """An Evidently report of the region's recent features and energies against the version's training
    sample and calibration energies; returns the HTML path."""
    import pandas as pd

    from gates.data_drift import feature_drift
    from registry import ModelRegistry

    region, version = observation["region"], observation["version"]
    out = (settings.home / "drift" / "reports"
           / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{settings.registry.model_name}-{region}-v{version}")
    out.mkdir(parents=True, exist_ok=True)
    try:
        recent = fetch_recent(settings, region, 5000, out / "recent.parquet")
        cur = pd.read_parquet(recent)
        reg = ModelRegistry.from_settings(settings)
        ref = pd.read_parquet(reg.download_artifact(version, "training_sample.parquet", out))
        cal = np.load(reg.download_artifact(version, "calibration_energies.npy", out))
        ref = ref.assign(energy=np.resize(cal, len(ref)))
        cols = [c for c in ref.columns if c in cur.columns]
        html = out / "report.html"
        import warnings

        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # constant columns in a short window
            share, _ = feature_drift(ref, cur, cols, method=settings.gate.feature_drift_method,
                                     threshold=settings.gate.feature_drift_threshold, html_path=html,
                                     max_rows=settings.gate.feature_drift_max_rows)
        observation["drifted_share"] = share
        return str(html)
    except Exception as e:  # noqa: BLE001 - a report that cannot be built must not stop the hotfix
        log.warning("no drift report for %s v%s: %s", region, version, e)
        return None


def hotfix_candidates(settings: Settings, store, observations: list[dict], *,
                      now: datetime | None = None) -> list[dict]:
    """The breaches that may start a hotfix now (one per model and region, cooldown respected)."""
    now = now or datetime.now(timezone.utc)
    model = settings.registry.model_name
    out = []
    seen: set[str] = set()
    for o in observations:
        if o["level"] != monitor.HOTFIX or o["region"] in seen:
            continue
        seen.add(o["region"])
        running = store.list_hotfixes(model_name=model, region=o["region"], status="running", limit=1)
        last = store.list_hotfixes(model_name=model, region=o["region"], limit=1)
        d = monitor.hotfix_decision(o["delta"], running=bool(running),
                                    last_started=last[0].created_at if last else None,
                                    last_delta=last[0].delta if last else None, now=now,
                                    cooldown_s=settings.drift.cooldown_s, growth=settings.drift.growth)
        out.append({**o, "start_hotfix": d.start, "decision": d.reason, "model": model})
    return out


def record_breach(store, breach: dict) -> None:
    """The breach in the audit log: Δ, its reference, the report, and whether a hotfix starts (and why not)."""
    store.append_audit("drift_breach", model=breach["model"], version=breach["version"], region=breach["region"],
                       actor="ebmops-drift-monitor",
                       payload={"delta": breach["delta"], "reference": breach["reference_kind"],
                                "report": breach.get("report"), "hotfix": breach["start_hotfix"],
                                "decision": breach["decision"]})


def breach_event(breach: dict) -> dict:
    """The ``ebmops.drift.breached`` event's fields (the hotfix deployment's trigger reads the payload)."""
    return {"event": BREACH_EVENT,
            "resource": {"prefect.resource.id": f"ebmops.model.{breach['model']}", "ebmops.region": breach["region"]},
            "payload": {"region": breach["region"], "model": breach["model"], "version": breach["version"],
                        "delta": breach["delta"], "report": breach.get("report")}}


# ---- hotfix ------------------------------------------------------------------------------------

def recent_dataset(settings: Settings, region: str, path: Path):
    """The region's recent events as a Dataset in the model's feature order (no labels)."""
    import pandas as pd

    from ebmops.core.data.schema import EVENT_ID, REGION, Dataset, FeatureSchema

    from ebmops.core.data import open_source

    frame = pd.read_parquet(path)
    features = [c for c in frame.columns if c != "energy"]
    frame = frame[features].copy()
    frame.insert(0, EVENT_ID, np.arange(len(frame), dtype=np.int64))
    frame.insert(1, REGION, region)
    # the model's categorical columns (its dataset's schema) hold the raw texts the node kept
    categorical = tuple(c for c in open_source(settings.data.dataset, settings).schema.categorical if c in features)
    return Dataset(name=f"recent-{region}", frame=frame,
                   schema=FeatureSchema(features=tuple(features), categorical=categorical))


def model_input(module, ds) -> np.ndarray:
    """``ds``'s events as ``module``'s input: numeric columns as they are, categorical ones (raw texts)
    through the model's own vocabulary (``encode``), unseen values in its unknown slot."""
    features = list(ds.schema.features)
    x = np.zeros((len(ds.frame), len(features)), dtype=np.float32)
    categorical = set(module.categorical_columns()) if hasattr(module, "categorical_columns") else set()
    for j, c in enumerate(features):
        col = ds.frame[c]
        if j in categorical:
            from ebmops.core.data.categorical import canonical_value

            x[:, j] = module.encode(j, [canonical_value(v) or "" for v in col.tolist()]).numpy()
        else:
            x[:, j] = col.to_numpy(dtype=np.float32)
    return x


def validate_recent(settings: Settings, store, ds, region: str):
    """The same Great Expectations gate as training batches: a hotfix never trains on garbage."""
    import dataclasses

    from ebmops.core.data import open_source
    from ebmops.core.validation import reference_for_source, validate_or_quarantine

    profile = reference_for_source(open_source(settings.data.dataset, settings), settings)  # streamed when missing
    profile = dataclasses.replace(profile, has_label=False)  # live traffic carries no labels
    return validate_or_quarantine(ds.frame, dataset=ds.name, region=region, profile=profile, settings=settings,
                                  store=store)


def build_hotfix(settings: Settings, version: str, ds, *, mode: str, region: str, delta: float) -> dict:
    """Recalibrate ``version`` on ``ds`` (same TorchScript file, new threshold and calibration) or retrain
    on it; log and register the result as the ``challenger``. Returns the new version's info."""
    import torch

    from ebmops.adapters.bundles import prepare
    from registry import ModelRegistry
    from training.calibrate import calibrate

    reg = ModelRegistry.from_settings(settings)
    t = settings.training
    workdir = settings.home / "hotfix" / f"{settings.registry.model_name}-{region}-v{version}-{int(time.time())}"
    workdir.mkdir(parents=True, exist_ok=True)
    module = torch.jit.load(str(prepare(settings, version).model_file), map_location="cpu").eval()
    x = model_input(module, ds)  # the served version's own codes for categorical columns
    rng = np.random.default_rng(t.seed)
    order = rng.permutation(len(x))
    n_cal = max(len(x) // 2, 1)
    params: dict = {"hotfix_of": version, "mode": mode, "region": region, "delta": round(delta, 4),
                    "n_events": len(x), "threshold_quantile": t.threshold_quantile}
    if mode == "recalibrate":
        threshold, cal = calibrate(module, x[order[:n_cal]], t.threshold_quantile)  # the buffer travels with it
        model_file = workdir / "model.pt"
        torch.jit.save(module, str(model_file))
        metrics = {"n_calibration": float(n_cal)}
        device = "cpu"
    else:
        from training.export import export_torchscript
        from training.pipeline import fit

        outcome = fit(ds, t, checkpoint_dir=workdir / "checkpoints", progress=False)
        model_file = export_torchscript(outcome.model, workdir / "model.pt")
        threshold, cal = outcome.threshold, outcome.calibration_energies
        metrics = {k: float(v) for k, v in outcome.metrics.items() if np.isfinite(v)}
        device = outcome.train.device if hasattr(outcome.train, "device") else "cpu"
    np.save(workdir / "calibration_energies.npy", np.asarray(cal, dtype=np.float32))
    ds.frame[list(ds.schema.features)].iloc[order[:5000]].to_parquet(workdir / "training_sample.parquet")
    run_id = reg.log_training_run(
        params=params, metrics=metrics, tags={"hotfix": "true", "region": region, "hotfix_of": version},
        scripted_path=Path(model_file), input_example=x[:5], threshold=float(threshold),
        feature_names=list(ds.schema.features), device=device, data_fingerprint=ds.fingerprint(),
        extra_artifacts={"calibration_energies.npy": workdir / "calibration_energies.npy",
                         "training_sample.parquet": workdir / "training_sample.parquet"},
        run_name=f"hotfix-{region}-v{version}-{mode}")
    info = reg.register(run_id, tags={"dataset": settings.data.dataset, "n_features": str(len(ds.schema.features)),
                                      "hotfix": "true", "hotfix_of": version, "region": region, "mode": mode,
                                      "cost": "0", "device_hours": "0", "price_per_hour": "0"}, alias=CHALLENGER)
    return {"version": info.version, "mode": mode, "threshold": float(threshold), "run_id": run_id}
