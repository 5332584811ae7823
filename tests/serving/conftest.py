"""Fixtures of the node tests: a region store with signed bundles, and a real node on loopback.

The node runs under uvicorn (uvloop, httptools: what ``ebmops node`` runs) in a thread of the
test process, on a socket bound to an ephemeral loopback port, so tests reach it over real
HTTP and can still look at its in-process state.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ebmops.core.settings import load_settings
from registry.bundle import publish_bundle
from registry.desired_state import next_desired, read_desired, write_desired
from registry.objectstore import LocalStore
from registry.signing import SigningKey, hmac_key
from tests.registry.sync_fixtures import FEATURES, save_energy_model

MODEL = "ebm-kdd99"
REGION = "eu-west"
SECRET = "s" * 40
THRESHOLDS = {"1": 0.05, "2": 0.08, "3": 0.1, "4": 0.12, "5": 0.2}


@pytest.fixture
def key() -> SigningKey:
    return hmac_key(SECRET)


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore(tmp_path / "store", fsync=False)


@pytest.fixture
def node_settings(tmp_path):
    return load_settings(home=tmp_path / "home", serving={"poll_interval_s": 30.0, "stats_window": 64,
                                                          "max_batch_events": 2500})


def model_file(tmp_path: Path, version: str) -> Path:
    """A distinct tiny TorchScript energy model per version (seed = version)."""
    path = tmp_path / "models" / f"v{version}.pt"
    path.parent.mkdir(exist_ok=True)
    if not path.exists():
        save_energy_model(path, seed=int(version), threshold=THRESHOLDS[version])
    return path


def publish(store, key, tmp_path: Path, version: str) -> Path:
    """Publish ``version`` (bundle only; the desired state is left alone)."""
    path = model_file(tmp_path, version)
    publish_bundle(store, path, model_name=MODEL, version=version, features=FEATURES,
                   threshold=THRESHOLDS[version], gate_verdict="pass", key=key)
    return path


def set_desired(store, key, stable: str, canary: str | None = None, weight: float = 0.0) -> int:
    """Write the next desired state; returns its generation."""
    current = read_desired(store, MODEL, key)
    new = next_desired(current, MODEL, stable_version=stable, canary_version=canary, canary_weight=weight)
    return write_desired(store, new, key).generation


def torch_energies(path: Path, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return torch.jit.load(str(path)).eval()(torch.from_numpy(x.astype(np.float32))).numpy()


@dataclass
class RunningNode:
    url: str
    app: object
    client: httpx.Client

    @property
    def node(self):
        return self.app.state.node

    def score(self, events, keys=None, **kw) -> httpx.Response:
        body = {"events": events.tolist() if isinstance(events, np.ndarray) else events}
        if keys is not None:
            body["keys"] = keys
        return self.client.post("/score", json=body, **kw)

    def wait_ready(self, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            r = self.client.get("/readyz")
            if r.status_code == 200 or time.monotonic() > deadline:
                assert r.status_code == 200, r.text
                return r.json()
            time.sleep(0.05)


@contextmanager
def running_node(settings, store, key, region: str = REGION) -> Iterator[RunningNode]:
    """A node serving ``region`` from ``store`` on an ephemeral loopback port."""
    import uvicorn

    from serving.app import create_app
    from serving.node import uvicorn_config

    app = create_app(settings, region, store=store, key=key)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, host="127.0.0.1", port=port, log_level="warning", settings=settings))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"node-{region}")
    thread.start()
    url = f"{'https' if settings.serving.tls_cert_file else 'http'}://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the node did not start"
        time.sleep(0.02)
    try:
        verify = str(settings.serving.tls_ca_file) if settings.serving.tls_ca_file else True
        with httpx.Client(base_url=url, timeout=20, verify=_ssl(verify)) as client:
            yield RunningNode(url, app, client)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def _ssl(verify):
    if verify is True:
        return True
    import ssl

    return ssl.create_default_context(cafile=verify)


@pytest.fixture
def node_factory(node_settings, store, key):
    """Start nodes on demand (``with node_factory() as n``), all stopped at the end of the test."""
    return lambda **kw: running_node(kw.pop("settings", node_settings), store, key, **kw)


def publish_with_calibration(store, key, tmp_path, version: str, calibration: np.ndarray):
    """Publish a version whose bundle carries its calibration energies (the energy-shift gauge's reference)."""
    path = model_file(tmp_path, version)
    cal = tmp_path / f"cal-{version}.npy"
    np.save(cal, calibration.astype(np.float32))
    publish_bundle(store, path, model_name=MODEL, version=version, features=FEATURES, threshold=THRESHOLDS[version],
                   gate_verdict="pass", key=key, extra_files={"calibration": cal})
    return path


def metric_samples(text: str, model: str | None = MODEL) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} of a Prometheus text page (parsing it proves it is valid).
    With ``model`` (the default model unless None): that model's series, its ``model`` label left out, and
    the node-wide ones (no ``model`` label); another model's series are left out."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = dict(s.labels)
            if model is not None and "model" in labels and s.name != "ebmops_node_region_info":
                if labels.pop("model") != model:
                    continue
            out[(s.name, tuple(sorted(labels.items())))] = s.value
    return out
