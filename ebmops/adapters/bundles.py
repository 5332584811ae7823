"""A registered version made ready to publish: the TorchScript file exactly as MLflow stores it, its
calibration energies and the manifest fields (features, threshold, gate verdict, lineage).

Used by the sync service and by the rollout's traffic port (which publishes a canary's bundle)."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ebmops.core.aliases import CANDIDATE, CHAMPION
from ebmops.core.errors import ConfigError, EbmopsError
from ebmops.core.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class SyncBundle:
    """A registered version made ready to publish: its TorchScript file and manifest fields."""

    model_name: str
    version: str
    model_file: Path
    features: list[str]
    threshold: float
    gate_verdict: str
    metadata: dict[str, str] = field(default_factory=dict)
    extra_files: dict[str, Path] = field(default_factory=dict)


def prepare(settings: Settings, version: str | None) -> SyncBundle:
    """Fetch the version (default ``@candidate``, else ``@champion``) and its manifest fields.

    The TorchScript file is the exact artifact MLflow stores, byte for byte, so publishing the
    same version twice hashes to the same blobs and uploads nothing.
    """
    from registry import ModelRegistry

    reg = ModelRegistry.from_settings(settings)
    if version:
        info = reg.resolve(version)
    else:
        info = reg.get_by_alias(CANDIDATE) or reg.get_by_alias(CHAMPION)
        if info is None:
            raise ConfigError("VERSION: no version holds the 'candidate' or 'champion' alias; pass a version "
                              "(e.g. `ebmops sync 3`) or gate one first (`ebmops gate`)")
    meta = reg.model_metadata(info.version)
    features = list(meta.get("feature_names") or [])
    if not features or meta.get("threshold") is None:
        raise ConfigError(f"version {info.version} carries no feature_names/threshold metadata; it was not "
                          "logged by ebmops train and cannot be served")
    out_dir = settings.home / "sync" / reg.model_name / f"v{info.version}"  # versions are per model
    model_file = out_dir / "model.pt"
    if not model_file.is_file():
        reg.download_torchscript(info.version, model_file)
    calibration = out_dir / "calibration.npy"
    if not calibration.is_file():
        try:  # the node's live energy-shift gauge compares with these (role "calibration" in the bundle)
            got = reg.download_artifact(info.version, "calibration_energies.npy", out_dir / "cal.partial")
            shutil.move(str(got), calibration)
            shutil.rmtree(out_dir / "cal.partial", ignore_errors=True)
        except EbmopsError as e:
            log.warning("version %s has no calibration energies (%s); its nodes export no energy shift", info.version, e)
    tags = info.tags or {}
    metadata = {k: str(v) for k, v in {"data_fingerprint": meta.get("data_fingerprint"),
                                        "run_id": getattr(info, "run_id", None)}.items() if v}
    return SyncBundle(model_name=reg.model_name, version=str(info.version), model_file=model_file,
                      features=features, threshold=float(meta["threshold"]),
                      gate_verdict=str(tags.get("gate.verdict", "none")), metadata=metadata,
                      extra_files={"calibration": calibration} if calibration.is_file() else {})
