"""Fixtures for the validation tests: a synthetic reference and a real kdd99 home."""

from __future__ import annotations

import os

import pytest

from ebmops.core.state import StateStore
from ebmops.core.validation import ReferenceProfile


@pytest.fixture
def profile(synthetic) -> ReferenceProfile:
    return ReferenceProfile.from_frame(synthetic.frame, synthetic.schema, dataset="synthetic")


@pytest.fixture
def batch(synthetic):
    """One region of the synthetic data: a good batch (680 rows)."""
    frame = synthetic.frame
    return frame[frame["region"] == "us-east"].reset_index(drop=True)


@pytest.fixture
def store(settings):
    s = StateStore(settings.resolved_state_url)
    yield s
    s.close()


@pytest.fixture
def kdd99_settings(kdd99, settings):
    """Fresh settings whose data directory sees the session's cached kdd99 Parquet (no re-download)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    os.symlink(kdd99.meta["source"], settings.data_dir / "kdd99.parquet")
    return settings
