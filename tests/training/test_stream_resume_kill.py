"""Kill a real streamed-training process with SIGKILL in the middle of an epoch, resume it, and
get the weights of a run that was never interrupted.

The runner is ``python -m training.run SPEC.json`` with a ``source`` (a partitioned Parquet
directory). Windows are made slow enough (a small minibatch, one thread) that the kill, sent as
soon as the checkpoint of the second window of epoch 2 exists, lands inside that epoch; the test
checks that it did (the checkpoint on disk has a cursor), and that the resumed run continued
from that cursor rather than from the epoch's start.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from ebmops.core.data import budget, open_path
from ebmops.core.settings import TrainingSettings, load_settings
from tests.conftest import make_synthetic
from tests.training.helpers import same_weights, write_parts
from training import CHECKPOINT_NAME, model_from_state
from training.stream_trainer import train_stream
from training.streaming import prepare

REPO = Path(__file__).resolve().parents[2]
TRAINING = dict(hidden=[64, 64], epochs=2, min_train_events=0, batch_size=16, lr=1e-3, device="cpu", threads=1, seed=3)
BATCH_ROWS, SHUFFLE_ROWS = 200, 300


def _state(path: Path) -> dict | None:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, EOFError, RuntimeError):
        return None


def _start(spec_path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "training.run", str(spec_path)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path):
    ds = make_synthetic(n_normal=4000, n_anomaly=0, n_features=8, seed=1)
    path = write_parts(tmp_path / "events", ds.frame, parts=4)
    features = list(ds.schema.features)
    ckpt_dir = tmp_path / "ckpt"
    spec = {"source": {"path": str(path), "features": features, "label": "label", "event_id": "event_id"},
            "batch_rows": BATCH_ROWS, "shuffle_rows": SHUFFLE_ROWS, "training": TRAINING,
            "checkpoint_dir": str(ckpt_dir), "resume": True, "output": str(tmp_path / "model.pt")}
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))

    proc = _start(spec_path)
    deadline = time.monotonic() + 180
    try:
        while True:
            state = _state(ckpt_dir / CHECKPOINT_NAME)
            if state and state["epoch"] == 1 and state["cursor"] and state["cursor"]["window"] >= 2:
                break
            assert proc.poll() is None, f"runner exited early: {proc.communicate()}"
            assert time.monotonic() < deadline, "no mid-epoch checkpoint within 180 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed = _state(ckpt_dir / CHECKPOINT_NAME)
    assert killed["epoch"] == 1 and killed["cursor"] is not None, "the kill did not land inside epoch 2"
    assert not (tmp_path / "model.pt").exists()

    resumed = _start(spec_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["epochs_completed"] == TRAINING["epochs"] and summary["resumed_from_epoch"] == 1
    assert f"at window {killed['cursor']['window']}" in summary["message"]  # continued at the same batch
    assert [p.name for p in ckpt_dir.iterdir()] == [CHECKPOINT_NAME]

    saved = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    cfg = TrainingSettings(**TRAINING)
    sizes = budget(load_settings(training=TRAINING, data={"batch_rows": BATCH_ROWS}), len(features))
    source = open_path(str(path), name="source", features=features, label="label", event_id="event_id",
                       regions=["us-east", "eu-west", "ap-south"], batch_rows=sizes.batch_rows)
    straight = train_stream(source, prepare(source, cfg, sizes), cfg, shuffle_rows=SHUFFLE_ROWS, progress=False)
    assert same_weights(model_from_state(saved["spec"], saved["state_dict"]), straight.model)
