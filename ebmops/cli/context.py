"""What every command needs: resolved settings, the prepared environment, the state store."""

from __future__ import annotations

from functools import lru_cache

from ebmops.runtime import prepare_environment
from ebmops.settings import Settings, get_settings


@lru_cache(maxsize=1)
def settings() -> Settings:
    s = get_settings()
    prepare_environment(s)
    return s


def store():
    from ebmops.state import open_store

    return open_store(settings())
