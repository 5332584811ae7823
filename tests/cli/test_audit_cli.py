"""``ebmops audit`` as an attacker meets it: the real CLI in a subprocess, on SQLite and the PostgreSQL the
tests start, with the regions' checkpoints on local directories and on the real SeaweedFS S3.

The attacker can write to the state database (plain SQL through sqlite3 / psycopg, and hashlib:
tests/core/state/attacker.py) but holds neither the control plane's signing key nor write access to the
region stores. Cutting the newest record off the log, and editing a record then recomputing every later
hash, both leave a chain that verifies on its own; ``audit verify`` must exit 8 naming each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from ebmops.core.settings import load_settings
from ebmops.core.state import open_store
from ebmops.core.state.audit import AuditLog
from ebmops.services.audit import write_checkpoint
from tests.core.state import attacker

ROOT = Path(__file__).resolve().parents[2]
SECRET = "audit-cli-test-secret-" + "c" * 24
REGIONS = ["us-east", "eu-west"]


def ebmops(args, config: Path, **env) -> subprocess.CompletedProcess:
    e = {**os.environ, "EBMOPS_CONFIG": str(config), "EBMOPS_SYNC__SIGNING_KEY": SECRET, "COLUMNS": "200",
         "PYTHONPATH": str(ROOT), **env}
    for k in ("EBMOPS_HOME", "EBMOPS_STATE_URL", "EBMOPS_SYNC__DEV_MODE"):
        e.pop(k, None)
    return subprocess.run([sys.executable, "-m", "ebmops.cli.main", *args], capture_output=True, text=True, env=e,
                          timeout=300, cwd=config.parent)


@pytest.fixture(params=["local", "s3"])
def config(request, tmp_path, state_url) -> Path:
    """A config file: the state store (SQLite or PostgreSQL, from ``state_url``) and the region stores."""
    regions = {}
    if request.param == "s3":
        server, run = request.getfixturevalue("seaweedfs"), uuid.uuid4().hex[:10]
        regions = {r: {"kind": "s3", "endpoint_url": server.endpoint_url, "access_key": server.access_key,
                       "secret_key": server.secret_key, "bucket": "ebmops-audit-tests", "prefix": f"{run}-{r}"}
                   for r in REGIONS}
    cfg = {"home": str(tmp_path / "home"), "state_url": state_url, "data": {"regions": REGIONS},
           "sync": {"regions": regions}}
    path = tmp_path / "ebmops.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def settings_of(config: Path):
    cfg = yaml.safe_load(config.read_text())
    return load_settings(**{**cfg, "sync": {**cfg["sync"], "signing_key": SECRET}})


def filled(config: Path, n: int = 5, *, checkpoint: bool = True):
    """The control plane at work: ``n`` audited events, then a checkpoint (as after a promotion)."""
    settings = settings_of(config)
    store = open_store(settings)
    try:
        log = AuditLog(store)
        for i in range(n):
            log.append(["registration", "gate", "sync", "rollout_step", "promotion"][i % 5], model="ebm-anomaly",
                       version=str(i // 5 + 1), actor="ebmops-test", payload={"i": i})
        if checkpoint:
            write_checkpoint(settings, store)
    finally:
        store.close()
    return settings


def test_verify_passes_then_catches_the_deleted_last_record(config):
    settings = filled(config)
    ok = ebmops(["audit", "verify", "--json"], config)
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert out["ok"] and out["n_records"] == 5 and out["checkpoint"]["seq"] == 5 and out["n_legacy"] == 0
    assert out["regions_read"] == REGIONS
    attacker.delete_tail(settings.resolved_state_url, 1)
    r = ebmops(["audit", "verify"], config)
    assert r.returncode == 8, r.stderr
    assert "truncated: records after seq 4 are missing" in r.stderr


def test_verify_catches_a_record_edited_and_every_later_hash_recomputed(config):
    settings = filled(config)
    attacker.rewrite(settings.resolved_state_url, 2)
    r = ebmops(["audit", "verify", "--json"], config)
    assert r.returncode == 8, r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] is False and out["first_bad_seq"] == 2
    assert out["problem"].startswith("rewritten: record 2") and "record 2" in r.stderr


@pytest.mark.parametrize("state_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("config", ["local"], indirect=True)
def test_checkpoint_command_and_the_people_view(config):
    settings = filled(config, 3, checkpoint=False)
    r = ebmops(["audit", "verify"], config)
    assert r.returncode == 0, r.stderr
    assert "checkpoint: none in the region stores yet" in r.stdout and "audit log ok" in r.stdout
    r = ebmops(["audit", "checkpoint", "--json"], config)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["regions"] == {"us-east": "ok", "eu-west": "ok"}
    r = ebmops(["audit", "verify"], config)
    assert r.returncode == 0 and "checkpoint: seq 3" in r.stdout, r.stdout + r.stderr
    attacker.delete_tail(settings.resolved_state_url, 1)
    r = ebmops(["audit", "checkpoint"], config)
    assert r.returncode == 8 and "not writing a checkpoint over a broken audit log" in r.stderr
    r = ebmops(["audit", "verify"], config, EBMOPS_SYNC__SIGNING_KEY="")
    assert r.returncode == 2 and "EBMOPS_SYNC__SIGNING_KEY" in r.stderr
