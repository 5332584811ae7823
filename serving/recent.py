"""A bounded sample of the events a node scored recently (features and energies), for the drift
report and for hotfixes, which recalibrate or retrain on the region's recent traffic.

Every scored batch is offered; a fixed share is kept (``keep_every``-th event), so a busy node
keeps a sample spread over time rather than only the last burst. Memory is bounded by
``capacity`` rows of float32 features (20 000 x 40 = 3.2 MB by default).
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
        self._n = 0       # rows written in total
        self._offered = 0
        self._lock = threading.Lock()

    def offer(self, features: tuple[str, ...], x: np.ndarray, energies: np.ndarray) -> None:
        with self._lock:
            start = (-self._offered) % self.keep_every
            self._offered += len(x)
            if self.keep_every > 1:
                x, energies = x[start::self.keep_every], energies[start::self.keep_every]
            if not len(x) or self.capacity <= 0:
                return
            if self._x is None or self._features != tuple(features) or self._x.shape[1] != x.shape[1]:
                self._x = np.zeros((self.capacity, x.shape[1]), dtype=np.float32)  # a new schema: start over
                self._features, self._n = tuple(features), 0
            k = len(x)
            if k > self.capacity:
                x, energies, k = x[-self.capacity:], energies[-self.capacity:], self.capacity
            # the ring as at most two contiguous slices: cheaper than fancy indexing with arange % capacity
            start = self._n % self.capacity
            first = min(k, self.capacity - start)
            self._x[start:start + first] = x[:first]
            self._e[start:start + first] = energies[:first]
            if first < k:
                self._x[:k - first] = x[first:]
                self._e[:k - first] = energies[first:]
            self._n += k

    def latest(self, n: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        """The newest ``n`` kept events (oldest first): feature names, features, energies."""
        with self._lock:
            if self._x is None or self._n == 0:
                return list(self._features), np.zeros((0, 0), np.float32), np.zeros(0, np.float32)
            k = min(n, self._n, self.capacity)
            idx = (self._n - k + np.arange(k)) % self.capacity
            return list(self._features), self._x[idx].copy(), self._e[idx].copy()
