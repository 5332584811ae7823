"""``ebmops node`` as an operator runs it: a separate process, settings from the environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from ebmops.core.settings import load_settings
from registry.objectstore.factory import store_for_region
from registry.signing import hmac_key
from tests.registry.sync_fixtures import FEATURES
from tests.servers import free_port, wait_http
from tests.serving.conftest import publish, set_desired


@pytest.mark.slow
def test_ebmops_node_serves_the_regions_default_store(tmp_path):
    home = tmp_path / "home"
    secret = "c" * 40
    key = hmac_key(secret)
    store = store_for_region(load_settings(home=home), "eu-west")  # what the node will read: <home>/stores/eu-west
    publish(store, key, tmp_path, "1")
    set_desired(store, key, "1")
    port = free_port()
    env = {**os.environ, "EBMOPS_HOME": str(home), "EBMOPS_SYNC__SIGNING_KEY": secret,
           "EBMOPS_SERVING__POLL_INTERVAL_S": "0.2"}
    env.pop("EBMOPS_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-m", "ebmops.cli.main", "node", "--region", "eu-west", "--port",
                             str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", timeout=60)
        for _ in range(100):
            if httpx.get(f"{url}/readyz").status_code == 200:
                break
            time.sleep(0.1)
        r = httpx.post(f"{url}/score", json={"events": [[0.0] * len(FEATURES)]})
        assert r.status_code == 200 and r.json()["versions"] == ["1"]
        assert (home / "nodes" / "eu-west" / "ebm-kdd99" / "1" / "model.pt").is_file()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out
