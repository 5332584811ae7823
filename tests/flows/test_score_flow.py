"""The score flow on a real Prefect server: partitions on a real Dask LocalCluster (prefect-dask), and
`ebmops score` with its thread pool, saying which Prefect server it uses."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from tests.registry.sync_fixtures import FEATURES
from tests.services.score_fixtures import REGION, make_setup, reference_energies

pytestmark = pytest.mark.slow


@pytest.fixture
def scoring_env(tmp_path, monkeypatch):
    setup = make_setup(tmp_path)
    for k, v in setup.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)
    from ebmops.core.settings import get_settings

    get_settings.cache_clear()
    yield setup
    get_settings.cache_clear()


def test_partitions_run_on_a_dask_cluster(prefect_server, scoring_env, tmp_path, monkeypatch):
    from distributed import Client, LocalCluster

    from flows.score import score

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        worker_pids = set(client.run(os.getpid).values())
        monkeypatch.setenv("EBMOPS_ORCHESTRATION__DASK_ADDRESS", cluster.scheduler_address)
        res = score(source=str(scoring_env.source), out=str(tmp_path / "out"), region=REGION)
    assert (res["version"], res["partitions"], res["scored_now"], res["events"]) == ("1", 4, 4, 12000)
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "out" / "_done").glob("*.json"))]
    ran_on = {r["pid"] for r in records}
    assert ran_on <= worker_pids and os.getpid() not in ran_on, "every partition ran on a Dask worker"
    got = pd.read_parquet(tmp_path / "out")
    want = reference_energies(scoring_env.models["1"], pd.read_parquet(scoring_env.source)[FEATURES].to_numpy())
    np.testing.assert_allclose(got["energy"].to_numpy(), want, rtol=1e-5, atol=1e-6)


def test_the_cli_scores_resumes_and_says_which_prefect_server(prefect_server, scoring_env, tmp_path):
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL

    from tests.services.test_score import ROOT

    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_API_URL": PREFECT_API_URL.value()}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "ebmops.cli.main", "score", str(scoring_env.source), "--out",
                               str(out), *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)

    r = cli("--region", REGION, "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"Prefect server: {PREFECT_API_URL.value().removesuffix('/api')} (named by PREFECT_API_URL)" in r.stderr
    res = json.loads(r.stdout)
    assert (res["scored_now"], res["events"]) == (4, 12000)
    (out / "part-00002.parquet").unlink()  # as if the run had been killed before partition 2 finished
    r = cli("--region", REGION)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "1 scored now, 3 from an earlier run" in r.stdout and "12,000" in r.stdout
    r = cli("--region", "us-east")
    assert r.returncode == 15 and "region us-east has no desired state" in r.stderr


def test_a_killed_score_command_resumes_with_the_same_output(prefect_server, scoring_env, tmp_path):
    """`ebmops score` killed with SIGKILL once a partition is done, then run again: the finished
    partitions are kept and the output equals a run that was never killed."""
    import signal
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL

    from ebmops.core.waiting import wait_until
    from tests.services.score_fixtures import run_all, write_source
    from tests.services.test_score import ROOT

    source = write_source(tmp_path / "many", partitions=24, rows=2000, seed=5)
    run_all(scoring_env.settings(), source, tmp_path / "reference", region=REGION)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_API_URL": PREFECT_API_URL.value(),
           "EBMOPS_SCORE__MAX_WORKERS": "1"}
    cmd = [sys.executable, "-m", "ebmops.cli.main", "score", str(source), "--out", str(out), "--region", REGION,
           "--json"]
    log = tmp_path / "first.log"
    with open(log, "w") as f:
        first = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        wait_until(lambda: list((out / "_done").glob("*.json")), timeout_s=180, what="a first finished partition",
                   proc=first, log_path=log, interval_s=0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    kept = len(list((out / "_done").glob("*.json")))
    assert 1 <= kept < 24
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)
    assert (res["resumed_from"], res["scored_now"], res["events"]) == (kept, 24 - kept, 48000)
    for i in range(24):
        name = f"part-{i:05d}.parquet"
        assert (out / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name
