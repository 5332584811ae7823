"""Process set-up shared by the CLI, the flows and the nodes.

Environment defaults must be in place before Prefect, MLflow or Great Expectations are
imported: they read some settings at import time.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Iterator, Mapping

from ebmops.core.settings import Settings

_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # A fresh temporary server needed 21 s once, over Prefect's 20 s default.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
    "GIT_PYTHON_REFRESH": "quiet",
}


def prepare_environment(settings: Settings) -> None:
    """Set process-wide defaults (never overriding what the user exported)."""
    for k, v in _DEFAULTS.items():
        os.environ.setdefault(k, v)
    # Without an API URL Prefect starts a temporary server; keep its database under our home
    # so a demo leaves the user's ~/.prefect alone.
    if "PREFECT_API_URL" not in os.environ:
        os.environ.setdefault("PREFECT_HOME", str(settings.home / "prefect"))
    settings.home.mkdir(parents=True, exist_ok=True)
    for noisy in ("alembic", "mlflow", "great_expectations", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextmanager
def env_overrides(values: Mapping[str, object]) -> Iterator[None]:
    """Set environment variables for the block and restore them after; settings are re-read on both
    sides (``get_settings`` caches them). For the demo's acts, benchmarks and tests."""
    from ebmops.core.settings import get_settings

    old = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    get_settings.cache_clear()
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()
