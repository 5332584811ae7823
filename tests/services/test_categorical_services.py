"""Categorical models in the services: the gate scores a window through each model's own vocabulary (a
champion trained on other data numbers its categories its own way), and a hotfix reads the recent raw texts
through the served model's."""

from __future__ import annotations

import numpy as np
import torch

from ebmops.core.data import load_dataset
from ebmops.core.settings import load_settings
from ebmops.services.gate import _energies, window
from tests.core.data.cat_events import FEATURES, events, raw_energies, source_settings, write_csv
from training import export_torchscript, fit

TRAINING = {"epochs": 3, "min_train_events": 0, "hidden": [16], "threads": 1}


def _model(tmp_path, name: str, frame) -> tuple:
    s = load_settings(home=tmp_path / f"home-{name}", data={"dataset": name, "sources": {
        name: source_settings(write_csv(tmp_path / f"{name}.csv", frame))}}, training=TRAINING)
    out = fit(load_dataset(name, s), s.training, progress=False)
    return s, export_torchscript(out.model, tmp_path / f"{name}.pt")


def test_a_champion_scores_the_window_in_its_own_codes(tmp_path):
    cand_settings, cand = _model(tmp_path, "cand", events(seed=0))  # tcp is the most frequent: code 0
    flipped = events(seed=1)
    flipped["proto"] = flipped["proto"].map({"tcp": "udp", "udp": "tcp"})  # udp the most frequent: code 0
    _, champ = _model(tmp_path, "champ", flipped)
    assert torch.jit.load(str(cand)).vocabulary(0)[0] != torch.jit.load(str(champ)).vocabulary(0)[0]

    win = window(cand_settings)
    x, vocab = win.x, win.vocabulary
    rows = [[vocab["proto"][int(r[0])], vocab["port"][int(r[1])], float(r[2]), float(r[3])] for r in x[:200]]
    e_champ, _ = _energies(champ, x[:200], win)
    assert np.allclose(e_champ, raw_energies(champ, rows), atol=1e-5)  # what a node would score from raw rows
    e_naive, _ = _energies(champ, x[:200])  # the candidate's codes read as the champion's
    assert not np.allclose(e_naive, e_champ, atol=1e-3)
    e_cand, _ = _energies(cand, x[:200], win)
    assert np.allclose(e_cand, raw_energies(cand, rows), atol=1e-5)


def test_a_recent_window_of_raw_texts_is_encoded_for_each_model(tmp_path):
    import pandas as pd

    cand_settings, cand = _model(tmp_path, "cand", events(seed=0))
    rows = [["tcp", "80", 10.0, 0.5], ["udp", "53", 2.0, 1.0], ["sctp", "9", 2.0, 1.0]]  # sctp: unseen
    recent = tmp_path / "recent.parquet"
    pd.DataFrame(rows, columns=FEATURES).assign(energy=0.0).to_parquet(recent)
    win = window(cand_settings, str(recent))
    e, _ = _energies(cand, win.x, win)
    assert np.allclose(e, raw_energies(cand, rows), atol=1e-5)


def test_a_hotfix_reads_the_recent_raw_texts_in_the_served_models_own_codes(tmp_path):
    """Recent events (as fetch_recent writes them: categorical columns as the texts the node kept) become a
    dataset with the model's categorical schema, and the served model's input through its own vocabulary."""
    import pandas as pd

    from ebmops.services.drift import model_input, recent_dataset

    settings, path = _model(tmp_path, "cand", events(seed=0))
    rows = [["tcp", "443", 10.0, 0.5], ["udp", "53", 2.0, 1.0], ["sctp", "9", 2.0, 1.0]]
    recent = tmp_path / "recent.parquet"
    pd.DataFrame(rows, columns=FEATURES).assign(energy=0.0).to_parquet(recent)
    ds = recent_dataset(settings, "eu-west", recent)
    assert ds.schema.categorical == ("proto", "port") and ds.schema.features == tuple(FEATURES)
    module = torch.jit.load(str(path)).eval()
    with torch.no_grad():
        e = module(torch.from_numpy(model_input(module, ds))).numpy()
    assert np.allclose(e, raw_energies(path, rows), atol=1e-5)
