"""Two `ebmops node` processes for one region, with tokens, as an operator runs them: the control plane
syncs both, `ebmops regions status` lists each, and with one killed the canary judge names it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
import pytest
import yaml

from canary.controller import SamplesUnavailable
from ebmops.core.settings import load_settings
from ebmops.adapters.rollout_ports import RegionTraffic
from ebmops.services.sync import notify_and_wait
from registry.objectstore.factory import store_for_region
from registry.signing import hmac_key
from serving.auth import config_line, new_token
from tests.registry.sync_fixtures import FEATURES
from tests.servers import free_port, wait_http
from tests.serving.conftest import publish, set_desired

REGION = "eu-west"
SECRET = "r" * 40


@pytest.mark.slow
def test_two_node_processes_synced_listed_and_the_dead_one_named(tmp_path):
    home = tmp_path / "home"
    key = hmac_key(SECRET)
    store = store_for_region(load_settings(home=home), REGION)  # <home>/stores/eu-west, what the nodes read
    publish(store, key, tmp_path, "1")
    set_desired(store, key, "1")
    cp_token, app_token = new_token(), new_token()
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": [yaml.safe_load(config_line("control-plane", cp_token,
                                                                            ["read", "admin"]))[0],
                                                 yaml.safe_load(config_line("app", app_token, ["score"]))[0]]}))
    ports = [free_port(), free_port()]
    procs = []
    for i, port in enumerate(ports):
        env = {**os.environ, "EBMOPS_HOME": str(home), "EBMOPS_SYNC__SIGNING_KEY": SECRET,
               "EBMOPS_SERVING__POLL_INTERVAL_S": "60", "EBMOPS_SERVING__AUTH__TOKENS_FILE": str(tokens),
               "EBMOPS_SERVING__INSTALL_DIR": str(tmp_path / f"replica-{i}")}
        env.pop("EBMOPS_CONFIG", None)
        procs.append(subprocess.Popen([sys.executable, "-m", "ebmops.cli.main", "node", "--region", REGION,
                                       "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    cp_env = {"EBMOPS_HOME": str(tmp_path / "cp"), "EBMOPS_SYNC__SIGNING_KEY": SECRET,
              "EBMOPS_SYNC__REGIONS": json.dumps({REGION: {"path": str(home / "stores" / REGION)}}),
              "EBMOPS_SERVING__NODE_URLS": json.dumps({REGION: urls}), "EBMOPS_SERVING__CLIENT_TOKEN": cp_token}
    try:
        for url in urls:
            wait_http(f"{url}/healthz", timeout=60)
        cp = load_settings(home=tmp_path / "cp", sync={"signing_key": SECRET, "regions": {
            REGION: {"path": str(home / "stores" / REGION)}}}, serving={"node_urls": {REGION: urls},
                                                                      "client_token": cp_token})
        out = notify_and_wait(cp, [REGION], "1", wait_s=60.0)
        assert [(r["url"], r["stable_version"]) for r in out[REGION]["replicas"]] == [(u, "1") for u in urls]

        publish(store, key, tmp_path, "2")
        set_desired(store, key, "2")
        out = notify_and_wait(cp, [REGION], "2", wait_s=60.0)  # they poll every 60 s: the reload did it
        assert [r["stable_version"] for r in out[REGION]["replicas"]] == ["2", "2"]

        env = {**os.environ, **cp_env}
        env.pop("EBMOPS_CONFIG", None)
        status = subprocess.run([sys.executable, "-m", "ebmops.cli.main", "regions", "status", "--region", REGION,
                                 "--json"], env=env, capture_output=True, text=True, timeout=120)
        assert status.returncode == 0, status.stdout + status.stderr
        rows = json.loads(status.stdout)["regions"][REGION]["replicas"]
        assert [(r["url"], r["served_stable"]) for r in rows] == [(u, "2") for u in urls]
        table = subprocess.run([sys.executable, "-m", "ebmops.cli.main", "regions", "status", "--region", REGION],
                               env={**env, "COLUMNS": "300"}, capture_output=True, text=True, timeout=120)
        assert all(u in table.stdout for u in urls), table.stdout

        for url in urls:
            r = httpx.post(f"{url}/score", json={"events": [[0.0] * len(FEATURES)]},
                           headers={"Authorization": f"Bearer {app_token}"})
            assert r.status_code == 200 and r.json()["versions"] == ["2"], r.text  # one token, both replicas
        procs[1].send_signal(signal.SIGKILL)
        procs[1].wait(timeout=30)
        with pytest.raises(SamplesUnavailable) as err:
            RegionTraffic(cp).samples(REGION)
        assert urls[1] in str(err.value) and urls[0] not in str(err.value).split("not judged:")[1]
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
