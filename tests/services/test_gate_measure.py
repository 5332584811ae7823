"""What the gate measures on its window: the labelled holdout's anomalies count for detection quality,
never as drift of normal traffic."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from ebmops.core.settings import load_settings
from ebmops.services.gate import GateSubjects, GateWindow, measure
from tests.conftest import make_synthetic
from training import export_torchscript, fit


def test_feature_drift_and_energy_shift_see_only_the_windows_normal_events(tmp_path):
    ds = make_synthetic(n_normal=3000, n_anomaly=900, seed=3)  # a holdout that is 23 % attacks
    s = load_settings(home=tmp_path / "home", training={"epochs": 2, "min_train_events": 0, "hidden": [16]})
    out = fit(ds, s.training, progress=False)
    path = export_torchscript(out.model, tmp_path / "model.pt")
    x, y = ds.features_array(), ds.frame["label"].to_numpy()
    features = list(ds.schema.features)
    sample = tmp_path / "training_sample.parquet"
    pd.DataFrame(x[y == 0][:2000], columns=features).to_parquet(sample)
    subjects = GateSubjects(candidate=SimpleNamespace(name="ebm-synthetic", version="1", tags={}), champion=None,
                            workdir=tmp_path, candidate_path=path, champion_path=None,
                            calibration_energies=out.calibration_energies, training_sample_path=sample)
    window = pd.DataFrame(x, columns=features)
    m = measure(subjects, s, {}, GateWindow(window, x, (x, y), "holdout"))
    assert m.feature_drift_share == 0.0 and m.drifted_features == []  # the attacks are not drift
    assert m.energy_n_current == int((y == 0).sum())
    assert m.candidate_detection.n_positive == 900  # they count where they belong: detection quality
    # the same events as unlabelled live traffic (a hotfix's window): every event is the window
    live = measure(subjects, s, {}, GateWindow(window, x, None, "live"))
    assert live.feature_drift_share > 0.5 and live.energy_n_current == len(x)


def test_a_recalibrated_copy_runs_the_champions_network_and_a_retrain_does_not(tmp_path):
    import torch

    from ebmops.services.gate import network_digest
    from training.calibrate import set_threshold

    ds = make_synthetic(n_normal=600, n_anomaly=10, seed=4)
    s = load_settings(home=tmp_path / "home", training={"epochs": 1, "min_train_events": 0, "hidden": [8]})
    champion = export_torchscript(fit(ds, s.training, progress=False).model, tmp_path / "champion.pt")
    module = torch.jit.load(str(champion))
    set_threshold(module, 123.0)  # what a recalibrating hotfix does: same network, another threshold
    recalibrated = tmp_path / "recalibrated.pt"
    torch.jit.save(module, str(recalibrated))
    retrained = export_torchscript(fit(ds, load_settings(home=tmp_path / "h2", training={
        "epochs": 1, "min_train_events": 0, "hidden": [8], "seed": 9}).training, progress=False).model,
        tmp_path / "retrained.pt")
    assert network_digest(recalibrated) == network_digest(champion) != network_digest(retrained)
