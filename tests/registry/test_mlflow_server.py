"""The same registry against a real MLflow tracking server (REST store, proxied artifacts)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ebmops.core.errors import RegistryError
from registry import ModelRegistry
from tests.registry.conftest import FEATURES, save_scripted
from tests.servers import free_port, wait_http

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server_uri(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'server.db'}", "--artifacts-destination", str(root / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=root, env=env, stdout=open(root / "server.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=90)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_round_trip_through_a_tracking_server(server_uri, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")  # restored after the test
    reg = ModelRegistry(server_uri, "ebm-anomaly", "ebmops", http_max_retries=1, http_timeout_s=10)
    scripted = save_scripted(tmp_path / "m.pt", seed=3, threshold=0.25)
    x = np.random.default_rng(0).random((5, len(FEATURES)), dtype=np.float32)
    common = dict(params={"epochs": 1}, metrics={"auroc": 0.9}, tags={"dataset": "synthetic"}, scripted_path=scripted,
                  input_example=x, threshold=0.25, feature_names=FEATURES, device="cpu", data_fingerprint="fp")

    first = reg.register(reg.log_training_run(**common))
    second = reg.register(reg.log_training_run(**common))
    assert reg.register(second.run_id).version == second.version == "2"

    assert reg.move_alias("champion", first.version) is None
    assert [(v.version, v.aliases) for v in reg.list_versions()] == [("2", ["challenger"]), ("1", ["champion"])]
    loaded = reg.load_torchscript(reg.resolve("@champion").version)
    assert torch.equal(loaded(torch.from_numpy(x)), torch.jit.load(str(scripted))(torch.from_numpy(x)))
    assert reg.model_metadata(2)["threshold"] == 0.25
    with pytest.raises(RegistryError, match="no version 5"):
        reg.get_version(5)
