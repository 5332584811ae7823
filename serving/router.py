"""Sticky stable/canary split of a batch of events (pure; no I/O).

An event with a key goes to the canary when ``bucket(key) < canary_weight``, where the
bucket is the first 8 bytes of sha256(salt + key) read as an integer / 2**64: uniform in
[0, 1), the same for a key on every node and in every request. Because the salt does not
include the desired-state generation, raising the weight from 0.1 to 0.3 keeps every key that
was on the canary there (its bucket did not move) and only adds keys; a user never flips back
and forth between versions during a rollout. Events without a key are split at random with the
same weight: there is nothing to be sticky to.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

_TWO_64 = float(2 ** 64)


def bucket(key: str, salt: str = "") -> float:
    """Where ``key`` falls in [0, 1): stable across processes, machines and generations."""
    digest = hashlib.sha256((salt + key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / _TWO_64


def route_random(n: int, canary_weight: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """Canary mask (bool [n]) for ``n`` events without keys: each is canary with probability ``canary_weight``."""
    if canary_weight <= 0.0 or n == 0:
        return np.zeros(n, dtype=bool)
    if canary_weight >= 1.0:
        return np.ones(n, dtype=bool)
    return (rng or np.random.default_rng()).random(n) < canary_weight


def route(keys: Sequence[str | None], canary_weight: float, *, salt: str = "",
          rng: np.random.Generator | None = None) -> np.ndarray:
    """Canary mask (bool [len(keys)]): sticky by key, random for ``None`` keys."""
    n = len(keys)
    if canary_weight <= 0.0:
        return np.zeros(n, dtype=bool)
    if canary_weight >= 1.0:
        return np.ones(n, dtype=bool)
    mask = route_random(n, canary_weight, rng)
    for i, k in enumerate(keys):
        if k is not None:
            mask[i] = bucket(k, salt) < canary_weight
    return mask
