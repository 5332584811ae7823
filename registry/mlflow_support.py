"""MLflow plumbing for the registry: clients, quiet logging, and errors that say what to do.

MLflow is imported inside these functions, never at module import, so ``import registry`` stays
cheap. Every call into MLflow runs inside ``translate(...)``, which turns MLflow's exceptions (and
the connection errors underneath them) into ``RegistryError`` with a message naming the store and
the next step.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ebmops.core.errors import RegistryError

# Aliases follow MLflow's rules; checking them before any write keeps a bad alias from
# leaving a half-registered version behind.
_ALIAS_RE = re.compile(r"^[\w\-]{1,255}$")
_RESERVED_ALIAS_RE = re.compile(r"^(latest|[vV]\d+)$", re.IGNORECASE)
_ID_RE = re.compile(r"^[\w\-]{1,64}$")
_GLOBAL_URI_LOCK = threading.RLock()
_TRACKING_HINT = ("check that the tracking server is up and that registry.tracking_uri "
                  "(EBMOPS_REGISTRY__TRACKING_URI) names it")


def redact(uri: str) -> str:
    """The URI with any password replaced, for messages and logs."""
    return re.sub(r"(://[^/:@]+):[^/@]*@", r"\1:***@", uri)


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS_RE.match(alias):
        raise RegistryError(f"invalid alias {alias!r}: use letters, digits, '_' and '-' (e.g. 'champion')")
    if _RESERVED_ALIAS_RE.match(alias):
        raise RegistryError(f"alias {alias!r} is reserved by MLflow ('latest' and 'v<number>'); pick another name")
    return alias


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _ID_RE.match(run_id):
        raise RegistryError(f"invalid run id {run_id!r}: expected MLflow's 32-character hex id")
    return run_id


def apply_http_settings(max_retries: int | None, timeout_s: int | None) -> None:
    """Bound how long a call to an unreachable tracking server may hang.

    MLflow reads these environment variables on every request; its defaults (7 retries with
    exponential backoff, 120 s timeout) make a down server look like a hang of minutes.
    """
    if max_retries is not None:
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(int(max_retries))
    if timeout_s is not None:
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(int(timeout_s))


def prepare_local_store(tracking_uri: str) -> None:
    """Create the directory of a SQLite tracking database, which MLflow does not do itself."""
    if tracking_uri.startswith("sqlite:///"):
        path = tracking_uri[len("sqlite:///"):].split("?", 1)[0]
        if path and path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)


def make_client(tracking_uri: str):
    """An MlflowClient whose tracking and registry both live at ``tracking_uri``."""
    from mlflow import MlflowClient

    # Noise for a CLI and for flow logs: schema creation and "waiting for model version" INFO
    # lines, per-run URL prints and download progress bars. Settings the user made are kept.
    for name in ("mlflow.store.db.utils", "alembic.runtime.migration", "mlflow.store.model_registry.abstract_store"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    prepare_local_store(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


@contextmanager
def use_tracking_uri(tracking_uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (which ``log_model`` needs) at this store for the duration only.

    Both MLflow's module-level URI and the ``MLFLOW_TRACKING_URI`` variable it mirrors are put
    back afterwards, so a URI the user set for other tools survives.
    """
    import mlflow
    from mlflow.tracking._tracking_service import utils

    # The URI is process-wide: the lock keeps two threads (e.g. Prefect's thread task runner)
    # from pointing each other's calls at the wrong store.
    with _GLOBAL_URI_LOCK:
        previous, previous_env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(tracking_uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous)
            if previous_env is not None:
                os.environ["MLFLOW_TRACKING_URI"] = previous_env


@contextmanager
def quiet_model_logging() -> Iterator[None]:
    """Silence the warnings MLflow and torch print for every TorchScript model logged as 'pickle'.

    The pickle warning does not apply (a TorchScript archive is not unpickled on load) and the
    torch.load warning comes from MLflow's own check that the input example can be served.
    """
    logger = logging.getLogger("mlflow.pytorch")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*looks like a TorchScript archive.*")
            yield
    finally:
        logger.setLevel(level)


def is_not_found(exc: BaseException) -> bool:
    return getattr(exc, "error_code", None) in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


@contextmanager
def translate(action: str, tracking_uri: str, *, not_found: str | None = None) -> Iterator[None]:
    """Run MLflow calls, turning their failures into ``RegistryError``.

    Args:
        action: what was being done, for the message ("registering run abc").
        tracking_uri: the store, named in the message (password redacted).
        not_found: the message for a "does not exist" answer, when the caller has a better one.
    """
    from mlflow.exceptions import MlflowException

    where = redact(tracking_uri)
    try:
        yield
    except RegistryError:
        raise
    except MlflowException as e:
        text = e.message if hasattr(e, "message") else str(e)
        if not_found and is_not_found(e):
            raise RegistryError(not_found) from e
        if "API request to" in text and "failed with exception" in text:
            raise RegistryError(f"{action} failed: the tracking server {where} could not be reached; "
                                f"{_TRACKING_HINT}. ({_shorten(text)})") from e
        if e.error_code == "INVALID_PARAMETER_VALUE":
            raise RegistryError(f"{action} failed: {_shorten(text)}") from e
        raise RegistryError(f"{action} failed on tracking store {where}: {_shorten(text)}") from e
    except (OSError, ConnectionError) as e:
        raise RegistryError(f"{action} failed: {where} could not be reached or written ({e}); {_TRACKING_HINT}") from e
    except Exception as e:
        # SQLAlchemy and requests errors surface untyped from some store paths.
        if type(e).__module__.split(".")[0] in ("sqlalchemy", "requests", "urllib3"):
            raise RegistryError(f"{action} failed: tracking store {where} refused the call "
                                f"({type(e).__name__}: {_shorten(str(e))}); {_TRACKING_HINT}") from e
        raise


def _shorten(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
