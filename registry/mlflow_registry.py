"""The model registry, backed by MLflow.

A training run becomes an MLflow run holding its params, metrics, lineage tags and the TorchScript
energy model (logged with MLflow's pytorch flavour, so ``mlflow models serve`` can score it).
Registering the run creates a numbered version of one registered model; aliases name the roles
a version plays (``challenger`` after registration, ``champion`` once promoted), and moving an
alias is how a version is promoted or rolled back.

Registration is idempotent per run: a retried step finds the version its first attempt created
instead of creating a second one. Every failure surfaces as ``RegistryError`` with a next step.
MLflow and torch are imported inside the methods, so importing this module is cheap.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ebmops.core.aliases import CHALLENGER
from ebmops.core.errors import RegistryError
from registry import lineage
from registry.inputs import (
    LIST_HINT,
    check_artifacts,
    check_metrics,
    check_training_inputs,
    load_and_score,
    param_value,
    safe_name,
    staged,
    version_str,
)
from registry.mlflow_support import (
    apply_http_settings,
    check_alias,
    check_run_id,
    is_not_found,
    make_client,
    quiet_model_logging,
    redact,
    translate,
    use_tracking_uri,
)
from registry.records import ModelVersionInfo

if TYPE_CHECKING:
    import numpy as np

    from ebmops.core.settings import Settings

MODEL_ARTIFACT = "model"  # name of the logged model inside its run


class ModelRegistry:
    """Training runs and model versions of one registered model in one MLflow store."""

    def __init__(self, tracking_uri: str, model_name: str, experiment: str, artifact_root: str | Path | None = None,
                 *, http_max_retries: int | None = None, http_timeout_s: int | None = None):
        """
        Args:
            tracking_uri: MLflow tracking (and registry) URI, e.g. ``sqlite:///.ebmops/mlflow.db``.
            model_name: the registered model every version belongs to.
            experiment: MLflow experiment training runs are logged in (created when missing).
            artifact_root: where a newly created experiment stores artifacts (a path or URI);
                None lets the tracking server decide.
            http_max_retries, http_timeout_s: bound calls to a remote tracking server (None keeps
                MLflow's settings); they set MLflow's process-wide environment variables.
        """
        if not model_name or "'" in model_name:
            raise RegistryError(f"invalid registered model name {model_name!r}: it must be non-empty and hold no quote")
        if not experiment:
            raise RegistryError("the MLflow experiment name must not be empty")
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.experiment = experiment
        self.artifact_root = artifact_root
        apply_http_settings(http_max_retries, http_timeout_s)
        self._client_obj = None
        self._experiment_id: str | None = None

    @classmethod
    def from_settings(cls, settings: "Settings") -> "ModelRegistry":
        """The registry named by ``settings.registry`` (store under ``settings.home`` by default)."""
        reg = settings.registry
        uri = settings.resolved_tracking_uri
        # A remote server keeps artifacts where it was told to, unless an artifact root is set explicitly.
        local = uri.startswith(("sqlite:", "file:", "postgresql", "mysql", "mssql")) or "://" not in uri
        root = settings.resolved_artifact_root if (local or reg.artifact_root is not None) else None
        return cls(uri, reg.model_name, reg.experiment, root, http_max_retries=reg.http_max_retries,
                   http_timeout_s=reg.http_timeout_s)

    def __repr__(self) -> str:
        return f"ModelRegistry({redact(self.tracking_uri)!r}, model={self.model_name!r}, experiment={self.experiment!r})"

    # ---- plumbing --------------------------------------------------------------------------
    @property
    def _client(self):
        if self._client_obj is None:
            with self._translate("opening the MLflow store"):
                self._client_obj = make_client(self.tracking_uri)
        return self._client_obj

    def _translate(self, action: str, not_found: str | None = None):
        return translate(action, self.tracking_uri, not_found=not_found)

    def _experiment(self) -> str:
        if self._experiment_id is not None:
            return self._experiment_id
        with self._translate(f"opening experiment {self.experiment!r}"):
            exp = self._client.get_experiment_by_name(self.experiment)
            if exp is None:
                try:
                    self._experiment_id = self._client.create_experiment(self.experiment,
                                                                         artifact_location=self._artifact_location())
                except Exception as e:  # another process created it first
                    if getattr(e, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
                        raise
                    self._experiment_id = self._client.get_experiment_by_name(self.experiment).experiment_id
            elif exp.lifecycle_stage == "deleted":
                raise RegistryError(f"MLflow experiment {self.experiment!r} is deleted; restore it with "
                                    f"`mlflow experiments restore --experiment-id {exp.experiment_id}` "
                                    "or set registry.experiment to another name")
            else:
                self._experiment_id = exp.experiment_id
        return self._experiment_id

    def _artifact_location(self) -> str | None:
        if self.artifact_root is None:
            return None
        root = str(self.artifact_root)
        if "://" in root:
            return root.rstrip("/") + "/" + safe_name(self.experiment)
        path = Path(root).expanduser().resolve() / safe_name(self.experiment)
        path.mkdir(parents=True, exist_ok=True)
        return path.as_uri()

    def _no_version(self, version: str) -> str:
        return f"no version {version} of model {self.model_name!r}; {LIST_HINT}"

    def _alias_map(self) -> dict[str, list[str]]:
        """version -> aliases, from the registered model (search results may omit aliases)."""
        with self._translate("reading aliases"):
            try:
                aliases = self._client.get_registered_model(self.model_name).aliases or {}
            except Exception as e:
                if is_not_found(e):
                    return {}
                raise
        out: dict[str, list[str]] = {}
        for alias, version in aliases.items():
            out.setdefault(str(version), []).append(alias)
        return {v: sorted(a) for v, a in out.items()}

    def _info(self, mv, alias_map: dict[str, list[str]]) -> ModelVersionInfo:
        tags = {str(k): str(v) for k, v in (mv.tags or {}).items()}
        created = datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=timezone.utc) if mv.creation_timestamp else None
        return ModelVersionInfo(name=mv.name, version=str(mv.version), run_id=mv.run_id or None,
                                aliases=list(alias_map.get(str(mv.version), [])), tags=tags, created_at=created,
                                source=mv.source or "", threshold=lineage.parse_threshold(tags))

    # ---- training runs ---------------------------------------------------------------------
    def log_training_run(self, *, params: Mapping[str, Any], metrics: Mapping[str, float], tags: Mapping[str, Any],
                         scripted_path: Path, input_example: "np.ndarray", threshold: float, feature_names: list[str],
                         device: str, data_fingerprint: str, extra_artifacts: Mapping[str, Path] | None = None,
                         run_name: str | None = None) -> str:
        """Log one training run with its TorchScript model; returns the MLflow run id.

        Inputs are checked before anything is written; a failure while logging leaves the run
        marked FAILED in MLflow (never a run that looks complete).
        """
        metrics = check_metrics(metrics)
        x = check_training_inputs(scripted_path, input_example, feature_names, threshold)
        artifacts = check_artifacts(extra_artifacts or {})
        model, energies = load_and_score(scripted_path, x)

        import mlflow
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

        run_tags = {str(k): str(v) for k, v in tags.items()}
        run_tags.update(lineage.lineage_tags(data_fingerprint=data_fingerprint, threshold=threshold, device=device,
                                             code=lineage.code_version()))
        metadata = {"threshold": float(threshold), "feature_names": list(feature_names),
                    "data_fingerprint": data_fingerprint, "output": "energy per row; higher is more anomalous"}
        # The local build label ("+cpu", "+cu128") is dropped so the model installs on any machine.
        requirements = [f"torch=={torch.__version__.split('+')[0]}"]
        experiment_id = self._experiment()
        with self._translate("logging the training run"), use_tracking_uri(self.tracking_uri):
            with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=run_tags) as run:
                if params:
                    mlflow.log_params({str(k): param_value(v) for k, v in params.items()})
                if metrics:
                    mlflow.log_metrics(metrics)
                with quiet_model_logging():
                    mlflow.pytorch.log_model(model, name=MODEL_ARTIFACT, serialization_format="pickle",
                                             pip_requirements=requirements, signature=infer_signature(x, energies),
                                             input_example=x, metadata=metadata)
                if artifacts:
                    with staged(artifacts) as folder:
                        mlflow.log_artifacts(str(folder))
        return run.info.run_id

    # ---- versions --------------------------------------------------------------------------
    def register(self, run_id: str, *, tags: Mapping[str, Any] | None = None,
                 alias: str | None = CHALLENGER) -> ModelVersionInfo:
        """Register the model of a training run as a new version and point ``alias`` at it.

        Idempotent: when a version of this run exists already, it is returned and no second one is
        created; its missing tags are added, and the alias is set only when that version is still
        the newest and holds no alias (a retry after a failure between the two steps). So a retried
        older registration never takes an alias from a later version or from a promoted one.
        """
        check_run_id(run_id)
        if alias is not None:
            check_alias(alias)
        with self._translate(f"reading run {run_id}",
                             not_found=f"no run {run_id} in the tracking store; check the run id in the MLflow UI"):
            run = self._client.get_run(run_id)
        outputs = list(getattr(run.outputs, "model_outputs", None) or [])
        if not outputs:
            raise RegistryError(f"run {run_id} has no logged model; log it with ModelRegistry.log_training_run first")
        model_id = max(outputs, key=lambda o: o.step).model_id
        version_tags = {k: run.data.tags.get(k, run.data.params.get(k)) for k in lineage.LINEAGE_KEYS}
        version_tags = {k: str(v) for k, v in version_tags.items() if v is not None}
        version_tags[lineage.RUN_ID] = run_id
        version_tags.update({str(k): str(v) for k, v in (tags or {}).items()})

        existing = self._versions_of_run(run_id)
        if existing:
            mv = existing[0]
            with self._translate(f"updating version {mv.version}"):
                for key, value in version_tags.items():
                    if (mv.tags or {}).get(key) != value:
                        self._client.set_model_version_tag(self.model_name, mv.version, key, value)
            if alias is not None and self._unfinished(str(mv.version)):
                self.set_alias(alias, mv.version)
            return self.get_version(mv.version)

        # The SQL registry store resolves a models:/ source through MLflow's *global* tracking URI.
        with self._translate(f"registering run {run_id} as model {self.model_name!r}"), \
                use_tracking_uri(self.tracking_uri):
            try:
                self._client.create_registered_model(self.model_name)
            except Exception as e:
                if getattr(e, "error_code", None) not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                    raise
            created = self._client.create_model_version(self.model_name, source=f"models:/{model_id}", run_id=run_id,
                                                        tags=version_tags, model_id=model_id)
            # Two concurrent registrations of one run: the lowest version wins, the other is removed.
            first = self._versions_of_run(run_id)[0]
            if str(first.version) != str(created.version):
                self._client.delete_model_version(self.model_name, created.version)
                return self.get_version(first.version)
        if alias is not None:
            self.set_alias(alias, created.version)
        return self.get_version(created.version)

    def _unfinished(self, version: str) -> bool:
        """True when ``version`` is the newest one and holds no alias: its registration never got to the alias."""
        versions = self.list_versions()
        return bool(versions) and versions[0].version == version and not versions[0].aliases

    def _versions_of_run(self, run_id: str) -> list:
        with self._translate(f"looking up versions of run {run_id}"):
            found = self._client.search_model_versions(f"name='{self.model_name}' and run_id='{run_id}'")
        return sorted(found, key=lambda mv: int(mv.version))

    def get_version(self, version: int | str) -> ModelVersionInfo:
        """One version; RegistryError when the model or the version does not exist."""
        v = version_str(version)
        with self._translate(f"reading version {v}", not_found=self._no_version(v)):
            mv = self._client.get_model_version(self.model_name, v)
        return self._info(mv, self._alias_map())

    def list_versions(self) -> list[ModelVersionInfo]:
        """Every version, newest first, with its aliases and tags (empty before the first registration)."""
        found, token = [], None
        with self._translate("listing model versions"):
            while True:
                page = self._client.search_model_versions(f"name='{self.model_name}'", page_token=token)
                found.extend(page)
                token = getattr(page, "token", None)
                if not token:
                    break
        aliases = self._alias_map()
        return [self._info(mv, aliases) for mv in sorted(found, key=lambda mv: int(mv.version), reverse=True)]

    def registered_models(self) -> list[str]:
        """The names of every registered model in this MLflow store, sorted (not only this one's)."""
        names, token = [], None
        with self._translate("listing registered models"):
            while True:
                page = self._client.search_registered_models(page_token=token)
                names.extend(m.name for m in page)
                token = getattr(page, "token", None)
                if not token:
                    break
        return sorted(set(names))

    def for_model(self, model_name: str) -> "ModelRegistry":
        """The same MLflow store and experiment, acting on another registered model."""
        other = ModelRegistry(self.tracking_uri, model_name, self.experiment, self.artifact_root)
        other._client_obj, other._experiment_id = self._client_obj, self._experiment_id
        return other

    def set_version_tags(self, version: int | str, tags: Mapping[str, Any]) -> None:
        """Set (or overwrite) tags on a version, e.g. gate verdicts."""
        v = self.get_version(version).version
        with self._translate(f"tagging version {v}", not_found=self._no_version(v)):
            for key, value in tags.items():
                self._client.set_model_version_tag(self.model_name, v, str(key), str(value))

    # ---- aliases ---------------------------------------------------------------------------
    def get_by_alias(self, alias: str) -> ModelVersionInfo | None:
        """The version an alias points at, or None when the alias (or the model) does not exist yet."""
        check_alias(alias)
        with self._translate(f"resolving alias {alias!r}"):
            try:
                mv = self._client.get_model_version_by_alias(self.model_name, alias)
            except Exception as e:
                # A missing model is RESOURCE_DOES_NOT_EXIST; a missing alias is INVALID_PARAMETER_VALUE
                # ("Registered model alias X not found"), the name itself having been checked above.
                if is_not_found(e) or (getattr(e, "error_code", None) == "INVALID_PARAMETER_VALUE"
                                       and "alias" in str(e) and "not found" in str(e)):
                    return None
                raise
        return self._info(mv, self._alias_map())

    def resolve(self, ref: int | str) -> ModelVersionInfo:
        """A version from a number ("3") or an alias ("champion" or "@champion"); RegistryError when unknown."""
        text = str(ref).strip()
        if text.isdigit():
            return self.get_version(text)
        alias = text.removeprefix("@")
        found = self.get_by_alias(alias)
        if found is None:
            held = ", ".join(f"{a} -> {v}" for v, names in sorted(self._alias_map().items()) for a in names) or "none"
            raise RegistryError(f"no alias {alias!r} on model {self.model_name!r} (aliases now: {held}); {LIST_HINT}")
        return found

    def set_alias(self, alias: str, version: int | str) -> None:
        """Point ``alias`` at ``version`` (taking it from whichever version held it)."""
        check_alias(alias)
        v = self.get_version(version).version
        with self._translate(f"setting alias {alias!r}", not_found=self._no_version(v)):
            self._client.set_registered_model_alias(self.model_name, alias, v)

    def move_alias(self, alias: str, version: int | str) -> str | None:
        """Point ``alias`` at ``version``; returns the version that held it before, or None."""
        previous = self.get_by_alias(alias)
        self.set_alias(alias, version)
        return previous.version if previous else None

    def delete_alias(self, alias: str) -> bool:
        """Remove an alias; returns False (and changes nothing) when it was not set."""
        if self.get_by_alias(alias) is None:
            return False
        with self._translate(f"deleting alias {alias!r}"):
            self._client.delete_registered_model_alias(self.model_name, alias)
        return True

    # ---- artifacts -------------------------------------------------------------------------
    def log_version_artifacts(self, version: int | str, files: Mapping[str, Path]) -> None:
        """Log files into the run of a version, each under its key (e.g. ``{"gates/v3.md": path}``)."""
        info = self.get_version(version)
        if not info.run_id:
            raise RegistryError(f"version {info.version} of {self.model_name!r} has no run to attach files to")
        artifacts = check_artifacts(files)
        with self._translate(f"logging files for version {info.version}"), staged(artifacts) as folder:
            self._client.log_artifacts(info.run_id, str(folder))

    def log_version_metrics(self, version: int | str, metrics: Mapping[str, float]) -> None:
        """Log metrics (e.g. ``drift.delta.eu-west``) to the run of a version, timestamped now: a time series
        in the MLflow UI next to the training metrics."""
        import time as _time

        info = self.get_version(version)
        if not info.run_id:
            raise RegistryError(f"version {info.version} of {self.model_name!r} has no run to log metrics to")
        metrics = check_metrics(metrics)
        now = int(_time.time() * 1000)
        with self._translate(f"logging metrics for version {info.version}"):
            for k, v in metrics.items():
                self._client.log_metric(info.run_id, k, float(v), timestamp=now)

    def download_artifact(self, version: int | str, path: str, dst: str | Path) -> Path:
        """Download one file logged with a version's run (e.g. ``calibration_energies.npy``) into ``dst``."""
        import mlflow.artifacts

        info = self.get_version(version)
        if not info.run_id:
            raise RegistryError(f"version {info.version} of {self.model_name!r} has no run to read {path} from")
        dst = Path(dst)
        dst.mkdir(parents=True, exist_ok=True)
        with self._translate(f"downloading {path} of version {info.version}",
                             not_found=f"version {info.version} of {self.model_name!r} has no artifact {path!r}"):
            local = mlflow.artifacts.download_artifacts(run_id=info.run_id, artifact_path=path, dst_path=str(dst),
                                                        tracking_uri=self.tracking_uri)
        return Path(local)

    def download_model(self, version: int | str, dst: str | Path) -> Path:
        """Download the MLflow model directory of a version (MLmodel, data/model.pth, ...) into ``dst``."""
        import mlflow.artifacts

        v = self.get_version(version).version
        dst = Path(dst)
        dst.mkdir(parents=True, exist_ok=True)
        with self._translate(f"downloading version {v}", not_found=self._no_version(v)):
            uri = self._client.get_model_version_download_uri(self.model_name, v)
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst),
                                                        tracking_uri=self.tracking_uri)
        return Path(local)

    def run_params(self, version: int | str) -> dict[str, str]:
        """The params of the training run behind a version (strings, as MLflow keeps them); {} without a run."""
        info = self.get_version(version)
        if not info.run_id:
            return {}
        with self._translate(f"reading the run of version {info.version}"):
            return dict(self._client.get_run(info.run_id).data.params)

    def model_metadata(self, version: int | str) -> dict[str, Any]:
        """The metadata logged with a version's model: threshold, feature_names, data_fingerprint."""
        import mlflow.artifacts
        import yaml

        v = self.get_version(version).version
        with tempfile.TemporaryDirectory(prefix="ebmops-model-") as tmp, \
                self._translate(f"reading the model of version {v}", not_found=self._no_version(v)):
            uri = self._client.get_model_version_download_uri(self.model_name, v).rstrip("/") + "/MLmodel"
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp, tracking_uri=self.tracking_uri)
            mlmodel = yaml.safe_load(Path(local).read_text())
        return dict(mlmodel.get("metadata") or {})

    def download_torchscript(self, version: int | str, dst: str | Path) -> Path:
        """The version's TorchScript file, byte for byte as logged, at ``dst`` (written atomically)."""
        import shutil

        import yaml

        dst = Path(dst)
        with tempfile.TemporaryDirectory(prefix="ebmops-model-") as tmp:
            local = self.download_model(version, tmp)
            mlmodel = yaml.safe_load((local / "MLmodel").read_text())
            data = (mlmodel.get("flavors", {}).get("pytorch") or {}).get("model_data", "data")
            path = local / data / "model.pth"
            if not path.is_file():
                raise RegistryError(f"version {version} of {self.model_name!r} holds no TorchScript file at "
                                    f"{data}/model.pth; it was not logged by log_training_run")
            dst.parent.mkdir(parents=True, exist_ok=True)
            partial = dst.with_name(dst.name + ".partial")
            shutil.copyfile(path, partial)
            partial.replace(dst)
        return dst

    def load_torchscript(self, version: int | str):
        """The version's TorchScript module (``torch.jit.ScriptModule``), loaded on CPU."""
        import torch

        with tempfile.TemporaryDirectory(prefix="ebmops-model-") as tmp:
            path = self.download_torchscript(version, Path(tmp) / "model.pth")
            return torch.jit.load(str(path), map_location="cpu")
