"""What every command needs: resolved settings (the one process-wide cache, ``get_settings``), the
prepared environment, the state store."""

from __future__ import annotations

from ebmops.core.runtime import prepare_environment
from ebmops.core.settings import Settings, get_settings


def settings() -> Settings:
    s = get_settings()
    prepare_environment(s)  # idempotent: environment defaults, the home folder
    return s


def store():
    from ebmops.core.state import open_store

    return open_store(settings())
