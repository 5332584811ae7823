"""Seeded, order-free row keys and bounded samples of a stream.

Every event of a streamed source has a global row number (its place in the source's fixed
order). :func:`row_keys` hashes ``(seed, salt, row)`` with SplitMix64 into a 64-bit key: a
bijection on row numbers, so keys never tie, and uniform, so ``key / 2**64`` is a uniform
draw per event that is the same in every pass, process and batch size.

Two uses, both with memory independent of the number of events:

* **splits**: an event goes to a part by where its uniform draw falls (:func:`unit_draws`);
* **samples**: :class:`BottomK` keeps the ``k`` events with the smallest keys seen so far, a
  uniform sample without replacement (a seeded reservoir) whose content does not depend on
  the batch size or on the order batches arrive in.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

import numpy as np

_GOLDEN = 0x9E3779B97F4A7C15
_MASK = (1 << 64) - 1
T = TypeVar("T")


def row_keys(rows: np.ndarray, seed: int, salt: int = 0) -> np.ndarray:
    """uint64 SplitMix64 keys of global row numbers ``rows`` for ``(seed, salt)``."""
    offset = np.uint64(((int(seed) * 0x2545F4914F6CDD1D) ^ (int(salt) * _GOLDEN)) & _MASK)
    with np.errstate(over="ignore"):
        z = np.asarray(rows).astype(np.uint64) * np.uint64(_GOLDEN) + offset
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def unit_draws(rows: np.ndarray, seed: int, salt: int = 0) -> np.ndarray:
    """One uniform float64 draw in [0, 1) per row, from :func:`row_keys`."""
    return (row_keys(rows, seed, salt) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


class BottomK(Generic[T]):
    """The ``k`` rows with the smallest keys among everything offered.

    ``take(payload, idx)`` selects rows of a payload (a numpy array, a dict of arrays, an Arrow
    table) and ``concat(payloads)`` joins them; both default to numpy arrays. Memory: at most
    about ``2 k`` rows, whatever was offered."""

    def __init__(self, k: int, *, take: Callable[[T, np.ndarray], T] | None = None,
                 concat: Callable[[list[T]], T] | None = None):
        self.k = int(k)
        self._take = take or (lambda p, i: p[i])
        self._concat = concat or (lambda ps: np.concatenate(ps))
        self._keys: list[np.ndarray] = []
        self._payloads: list[T] = []
        self._pending = 0
        self._bound: np.uint64 | None = None  # largest kept key once k rows are held
        self.offered = 0

    @property
    def bound(self) -> np.uint64 | None:
        """Keys at or above this cannot enter the sample any more (None while it is not full):
        callers may drop those rows before building a payload for them."""
        return self._bound

    def offer(self, keys: np.ndarray, payload: T) -> None:
        self.offered += len(keys)
        if self._bound is not None:
            idx = np.flatnonzero(keys < self._bound)
            if len(idx) == 0:
                return
            keys, payload = keys[idx], self._take(payload, idx)
        self._keys.append(keys)
        self._payloads.append(payload)
        self._pending += len(keys)
        if self._pending >= 2 * self.k:
            self._compact()

    def _compact(self) -> None:
        if not self._keys:
            return
        keys = np.concatenate(self._keys)
        payload = self._concat(self._payloads) if len(self._payloads) > 1 else self._payloads[0]
        if len(keys) > self.k:
            keep = np.argpartition(keys, self.k - 1)[:self.k]
            keys, payload = keys[keep], self._take(payload, keep)
        self._keys, self._payloads, self._pending = [keys], [payload], len(keys)
        if len(keys) >= self.k:
            self._bound = keys.max()

    def result(self) -> tuple[np.ndarray, T | None]:
        """(keys, payload) of the sample, sorted by key; payload None when nothing was kept."""
        self._compact()
        if not self._keys:
            return np.empty(0, dtype=np.uint64), None
        order = np.argsort(self._keys[0], kind="stable")
        return self._keys[0][order], self._take(self._payloads[0], order)

    def __len__(self) -> int:
        return min(self.k, self._pending)
