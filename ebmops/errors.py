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
