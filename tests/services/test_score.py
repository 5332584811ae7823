"""Batch scoring (ebmops/services/score.py, serving/batch.py): the version it picks, what it writes,
the memory it holds and a real killed run resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ebmops.core.errors import NoProductionVersion, ScoreOutputConflict
from ebmops.core.waiting import wait_until
from tests.registry.sync_fixtures import FEATURES
from tests.services.score_fixtures import MODEL, REGION, make_setup, reference_energies, run_all, write_source

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return make_setup(tmp_path_factory.mktemp("scoring"))


def test_scores_every_event_with_the_regions_production_version(setup, tmp_path):
    res = run_all(setup.settings(), setup.source, tmp_path / "out", region=REGION)
    assert (res["version"], res["partitions"], res["events"], res["scored_now"]) == ("1", 4, 12000, 4)
    assert "production of eu-west" in res["why"]
    got = pd.read_parquet(tmp_path / "out")
    src = pd.read_parquet(setup.source)
    assert list(got.columns) == ["event_id", "energy", "anomalous", "model", "version"]
    assert got["event_id"].tolist() == src["event_id"].tolist()
    want = reference_energies(setup.models["1"], src[FEATURES].to_numpy())
    np.testing.assert_allclose(got["energy"].to_numpy(), want, rtol=1e-5, atol=1e-6)
    assert (got["anomalous"] == (got["energy"] > 0.05)).all() and got["anomalous"].sum() == res["anomalous"]
    assert set(got["model"]) == {MODEL} and set(got["version"]) == {"1"}


def test_a_named_version_is_fetched_and_verified_from_the_store(setup, tmp_path):
    res = run_all(setup.settings(), setup.source, tmp_path / "out", region=REGION, version="2")
    assert (res["version"], res["why"], res["threshold"]) == ("2", "named with --version", 0.08)
    got = pd.read_parquet(tmp_path / "out")
    want = reference_energies(setup.models["2"], pd.read_parquet(setup.source)[FEATURES].to_numpy())
    np.testing.assert_allclose(got["energy"].to_numpy(), want, rtol=1e-5, atol=1e-6)


def test_a_region_without_a_production_version_is_refused_with_exit_15(setup, tmp_path):
    with pytest.raises(NoProductionVersion, match="region us-east has no desired state") as e:
        run_all(setup.settings(), setup.source, tmp_path / "out", region="us-east")
    assert e.value.exit_code == 15
    assert not (tmp_path / "out").exists()


def test_a_path_source_in_a_region_serving_several_models_needs_model(tmp_path):
    from ebmops.core.errors import ModelAmbiguous
    from registry.bundle import publish_bundle
    from registry.desired_state import desired_models, next_desired, write_desired
    from registry.objectstore import LocalStore
    from registry.signing import hmac_key
    from tests.services.score_fixtures import SECRET

    own = make_setup(tmp_path / "own", partitions=1, rows=300)
    store, key = LocalStore(own.home / "stores" / REGION, fsync=False), hmac_key(SECRET)
    publish_bundle(store, own.models["2"], model_name="ebm-dns", version="1", features=FEATURES, threshold=0.08,
                   gate_verdict="pass", key=key)
    write_desired(store, next_desired(None, "ebm-dns", stable_version="1"), key)
    assert desired_models(store) == ["ebm-dns", MODEL]
    # a path is no dataset of either model: the command says so, names both, and writes nothing
    with pytest.raises(ModelAmbiguous, match="ebm-dns, ebm-kdd99") as e:
        run_all(own.settings(), own.source, tmp_path / "out", region=REGION)
    assert e.value.exit_code == 2 and not (tmp_path / "out").exists()
    named = run_all(own.settings(), own.source, tmp_path / "out", region=REGION, model="ebm-dns")
    assert (named["model"], named["version"], named["threshold"]) == ("ebm-dns", "1", 0.08)
    # a configuration that names its default model keeps scoring paths with it
    configured = run_all(own.settings(registry={"model_name": MODEL}), own.source, tmp_path / "out2", region=REGION)
    assert (configured["model"], configured["version"]) == (MODEL, "1")


def test_an_output_folder_of_another_version_is_refused_and_left_alone(setup, tmp_path):
    run_all(setup.settings(), setup.source, tmp_path / "out", region=REGION)
    before = sorted(p.name for p in (tmp_path / "out").iterdir())
    with pytest.raises(ScoreOutputConflict, match="version was '1', now '2'"):
        run_all(setup.settings(), setup.source, tmp_path / "out", region=REGION, version="2")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == before
    # the same run again scores nothing
    again = run_all(setup.settings(), setup.source, tmp_path / "out", region=REGION)
    assert (again["scored_now"], again["resumed_from"], again["events"]) == (0, 4, 12000)


MEASURE = textwrap.dedent("""
    import json, sys, tracemalloc
    import pyarrow as pa
    from tests.services.score_fixtures import REGION, run_all
    from ebmops.core.settings import load_settings
    home, source, out, budget_mb, mode = sys.argv[1:6]
    s = load_settings(home=home, sync={"signing_key": "s" * 40}, data={"memory_budget_mb": float(budget_mb)})
    import torch  # imported before measuring: its own start-up allocations are not the data's
    tracemalloc.start()
    if mode == "whole-frame":
        import pandas as pd
        frame = pd.read_parquet(source)
    else:
        run_all(s, source, out, region=REGION)
    peak = tracemalloc.get_traced_memory()[1] + pa.default_memory_pool().max_memory()
    print(json.dumps({"peak": peak}))
""")


def _peak(setup, source, out, budget_mb, mode) -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", MEASURE, str(setup.home), str(source), str(out), str(budget_mb), mode],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])["peak"]


def test_a_source_larger_than_the_memory_budget_scores_in_bounded_memory(setup, tmp_path):
    # 24 partitions x 30,000 events x 8 features: 52 MB as float64 columns, under a budget of 8 MB
    source = write_source(tmp_path / "big", partitions=24, rows=30000, seed=3, row_group=4000)
    budget_mb = 8
    whole = _peak(setup, source, tmp_path / "unused", budget_mb, "whole-frame")
    streamed = _peak(setup, source, tmp_path / "out", budget_mb, "score")
    assert whole > 3 * budget_mb * 2**20, "the measurement must catch a whole-frame read"
    assert streamed < budget_mb * 2**20, f"scoring held {streamed / 2**20:.1f} MB of data, over the budget"
    assert len(pd.read_parquet(tmp_path / "out", columns=["energy"])) == 720000


def test_one_partition_larger_than_the_memory_budget_scores_in_bounded_memory(setup, tmp_path):
    source = write_source(tmp_path / "one", partitions=1, rows=480000, seed=4, row_group=4000)
    streamed = _peak(setup, source, tmp_path / "out", 8, "score")
    assert streamed < 8 * 2**20, f"scoring held {streamed / 2**20:.1f} MB of data, over the budget"


KILLED = textwrap.dedent("""
    import sys
    from ebmops.core.settings import load_settings
    from ebmops.services import score as steps
    from tests.services.score_fixtures import REGION
    home, source, out = sys.argv[1:4]
    s = load_settings(home=home, sync={"signing_key": "s" * 40}, data={"batch_rows": 500})
    job = steps.plan(s, source, out, region=REGION)
    src = job.source
    real = type(src).iter_batches

    def iter_batches(self, **kw):  # stop for good in the middle of partition 2, its file half written
        for n, b in enumerate(real(self, **kw)):
            yield b
            if kw.get("partitions") == [2] and n == 3:
                print("MID-PARTITION", flush=True)
                sys.stdin.read()
    type(src).iter_batches = iter_batches
    for i in job.pending:
        steps.score_partition(job, i)
""")


def test_a_killed_run_resumes_and_gives_the_same_files(setup, tmp_path):
    s = setup.settings(data={"batch_rows": 500})
    run_all(s, setup.source, tmp_path / "reference", region=REGION)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = tmp_path / "child.log"
    with open(log, "w") as f:
        child = subprocess.Popen([sys.executable, "-c", KILLED, str(setup.home), str(setup.source), str(out)],
                                 stdin=subprocess.PIPE, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        wait_until(lambda: "MID-PARTITION" in log.read_text(), timeout_s=120, what="the child to reach partition 2",
                   proc=child, log_path=log)
        assert list((out / "_tmp").glob("part-00002.*.parquet")), "partition 2 is being written"
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert sorted(p.name for p in out.glob("part-*.parquet")) == ["part-00000.parquet", "part-00001.parquet"]

    from ebmops.services import score as steps

    job = steps.plan(s, str(setup.source), out, region=REGION)
    assert (job.finished, job.pending) == ([0, 1], [2, 3])
    assert not list((out / "_tmp").iterdir()), "the half-written file was discarded"
    res = steps.summary(job, [steps.score_partition(job, i) for i in job.pending])
    assert (res["scored_now"], res["resumed_from"], res["events"]) == (2, 2, 12000)
    for i in range(4):
        name = f"part-{i:05d}.parquet"
        assert (out / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name


def test_read_ahead_keeps_order_hands_over_a_reader_error_and_stops_with_the_consumer():
    import threading

    from ebmops.services.score import read_ahead

    assert list(read_ahead(iter(range(50)))) == list(range(50))

    def failing():
        yield 1
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in read_ahead(failing()):
            got.append(item)
    assert got == [1]
    before = threading.active_count()
    it = read_ahead(iter(range(10 ** 9)))
    assert next(it) == 0
    it.close()  # the consumer stops early (a failed partition): the reader thread ends with it
    assert threading.active_count() == before
