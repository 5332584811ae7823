"""The ``ebmops`` command as a user runs it: a subprocess, its exit code, its output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EBMOPS = [sys.executable, "-m", "ebmops.cli.main"]


def run(args, home: Path, **env) -> subprocess.CompletedProcess:
    e = {**os.environ, "EBMOPS_HOME": str(home), "EBMOPS_SYNC__DEV_MODE": "true", "COLUMNS": "200", **env}
    e.pop("EBMOPS_CONFIG", None)
    return subprocess.run(EBMOPS + list(args), capture_output=True, text=True, env=e, timeout=300, cwd=home.parent)


def test_help_lists_every_command(tmp_path):
    r = run(["--help"], tmp_path / "home")
    assert r.returncode == 0, r.stderr
    for cmd in ("train", "validate", "gate", "sync", "regions", "models", "config", "demo"):
        assert cmd in r.stdout


def test_config_show_json_resolves_environment_over_defaults(tmp_path):
    r = run(["config", "show", "--json"], tmp_path / "home", EBMOPS_TRAINING__EPOCHS="7")
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)
    assert cfg["settings"]["training"]["epochs"] == 7 if "settings" in cfg else cfg["training"]["epochs"] == 7


def test_bad_setting_names_the_field_and_exits_2(tmp_path):
    r = run(["config", "show"], tmp_path / "home", EBMOPS_TRAINING__EPOCHS="-3")
    assert r.returncode == 2
    assert "epochs" in r.stderr


def test_train_rejects_an_unknown_device_before_doing_anything(tmp_path):
    home = tmp_path / "home"
    r = run(["train", "--device", "tpu"], home)
    assert r.returncode == 2
    assert "--device" in r.stderr + r.stdout
    assert not (home / "mlflow.db").exists()


def test_sync_rejects_an_unknown_region(tmp_path):
    r = run(["sync", "3", "--region", "mars-1"], tmp_path / "home")
    assert r.returncode == 2
    assert "--region" in r.stderr and "us-east" in r.stderr


def test_models_list_is_empty_json_on_a_fresh_home(tmp_path):
    r = run(["models", "list", "--json"], tmp_path / "home")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []


def test_regions_status_flags_unsynced_regions_and_missing_stores_and_exits_7(tmp_path):
    (tmp_path / "home" / "stores" / "us-east").mkdir(parents=True)  # an empty store; the others do not exist
    r = run(["regions", "status", "--json"], tmp_path / "home", EBMOPS_SERVING__BASE_PORT="1")
    assert r.returncode == 7, r.stderr
    out = json.loads(r.stdout)
    assert out["consistent"] is False
    assert set(out["regions"]) == {"us-east", "eu-west", "ap-south"}
    for region, row in out["regions"].items():
        if region == "us-east":
            assert any(i.startswith("no desired state: nothing was synced") for i in row["issues"]), row
        else:
            assert any(i.startswith("store unreachable") and "does not exist" in i for i in row["issues"]), row
            assert not any("nothing was synced" in i for i in row["issues"])
        assert any("node unreachable" in i for i in row["issues"])


@pytest.mark.slow
def test_validate_quarantines_a_bad_batch_with_exit_3(tmp_path, data_home, kdd99):
    import pandas as pd

    from ebmops.core.settings import load_settings

    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    cached = load_settings(home=data_home).data_dir / "kdd99.parquet"
    (home / "data" / "kdd99.parquet").symlink_to(cached)
    good = pd.read_parquet(cached).head(2000)
    bad = good.copy()
    feat = [c for c in bad.columns if c not in ("event_id", "region", "label")][0]
    bad.loc[bad.index[:50], feat] = 1e9
    good_path, bad_path = tmp_path / "good.parquet", tmp_path / "bad.parquet"
    good.to_parquet(good_path)
    bad.to_parquet(bad_path)
    ok = run(["validate", str(good_path), "--json"], home)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["success"] is True
    r = run(["validate", str(bad_path), "--region", "eu-west"], home)
    assert r.returncode == 3
    assert feat in r.stderr
    assert not bad_path.exists()  # moved into quarantine
    q = run(["quarantine", "list", "--json"], home)
    rows = json.loads(q.stdout)
    assert len(rows) == 1 and rows[0]["region"] == "eu-west"
