"""Kill a real training process with SIGKILL mid-run, resume it, and get the weights of a run
that was never interrupted.

The runner is ``python -m training.run SPEC.json``. Epochs are made slow enough (a small
batch size on a few thousand rows, one thread) that the kill, sent as soon as the checkpoint
of epoch 2 exists, lands well before the last epoch; the test checks that it did.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ebmops.core.settings import TrainingSettings
from tests.conftest import make_synthetic
from tests.training.helpers import same_weights
from training import CHECKPOINT_NAME, model_from_state, train_energy_model

REPO = Path(__file__).resolve().parents[2]
TRAINING = dict(hidden=[64, 64], epochs=8, batch_size=16, lr=1e-3, device="cpu", threads=1, seed=3, min_train_events=0)
KILL_AFTER_EPOCH = 2


def _checkpoint_epoch(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except FileNotFoundError:
        return 0


def _start(spec_path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "training.run", str(spec_path)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    x = make_synthetic(n_normal=1500, n_anomaly=0, n_features=8, seed=1).features_array()
    np.save(tmp_path / "x.npy", x)
    ckpt_dir = tmp_path / "ckpt"
    spec = {"x_train": str(tmp_path / "x.npy"), "training": TRAINING, "checkpoint_dir": str(ckpt_dir),
            "resume": True, "output": str(tmp_path / "model.pt")}
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))

    proc = _start(spec_path)
    deadline = time.monotonic() + 120
    try:
        while _checkpoint_epoch(ckpt_dir / CHECKPOINT_NAME) < KILL_AFTER_EPOCH:
            assert proc.poll() is None, f"runner exited early: {proc.communicate()}"
            assert time.monotonic() < deadline, "no checkpoint for epoch 2 within 120 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = _checkpoint_epoch(ckpt_dir / CHECKPOINT_NAME)
    assert KILL_AFTER_EPOCH <= killed_at < TRAINING["epochs"], "the kill did not land mid-training"
    assert not (tmp_path / "model.pt").exists()

    resumed = _start(spec_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["resumed_from_epoch"] == killed_at and summary["epochs_completed"] == TRAINING["epochs"]
    assert [p.name for p in ckpt_dir.iterdir()] == [CHECKPOINT_NAME]  # no torn or temporary files left

    saved = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    from_killed_run = model_from_state(saved["spec"], saved["state_dict"])
    straight = train_energy_model(np.load(tmp_path / "x.npy"), TrainingSettings(**TRAINING), progress=False)
    assert same_weights(from_killed_run, straight.model)


def test_runner_refuses_invalid_settings_with_exit_code_2(tmp_path, capsys):
    from training.run import main

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"x_train": str(tmp_path / "missing.npy"), "training": {"epochs": 0}}))
    assert main([str(spec)]) == 2
    assert "epochs" in capsys.readouterr().err
