"""A source under data.sources named like a built-in dataset shadows it when streamed, as in ``load_dataset``
(tests/core/data/test_sources.py checks that the built-ins themselves stream)."""

import pandas as pd

from ebmops.core.data.stream import open_source
from ebmops.core.settings import load_settings


def test_a_source_named_like_a_builtin_shadows_it(tmp_path):
    path = tmp_path / "shuttle.csv"
    pd.DataFrame({"id": range(5), "a": [0.1, 0.2, 0.3, 0.4, 0.5], "y": [0, 0, 0, 0, 1]}).to_csv(path, index=False)
    settings = load_settings(home=tmp_path / "home", data={"sources": {"shuttle": {
        "path": str(path), "features": ["a"], "label": "y", "event_id": "id"}}})
    src = open_source("shuttle", settings)
    assert list(src.schema.features) == ["a"] and len(src.read_dataset().frame) == 5
