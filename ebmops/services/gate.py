"""Steps of the ``gate`` flow: gather the numbers, judge them, record the verdict.

The judging is ``gates.evaluate_gate`` (pure). These steps measure: they fetch the candidate
(and the champion, when there is one) from the registry, benchmark both TorchScript files in
one fresh single-threaded process, score the benchmark window and the labelled holdout with
both, compute the energy shift Δ against the candidate's own calibration energies, run the
Evidently feature-drift report of the window against the candidate's training sample, and
read the training cost. Then they record the report: MLflow tags and artifacts on the
version, the alias ``candidate`` on a pass, and a row in the state store.

The benchmark window and the holdout are the test split (seeded by ``training.seed``) of the
gated version's own dataset (its lineage's ``dataset``: the settings come scoped to the version's
model, ebmops/services/models.py), or of ``gate.window_dataset`` when it has the same schema:
normal events the candidate never trained on plus every labelled anomaly. The champion is
looked up within the same model only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ebmops.core.aliases import CANDIDATE, CHALLENGER, CHAMPION
from ebmops.core.errors import ConfigError
from ebmops.core.settings import Settings

REVIEW_TAG = "gate.review"


@dataclass
class GateSubjects:
    candidate: object              # registry.ModelVersionInfo
    champion: object | None
    workdir: Path
    candidate_path: Path
    champion_path: Path | None
    calibration_energies: np.ndarray
    training_sample_path: Path | None


@dataclass
class GateWindow:
    """The events the gate measures on. Categorical columns of ``frame`` and ``x`` hold codes of
    ``vocabulary`` (learnt from the gated version's data, per column of ``features``); each model scores
    them in its own codes (``own_codes``)."""

    frame: object                  # pandas.DataFrame of the window's events, the model's feature columns
    x: np.ndarray                  # the same events as float32 rows
    holdout: tuple[np.ndarray, np.ndarray] | None  # labelled (x, y) for detection quality; None: unlabelled
    holdout_id: str
    vocabulary: dict[str, list[str]] = field(default_factory=dict)
    features: list[str] = field(default_factory=list)


def _registry(settings: Settings):
    from registry import ModelRegistry

    return ModelRegistry.from_settings(settings)


def resolve(settings: Settings, version: str | None) -> GateSubjects:
    """The candidate (a version, an @alias, or the challenger) and the champion, fetched locally."""

    reg = _registry(settings)
    cand = reg.resolve(version or f"@{CHALLENGER}")
    champ = reg.get_by_alias(CHAMPION)
    if champ is not None and champ.version == cand.version:
        champ = None  # the champion is not compared with itself
    workdir = settings.home / "gates" / cand.name / f"v{cand.version}"  # version numbers are per model
    workdir.mkdir(parents=True, exist_ok=True)

    def fetch(info, name) -> Path:
        return reg.download_torchscript(info.version, workdir / f"{name}-v{info.version}.pt")

    calib_path = reg.download_artifact(cand.version, "calibration_energies.npy", workdir)
    try:
        sample = reg.download_artifact(cand.version, "training_sample.parquet", workdir)
    except Exception:  # noqa: BLE001 - a model logged without a sample: the data check goes inconclusive
        sample = None
    return GateSubjects(candidate=cand, champion=champ, workdir=workdir, candidate_path=fetch(cand, "candidate"),
                        champion_path=fetch(champ, "champion") if champ else None,
                        calibration_energies=np.load(calib_path), training_sample_path=sample)


def window(settings: Settings, window_path: str | None = None) -> GateWindow:
    """The gate's window, with the labelled holdout and its id.

    The window is what energies, alert rates and feature drift are measured on: the labelled
    holdout of the version's dataset (``window_source``) by default, or the recent events in ``window_path`` (a
    hotfix gates on the region's recent traffic). Detection quality always uses the labelled
    holdout. The dataset is streamed: the holdout is the training split's bounded seeded sample of
    test events (``training.evaluation_rows`` normal ones and as many anomalies at most), the
    same rows the train flow evaluated on."""
    import pandas as pd

    from ebmops.core.data import budget
    from training.streaming import prepare

    source = window_source(settings)
    sp = prepare(source, settings.training, budget(settings, source.schema.n_features))
    holdout = (sp.x_test, sp.y_test)
    if window_path:
        recent = pd.read_parquet(window_path)
        missing = [f for f in sp.feature_names if f not in recent.columns]
        if missing:
            raise ConfigError(f"window_path {window_path} lacks the model's features {missing[:5]}")
        frame = recent[list(sp.feature_names)].copy()
        for c in frame.columns:  # categorical columns hold the texts clients sent: codes of the window's vocabulary
            cats = sp.vocabulary.get(c)
            if cats is not None:
                frame[c] = pd.Index(cats).get_indexer(frame[c].astype(str)).astype(np.float32)
                frame.loc[frame[c] < 0, c] = float(len(cats))
        frame = frame.astype("float32")
        x = frame.to_numpy(np.float32)
    else:
        frame, x = pd.DataFrame(sp.x_test, columns=list(sp.feature_names)), sp.x_test
    return GateWindow(frame=frame, x=x, holdout=holdout, holdout_id=source.fingerprint()[:12],
                      vocabulary=dict(sp.vocabulary), features=list(sp.feature_names))


def window_source(settings: Settings):
    """The dataset the window and holdout come from: the gated version's own (``data.dataset`` of its model
    scope), or ``gate.window_dataset`` when that has the same features in the same order."""
    from ebmops.core.data import open_source

    own = open_source(settings.data.dataset, settings)
    name = settings.gate.window_dataset
    if not name or name == own.name:
        return own
    other = open_source(name, settings)
    if tuple(other.schema.features) != tuple(own.schema.features):
        raise ConfigError(f"gate.window_dataset {name!r} has {other.schema.n_features} features "
                          f"({', '.join(other.schema.features[:4])}, ...), not the {own.schema.n_features} of "
                          f"{settings.registry.model_name}'s dataset {own.name!r}; unset gate.window_dataset, or set "
                          "it to a dataset with that model's schema")
    return other


def benchmark(subjects: GateSubjects, settings: Settings) -> dict:
    from gates.latency import LatencyBenchmarkError, benchmark_models

    paths = {"candidate": subjects.candidate_path}
    if subjects.champion_path:
        paths["champion"] = subjects.champion_path
    try:
        return benchmark_models(paths, iterations=settings.gate.latency_iterations,
                                warmup=settings.gate.latency_warmup, timeout_s=settings.gate.latency_timeout_s)
    except LatencyBenchmarkError:
        return {}  # recorded as inconclusive by the check


UNSEEN = "\x00unseen"  # a category no vocabulary holds: every model scores it in its unknown slot


def own_codes(m, x: np.ndarray, window: GateWindow | None) -> np.ndarray:
    """``x`` in model ``m``'s own codes. The window's categorical columns hold codes of its ``vocabulary``
    (learnt from the version's data); a champion trained earlier numbers its categories its own way, so each
    column goes back to its texts and through ``m.encode``. Numeric-only models and windows pass through."""
    if window is None or not window.vocabulary or not hasattr(m, "categorical_columns"):
        return x
    vocab, features = window.vocabulary, window.features
    x = np.array(x, dtype=np.float32, copy=True)
    for j in m.categorical_columns():
        cats = vocab.get(features[j], ())
        codes = x[:, j]
        ok = np.isfinite(codes) & (codes >= 0) & (codes < len(cats))
        texts = np.full(len(codes), UNSEEN, dtype=object)
        texts[ok] = np.asarray(cats, dtype=object)[codes[ok].astype(np.int64)]
        x[:, j] = m.encode(j, texts.tolist()).numpy()
    return x


def _load(model):
    """A TorchScript module on CPU, eval mode: ``model`` itself, or loaded from its path."""
    if not isinstance(model, (str, Path)):
        return model
    import torch

    return torch.jit.load(str(model), map_location="cpu").eval()


def network_digest(model) -> str:
    """sha256 of a TorchScript model's code, parameters and buffers, the threshold left out: two files with
    the same digest run the same network (a recalibrated hotfix), whatever their thresholds. ``model``: a
    loaded module or its path."""
    import hashlib

    m = _load(model)
    h = hashlib.sha256()
    for name, sub in sorted(m.named_modules()):
        h.update(name.encode() + b"\0" + getattr(sub, "code", "").encode())
    for name, t in sorted(m.state_dict().items()):
        if name.rsplit(".", 1)[-1] == "threshold":
            continue
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _energies(model, x: np.ndarray, window: GateWindow | None = None) -> tuple[np.ndarray, float]:
    """``model``'s energies of ``x`` (in its own codes) and its threshold; ``model``: a module or its path."""
    import torch

    m = _load(model)
    x = own_codes(m, x, window)
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), 8192):
            out.append(m(torch.from_numpy(np.ascontiguousarray(x[i:i + 8192], dtype=np.float32))).numpy())
    return np.concatenate(out), float(m.threshold)


def measure(subjects: GateSubjects, settings: Settings, latency: dict, win: GateWindow):
    """Every number the gate judges, as ``gates.GateMeasurements``. Detection quality is measured on the
    window's labelled holdout; energies, alert rates and feature drift on its events, the holdout's
    anomalies left out when the window is the holdout itself (they are not drift of normal traffic)."""
    from drift.delta import alert_rate, energy_shift
    from gates.checks import DetectionMetrics
    from gates.data_drift import feature_drift
    from gates.engine import GateMeasurements
    from training import detection_metrics

    cand, champ = subjects.candidate, subjects.champion
    x, window_frame, holdout_id = win.x, win.frame, win.holdout_id
    cand_m = _load(subjects.candidate_path)  # each model loaded once per gate run
    champ_m = _load(subjects.champion_path) if subjects.champion_path else None
    e_cand, thr_cand = _energies(cand_m, x, win)
    x_h, y = win.holdout if win.holdout is not None else (x, None)
    same = x_h is x
    normal = (y == 0) if (y is not None and same) else np.ones(len(x), bool)
    m = GateMeasurements(model_name=cand.name, model_version=cand.version,
                         champion_version=champ.version if champ else None,
                         candidate_latency=latency.get("candidate"), champion_latency=latency.get("champion"),
                         energy_shift=energy_shift(subjects.calibration_energies, e_cand[normal]),
                         energy_n_reference=len(subjects.calibration_energies), energy_n_current=int(normal.sum()),
                         candidate_alert_rate=alert_rate(e_cand, thr_cand), alert_window_events=len(x),
                         n_features=x.shape[1],
                         same_network_as_champion=champ_m is not None and
                         network_digest(cand_m) == network_digest(champ_m))
    if y is not None:
        e_cand_h = e_cand if same else _energies(cand_m, x_h, win)[0]
        d = detection_metrics(e_cand_h, y)
        m.candidate_detection = DetectionMetrics(auroc=d["auroc"], ap=d["ap"], n_positive=int(y.sum()),
                                                 n_negative=int((y == 0).sum()), holdout_id=holdout_id)
    if champ_m is not None:
        e_champ, thr_champ = _energies(champ_m, x, win)
        m.champion_alert_rate = alert_rate(e_champ, thr_champ)
        if y is not None:
            d = detection_metrics(e_champ if same else _energies(champ_m, x_h, win)[0], y)
            m.champion_detection = DetectionMetrics(auroc=d["auroc"], ap=d["ap"], n_positive=int(y.sum()),
                                                    n_negative=int((y == 0).sum()), holdout_id=holdout_id)
    if subjects.training_sample_path is not None:
        import pandas as pd

        ref = pd.read_parquet(subjects.training_sample_path)
        features = [c for c in ref.columns if c in window_frame.columns]
        html = subjects.workdir / "data_drift.html"
        # the reference is normal traffic; so is the window's: the labelled holdout's anomalies are not drift
        # (as for the energy shift above; a dataset whose holdout is 10 % attacks would otherwise always fail)
        current = window_frame[normal] if len(window_frame) == len(normal) and not normal.all() else window_frame
        share, per = feature_drift(ref, current, features, method=settings.gate.feature_drift_method,
                                   threshold=settings.gate.feature_drift_threshold, html_path=html,
                                   max_rows=settings.gate.feature_drift_max_rows)
        m.feature_drift_share = share
        m.drifted_features = sorted(f for f, r in per.items() if r.get("drifted"))
        m.drift_report_path = str(html)
    tags = cand.tags
    if "cost" in tags:
        m.training_cost = float(tags["cost"])
        m.device_hours = float(tags.get("device_hours", "nan"))
        m.price_per_hour = float(tags.get("price_per_hour", "nan"))
    return m


def judge(measurements, settings: Settings):
    from gates.engine import evaluate_gate

    return evaluate_gate(measurements, settings.gate)


def record(report, subjects: GateSubjects, settings: Settings, store=None) -> dict:
    """Write the verdict everywhere it belongs; move the ``candidate`` alias on a pass."""
    from gates.verdict import Verdict

    reg = _registry(settings)
    version = subjects.candidate.version
    json_path, md_path = report.write(subjects.workdir, stem="gate")
    files = {"gate/gate.json": json_path, "gate/gate.md": md_path}
    if report.measurements.get("drift_report_path"):
        files["gate/data_drift.html"] = Path(report.measurements["drift_report_path"])
    reg.log_version_artifacts(version, files)
    tags = {"gate.verdict": report.verdict.value, **{f"gate.{c.name}": c.verdict.value for c in report.checks}}
    if report.verdict is Verdict.INCONCLUSIVE:
        tags[REVIEW_TAG] = "pending"
    reg.set_version_tags(version, tags)
    holder = reg.get_by_alias(CANDIDATE)
    if report.verdict.promotes:
        reg.set_alias(CANDIDATE, version)
    elif holder is not None and holder.version == version:
        reg.delete_alias(CANDIDATE)  # a re-gate that now fails takes the alias back
    if store is not None:
        store.record_gate_report(model_name=report.model_name, version=version, verdict=report.verdict.value,
                                 champion_version=report.champion_version, report=report.to_dict())
        store.append_audit("gate", model=report.model_name, version=version, actor="ebmops-gate",
                           payload={"verdict": report.verdict.value, "champion": report.champion_version,
                                    "checks": {c.name: c.verdict.value for c in report.checks},
                                    "candidate_alias": report.verdict.promotes})
    return {"version": version, "verdict": report.verdict.value, "action": report.verdict.action,
            "champion": report.champion_version, "json": str(json_path), "markdown": str(md_path),
            "candidate_alias": report.verdict.promotes}
