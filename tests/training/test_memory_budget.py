"""A partitioned Parquet source larger than the memory budget validates and trains within it.

Memory is metered as the peak of what Python and numpy allocate (tracemalloc) plus the peak of
Arrow's memory pool, per stage, after a warm-up that pays for imports and Great Expectations'
context. The budget (3 MB) is set well below the source's size in memory, and the same meter
is shown to exceed it on a whole-frame read of that source: a path that read the source whole
would fail this test.
"""

import tracemalloc

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ebmops.core.data import budget, open_source
from ebmops.core.settings import load_settings
from ebmops.core.validation import validate_source
from training.stream_trainer import train_stream
from training.streaming import prepare

BUDGET_MB = 3
ROWS, PARTS, FEATURES = 100_000, 4, 8


_POOLS = []  # an Arrow pool must outlive every buffer allocated from it: keep them for the session


class Meter:
    """Peak bytes allocated inside the block: tracemalloc's peak plus a fresh Arrow pool's."""

    def __enter__(self):
        self.previous = pa.default_memory_pool()
        self.pool = pa.proxy_memory_pool(self.previous)
        _POOLS.append(self.pool)
        pa.set_memory_pool(self.pool)
        tracemalloc.start()
        return self

    def __exit__(self, *exc):
        self.peak = tracemalloc.get_traced_memory()[1] + self.pool.max_memory()
        tracemalloc.stop()
        pa.set_memory_pool(self.previous)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    root = tmp_path_factory.mktemp("budget") / "events"
    rng = np.random.default_rng(0)
    feats = [f"f{i}" for i in range(FEATURES)]
    for p in range(PARTS):
        n = ROWS // PARTS
        frame = pd.DataFrame(rng.normal(0.5, 0.1, size=(n, FEATURES)), columns=feats)
        frame.insert(0, "event_id", np.arange(p * n, (p + 1) * n))
        frame["label"] = (rng.random(n) < 0.01).astype(np.int8)
        (root / f"day={p}").mkdir(parents=True)
        frame.to_parquet(root / f"day={p}" / "part.parquet", row_group_size=4_000, index=False)
    return root, feats


def _settings(home, path, feats):
    src = {"path": str(path), "features": feats, "label": "label", "event_id": "event_id"}
    return load_settings(home=home, data={"memory_budget_mb": BUDGET_MB, "sources": {"big": src}},
                         training={"epochs": 1, "min_train_events": 0, "hidden": [16, 16], "device": "cpu"})


def _stages(source, settings, sizes):
    profile_and_regions = validate_source(source, settings)
    split = prepare(source, settings.training, sizes)
    result = train_stream(source, split, settings.training, shuffle_rows=sizes.shuffle_rows, progress=False)
    return profile_and_regions, split, result


def test_a_source_larger_than_the_budget_validates_and_trains_within_it(tmp_path, big):
    path, feats = big
    limit = BUDGET_MB * 1024 * 1024
    _stages(open_source("big", _settings(tmp_path / "warm", path / "day=0", feats)),  # imports, GX context
            _settings(tmp_path / "warm", path / "day=0", feats), budget(_settings(tmp_path, path, feats), FEATURES))

    settings = _settings(tmp_path / "home", path, feats)
    source = open_source("big", settings)
    sizes = budget(settings, FEATURES)
    with Meter() as validation:
        _profile, regions = validate_source(source, settings)
    with Meter() as splitting:
        split = prepare(source, settings.training, sizes)
    with Meter() as training:
        result = train_stream(source, split, settings.training, shuffle_rows=sizes.shuffle_rows, progress=False)
    assert sum(r["rows"] for r in regions) == ROWS and all(r["success"] for r in regions)
    assert split.n_train > 0.45 * ROWS and result.epochs_completed == 1
    peaks = {"validate": validation.peak, "split": splitting.peak, "train": training.peak}
    assert all(p < limit for p in peaks.values()), {k: round(v / 2**20, 2) for k, v in peaks.items()}

    with Meter() as whole:
        frame = pd.read_parquet(path)
    assert frame.memory_usage(deep=True).sum() > 2 * limit  # the source is well beyond the budget
    assert whole.peak > limit, "the meter must see a whole-frame read go over the budget"
