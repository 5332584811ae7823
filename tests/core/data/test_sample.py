"""Seeded row keys and bottom-k samples: the same sample whatever the batches."""

import numpy as np

from ebmops.core.data.sample import BottomK, row_keys, unit_draws


def test_keys_are_distinct_seeded_and_uniform():
    rows = np.arange(200_000)
    k = row_keys(rows, seed=1)
    assert len(np.unique(k)) == len(rows)  # a bijection: no ties
    assert np.array_equal(k, row_keys(rows, seed=1)) and not np.array_equal(k, row_keys(rows, seed=2))
    assert not np.array_equal(k, row_keys(rows, seed=1, salt=7))
    u = unit_draws(rows, seed=1)
    assert 0 <= u.min() and u.max() < 1
    hist, _ = np.histogram(u, bins=10, range=(0, 1))
    assert np.all(np.abs(hist / len(u) - 0.1) < 0.005)


def test_bottom_k_keeps_the_smallest_keys_whatever_the_batches_and_their_order():
    rows = np.arange(50_000)
    keys = row_keys(rows, seed=0)
    expected = np.sort(rows[np.argsort(keys)[:777]])
    for size, reverse in ((100, False), (9_999, False), (1_000, True)):
        s = BottomK(777)
        starts = list(range(0, len(rows), size))
        for a in (reversed(starts) if reverse else starts):
            s.offer(keys[a:a + size], rows[a:a + size])
        got_keys, got = s.result()
        assert np.array_equal(np.sort(got), expected) and np.all(np.diff(got_keys.astype(np.float64)) > 0)
        assert s.offered == len(rows) and len(s) == 777


def test_bottom_k_smaller_than_k_keeps_everything_and_empty_is_none():
    s = BottomK(10)
    s.offer(row_keys(np.arange(4), 0), np.arange(4))
    assert sorted(s.result()[1].tolist()) == [0, 1, 2, 3] and s.bound is None
    assert BottomK(3).result()[1] is None
