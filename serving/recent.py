"""A bounded sample of the events a node scored recently (features and energies), for the drift
report and for hotfixes, which recalibrate or retrain on the region's recent traffic.

Every scored batch is offered; a fixed share is kept (``keep_every``-th event), so a busy node
keeps a sample spread over time rather than only the last burst. Memory is bounded by
``capacity`` rows of float32 features (20 000 x 40 = 3.2 MB by default). Categorical columns keep
their raw (canonical) texts beside the matrix, so a hotfix recalibrates on what clients sent, not
on one version's codes.
"""

from __future__ import annotations

import threading

import numpy as np


class RecentEvents:
    def __init__(self, capacity: int, keep_every: int = 1):
        self.capacity = capacity
        self.keep_every = max(1, keep_every)
        self._x: np.ndarray | None = None
        self._e = np.zeros(capacity, dtype=np.float32)
        self._features: tuple[str, ...] = ()
        self._cats: dict[str, np.ndarray] = {}  # categorical column -> ring of texts (object)
        self._n = 0       # rows written in total
        self._offered = 0
        self._lock = threading.Lock()

    def offer(self, features: tuple[str, ...], x: np.ndarray, energies: np.ndarray,
              cats: dict[str, np.ndarray] | None = None) -> None:
        """Keep every ``keep_every``-th event of a scored batch; ``cats`` are the raw texts of its categorical
        columns (column -> object array of the batch's length), None for a numeric-only model."""
        with self._lock:
            start = (-self._offered) % self.keep_every
            self._offered += len(x)
            cats = cats or {}
            if self.keep_every > 1:
                x, energies = x[start::self.keep_every], energies[start::self.keep_every]
                cats = {c: v[start::self.keep_every] for c, v in cats.items()}
            if not len(x) or self.capacity <= 0:
                return
            if (self._x is None or self._features != tuple(features) or self._x.shape[1] != x.shape[1]
                    or set(self._cats) != set(cats)):
                self._x = np.zeros((self.capacity, x.shape[1]), dtype=np.float32)  # a new schema: start over
                self._cats = {c: np.empty(self.capacity, dtype=object) for c in cats}
                self._features, self._n = tuple(features), 0
            k = len(x)
            if k > self.capacity:
                x, energies, k = x[-self.capacity:], energies[-self.capacity:], self.capacity
                cats = {c: v[-self.capacity:] for c, v in cats.items()}
            # the ring as at most two contiguous slices: cheaper than fancy indexing with arange % capacity
            start = self._n % self.capacity
            first = min(k, self.capacity - start)
            self._x[start:start + first] = x[:first]
            self._e[start:start + first] = energies[:first]
            for c, v in cats.items():
                self._cats[c][start:start + first] = v[:first]
            if first < k:
                self._x[:k - first] = x[first:]
                self._e[:k - first] = energies[first:]
                for c, v in cats.items():
                    self._cats[c][:k - first] = v[first:]
            self._n += k

    def latest(self, n: int) -> tuple[list[str], np.ndarray | list, np.ndarray]:
        """The newest ``n`` kept events (oldest first): feature names, features, energies. The features are a
        float32 matrix, or rows (lists) holding each categorical column's raw text in its place."""
        with self._lock:
            if self._x is None or self._n == 0:
                return list(self._features), np.zeros((0, 0), np.float32), np.zeros(0, np.float32)
            k = min(n, self._n, self.capacity)
            idx = (self._n - k + np.arange(k)) % self.capacity
            x, e = self._x[idx].copy(), self._e[idx].copy()
            if not self._cats:
                return list(self._features), x, e
            rows = x.astype(object)
            for c, ring in self._cats.items():
                rows[:, self._features.index(c)] = ring[idx]
            return list(self._features), rows.tolist(), e
