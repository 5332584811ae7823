"""A model trained on a source with categorical columns: the vocabulary is learnt on the training
rows, encoded inside the exported TorchScript, and the file alone scores raw rows (strings)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from ebmops.core.data import budget, open_source
from ebmops.core.settings import load_settings
from tests.core.data.cat_events import events, source_settings, write_csv
from training import export_torchscript, fit, load_torchscript
from training.model import CategoricalEnergyMLP, EnergyMLP, model_from_state
from training.stream_trainer import train_stream
from training.streaming import learn_vocabulary, prepare

TRAINING = {"epochs": 3, "min_train_events": 150_000, "hidden": [32, 32], "threads": 1}  # ~100 epochs of ~1500 rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cat")
    s = load_settings(home=tmp / "home", data={"sources": {"ev": source_settings(write_csv(tmp / "ev.csv"))},
                                               "batch_rows": 512},
                      training={**TRAINING, "max_categories": 2})
    source = open_source("ev", s)
    split = prepare(source, s.training, budget(s, source.schema.n_features))
    result = train_stream(source, split, s.training, shuffle_rows=1024, progress=False)
    path = export_torchscript(result.model, tmp / "model.pt")
    return s, source, split, result, path


def test_the_vocabulary_comes_from_training_rows_capped_most_frequent_first(trained):
    s, source, split, _result, _path = trained
    # tcp 70 %, udp 30 %; ports 80 and 443 share tcp's rows, 53 all of udp's: the cap of 2 keeps the two
    # most frequent, and a tie would be broken by the text
    assert split.vocabulary["proto"] == ("tcp", "udp")
    assert set(split.vocabulary["port"]) <= {"80", "443", "53"} and len(split.vocabulary["port"]) == 2
    assert split.vocabulary == learn_vocabulary(source, s.training)  # deterministic
    assert np.isin(split.x_calib[:, 0], [0.0, 1.0]).all()  # the samples hold codes


def test_the_exported_file_alone_scores_raw_rows_in_a_fresh_process(trained, tmp_path):
    _s, _source, split, result, path = trained
    assert isinstance(result.model, CategoricalEnergyMLP)
    rows = [["tcp", "80", 10.1, 0.5], ["udp", "53", 2.0, 0.7], ["udp", "80", 10.0, 0.6], ["sctp", "9999", 2.0, 0.5]]
    script = f"""
import json, torch
m = torch.jit.load({str(path)!r}).eval()
rows = {rows!r}
x = torch.zeros(len(rows), 4)
for j in range(4):
    col = [r[j] for r in rows]
    x[:, j] = m.encode(j, col) if j in m.categorical_columns() else torch.tensor(col)
print(json.dumps({{"codes": x[:, :2].tolist(), "energies": m(x).tolist(), "vocab": m.vocabulary(0)}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=tmp_path)
    got = json.loads(out.stdout)
    assert got["vocab"] == ["tcp", "udp"]
    unknown_proto, unknown_port = 2.0, float(len(split.vocabulary["port"]))
    assert got["codes"][3] == [unknown_proto, unknown_port]  # unseen values: the unknown code
    e = got["energies"]
    assert all(np.isfinite(e)) and e[2] > max(e[0], e[1])  # udp on port 80 with tcp's bytes is anomalous
    # the same energies as the training object's, on the same codes
    x = torch.tensor([[*c, r[2], r[3]] for c, r in zip(got["codes"], rows)], dtype=torch.float32)
    with torch.no_grad():
        assert np.allclose(result.model(x).numpy(), e, atol=1e-5)


def test_anomalies_score_above_normal_events(trained):
    _s, _source, split, result, _path = trained
    with torch.no_grad():
        e = result.model(torch.from_numpy(split.x_test)).numpy()
    assert e[split.y_test == 1].mean() > np.quantile(e[split.y_test == 0], 0.9)


def test_state_round_trip_and_numeric_models_stay_plain(trained, tmp_path):
    _s, _source, split, result, path = trained
    again = model_from_state(result.model.spec(), result.model.state_dict())
    x = torch.from_numpy(split.x_test[:20])
    with torch.no_grad():
        assert torch.equal(again(x), result.model(x)) and torch.equal(load_torchscript(path)(x), result.model(x))
    plain = model_from_state({"n_features": 3, "hidden": [4]}, EnergyMLP(3, [4]).state_dict())
    assert type(plain) is EnergyMLP and not hasattr(torch.jit.script(plain), "encode")


def test_in_memory_fit_learns_the_same_kind_of_model(tmp_path):
    from ebmops.core.data import load_dataset

    s = load_settings(home=tmp_path / "home", data={"sources": {"ev": source_settings(write_csv(tmp_path / "e.csv"))}},
                      training=TRAINING)
    out = fit(load_dataset("ev", s), s.training, progress=False)
    assert isinstance(out.model, CategoricalEnergyMLP) and out.split.vocabulary["proto"] == ("tcp", "udp")
    assert out.metrics["ebm_auroc"] > 0.9


def test_a_high_cardinality_column_is_counted_in_bounded_memory_and_capped(tmp_path, monkeypatch):
    import training.streaming as streaming

    frame = events(n=2000)
    frame["port"] = np.where(np.arange(2000) % 2 == 0, 80, np.arange(2000) + 10_000)  # 80, then 1000 one-offs
    s = load_settings(home=tmp_path / "home", data={"sources": {"ev": source_settings(write_csv(tmp_path / "e.csv",
                                                                                                 frame))},
                                                    "batch_rows": 100}, training={**TRAINING, "max_categories": 3})
    monkeypatch.setattr(streaming, "counts_limit", lambda _k: 50)  # prune while counting
    vocab = learn_vocabulary(open_source("ev", s), s.training)
    assert len(vocab["port"]) == 3 and vocab["port"][0] == "80"


def test_every_feature_categorical_trains_and_exports(tmp_path):
    frame = events(n=1500)[["event_id", "proto", "port", "label"]]
    src = {"path": str(write_csv(tmp_path / "e.csv", frame)), "features": ["proto", "port"],
           "categorical": ["proto", "port"], "label": "label", "event_id": "event_id"}
    s = load_settings(home=tmp_path / "home", data={"sources": {"ev": src}}, training=TRAINING)
    source = open_source("ev", s)
    split = prepare(source, s.training, budget(s, 2))
    result = train_stream(source, split, s.training, shuffle_rows=512, progress=False)
    m = load_torchscript(export_torchscript(result.model, tmp_path / "m.pt"))
    x = torch.stack([m.encode(0, ["tcp", "udp"]), m.encode(1, ["80", "80"])], dim=1)
    e = m(x)
    assert e.shape == (2,) and torch.isfinite(e).all() and e[1] > e[0]  # udp on 80 never happened
