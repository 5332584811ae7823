"""What every command needs: resolved settings (the one process-wide cache, ``get_settings``), the
prepared environment, the state store, and the model scope of a command that acts on one model."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from ebmops.core.runtime import prepare_environment
from ebmops.core.settings import Settings, get_settings


def settings() -> Settings:
    s = get_settings()
    prepare_environment(s)  # idempotent: environment defaults, the home folder
    return s


MODEL_HELP = ("Registered model to act on (default: the only one registered, or the configured one; "
              "`ebmops models list` shows them).")


def scope(*, model: str | None = None, dataset: str | None = None, version: str | None = None) -> Settings:
    """The settings scoped to the model the command names (ebmops/services/models.py); several models
    registered and none named is an error listing them."""
    from ebmops.services.models import resolve

    return resolve(settings(), model=model, dataset=dataset, version=version)


def store():
    from ebmops.core.state import open_store

    return open_store(settings())


@contextmanager
def flow_server() -> Iterator[object]:
    """The Prefect server this command's flows report to: a named one, the running stack's, else a temporary
    one that stops with the command (ebmops/tools/prefect_server.py). Says which on stderr (not in --json)."""
    from ebmops.core.console import err_console
    from ebmops.tools.prefect_server import flow_server as _flow_server

    with _flow_server(settings(), announce=lambda m: err_console.print(m, highlight=False, soft_wrap=True)) as srv:
        yield srv
