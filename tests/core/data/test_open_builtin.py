"""A built-in dataset besides kdd99 opens for streaming (``train --dataset shuttle`` trains from the
stream): the same events, features and regions as ``load_dataset``; a source of the same name shadows it."""

import numpy as np
import pandas as pd

from ebmops.core.data import load_dataset
from ebmops.core.data.stream import open_source
from ebmops.core.settings import load_settings


def test_a_builtin_member_streams_like_load_dataset(data_home):
    settings = load_settings(home=data_home)
    src = open_source("shuttle", settings)
    assert src.name == "shuttle" and src.n_rows == 1013 and src.schema.n_features == 9
    streamed = src.read_dataset().frame.sort_values("event_id").reset_index(drop=True)
    loaded = load_dataset("shuttle", settings).frame.sort_values("event_id").reset_index(drop=True)
    cols = ["event_id", "region", "label", *src.schema.features]
    assert list(streamed[cols].columns) == list(loaded[cols].columns)
    assert (streamed["region"] == loaded["region"]).all() and (streamed["label"] == loaded["label"]).all()
    np.testing.assert_allclose(streamed[list(src.schema.features)].to_numpy(float),
                               loaded[list(src.schema.features)].to_numpy(float))


def test_a_source_named_like_a_builtin_shadows_it(tmp_path, monkeypatch):
    path = tmp_path / "shuttle.csv"
    pd.DataFrame({"id": range(5), "a": [0.1, 0.2, 0.3, 0.4, 0.5], "y": [0, 0, 0, 0, 1]}).to_csv(path, index=False)
    settings = load_settings(home=tmp_path / "home", data={"sources": {"shuttle": {
        "path": str(path), "features": ["a"], "label": "y", "event_id": "id"}}})
    src = open_source("shuttle", settings)
    assert list(src.schema.features) == ["a"] and len(src.read_dataset().frame) == 5
