"""Typed errors. Each message names what was wrong and what to do next."""


class EbmopsError(Exception):
    """Base of every error ebmops raises on purpose; the CLI prints it without a traceback."""

    exit_code = 1


class ConfigError(EbmopsError):
    """A setting or an argument is invalid."""

    exit_code = 2


class DatasetError(EbmopsError):
    """A dataset could not be fetched, read or matched to its schema."""


class DatasetFetchError(DatasetError):
    """Downloading or verifying a dataset failed; nothing was written."""


class ValidationFailed(EbmopsError):
    """A batch failed its validation suite and was quarantined."""

    exit_code = 3

    def __init__(self, message: str, *, quarantine_path: str | None = None, failures: list[dict] | None = None):
        super().__init__(message)
        self.quarantine_path = quarantine_path
        self.failures = failures or []


class TrainingStopped(EbmopsError):
    """Training stopped early on purpose (wall-time budget or cost ceiling)."""


class RegistryError(EbmopsError):
    """The model registry refused an operation or does not hold what was asked for."""


# ---- model sync (registry/objectstore, registry/bundle, registry/desired_state) -----------------


class SyncError(EbmopsError):
    """Publishing a model to a region, or reading one back, failed."""


class StoreError(SyncError):
    """A region's object store refused an operation or could not be reached."""


class ObjectNotFound(StoreError):
    """The object store holds no object under the key that was asked for."""

    def __init__(self, message: str, *, key: str):
        super().__init__(message)
        self.key = key


class SigningKeyMissing(ConfigError):
    """No signing key is configured and dev mode is off; names the setting to set."""


class SignatureError(SyncError):
    """A signed document (manifest, desired state) does not verify with this process's key."""


class BundleError(SyncError):
    """A model bundle was refused. ``reason`` says what failed (e.g. ``bad-signature``,
    ``blob-hash-mismatch``, ``blob-missing``); nothing was installed."""

    def __init__(self, message: str, *, reason: str, model: str | None = None, version: str | None = None,
                 key: str | None = None):
        super().__init__(message)
        self.reason = reason
        self.model = model
        self.version = version
        self.key = key


class DesiredStateError(SyncError):
    """A desired-state document is invalid, unsigned, or would not advance the generation."""


class RegionSyncFailed(SyncError):
    """Publishing to some regions failed; ``results`` holds the regions that succeeded and
    ``failures`` maps each failed region to its error."""

    def __init__(self, message: str, *, results: dict, failures: dict):
        super().__init__(message)
        self.results = results
        self.failures = failures


# ---- canary rollouts and the audit log (canary/, ebmops/state, ebmops/audit) ----------------------


class RolloutConflict(EbmopsError):
    """A model already has an active (non-terminal) rollout; ``active_id`` names it."""

    exit_code = 10

    def __init__(self, message: str, *, model_name: str, active_id: str | None):
        super().__init__(message)
        self.model_name = model_name
        self.active_id = active_id


class AuditChainBroken(EbmopsError):
    """The audit log's hash chain does not verify; ``first_bad_seq`` names the first bad record."""

    exit_code = 8

    def __init__(self, message: str, *, first_bad_seq: int | None = None):
        super().__init__(message)
        self.first_bad_seq = first_bad_seq
