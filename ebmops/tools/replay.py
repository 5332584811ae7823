"""Replay events to regional nodes in the background: live traffic for demos, rollouts and tests.

Each region gets its own thread sending ``batch``-event ``/score`` requests at ``rate`` requests
per second with event keys (so the canary split is sticky, as with real clients). It counts
requests, events, errors and latencies per region and per serving version, so a caller can
print what each region served and how fast. ``shift`` adds a constant to chosen feature columns
from a given moment on: the demo's drifted traffic.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


@dataclass
class RegionTraffic:
    region: str
    url: str
    requests: int = 0
    events: int = 0
    errors: int = 0
    latencies_ms: list = field(default_factory=list)
    versions: dict = field(default_factory=dict)   # version -> events scored
    last_error: str | None = None
    started: float = field(default_factory=time.perf_counter)

    def summary(self) -> dict:
        lat = np.asarray(self.latencies_ms[-5000:]) if self.latencies_ms else np.empty(0)
        secs = max(time.perf_counter() - self.started, 1e-9)
        return {"region": self.region, "requests": self.requests, "events": self.events, "errors": self.errors,
                "events_per_s": self.events / secs,
                "p50_ms": float(np.quantile(lat, 0.5)) if len(lat) else None,
                "p99_ms": float(np.quantile(lat, 0.99)) if len(lat) else None,
                "versions": dict(self.versions), "last_error": self.last_error}


def drifted_slice(events: np.ndarray, *, min_rows: int = 2000) -> np.ndarray:
    """A drifted slice of real traffic: the events whose most variable feature (with at least
    ``min_rows`` events in its top quartile) sits in that top quartile; values stay within the
    ranges seen in training, only the mix moves. Falls back to every event shifted by 0.1."""
    pool = np.asarray(events, dtype=np.float32)
    for j in np.argsort(-pool.var(axis=0)):
        sl = pool[pool[:, j] > np.quantile(pool[:, j], 0.75)]
        if len(sl) >= min_rows:
            return sl
    return np.clip(pool + 0.1, 0.0, 1.0)


class Replayer:
    """Background replay of ``events`` (rows of features) to each region's node: to ``/score`` (the node's
    default model), or with ``model`` to ``/v1/models/<model>/score``."""

    def __init__(self, urls: dict[str, str], events: np.ndarray, *, batch: int = 64, rate: float = 20.0,
                 seed: int = 0, model: str | None = None):
        self.urls = urls
        self.path = f"/v1/models/{model}/score" if model else "/score"
        self.events = np.asarray(events, dtype=np.float32)
        self.batch = batch
        self.rate = rate
        self.seed = seed
        self.traffic = {r: RegionTraffic(r, u) for r, u in urls.items()}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._shift: dict[str, tuple[np.ndarray, float]] = {}
        self._pools: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def shift(self, region: str, columns: Sequence[int], by: float) -> None:
        """From now on, add ``by`` to ``columns`` of every event sent to ``region`` (clipped to [0, 1])."""
        with self._lock:
            self._shift[region] = (np.asarray(columns, dtype=int), by)

    def replace_events(self, region: str, events: np.ndarray) -> None:
        """From now on, replay ``events`` to ``region`` (a drifted slice of traffic)."""
        events = np.asarray(events, dtype=np.float32)
        if events.ndim != 2 or len(events) == 0:
            raise ValueError(f"replace_events({region!r}): need a non-empty 2-d array of events, got shape {events.shape}")
        with self._lock:
            self._pools[region] = events

    def reset_stats(self) -> None:
        for t in self.traffic.values():
            t.requests = t.events = t.errors = 0
            t.latencies_ms.clear()
            t.versions.clear()
            t.started = time.perf_counter()

    def __enter__(self) -> "Replayer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        for i, region in enumerate(self.urls):
            t = threading.Thread(target=self._run, args=(region, i), name=f"replay-{region}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    def _run(self, region: str, idx: int) -> None:
        import httpx
        import orjson

        rng = np.random.default_rng(self.seed + idx)
        stats = self.traffic[region]
        period = 1.0 / self.rate if self.rate > 0 else 0.0
        next_at = time.perf_counter()
        with httpx.Client(timeout=10.0) as client:
            while not self._stop.is_set():
                try:
                    self._send_one(client, region, rng, stats, orjson)
                except Exception as e:  # noqa: BLE001 - a load generator reports, it does not die silently
                    stats.errors += 1
                    stats.last_error = f"{type(e).__name__}: {e}"
                    self._stop.wait(0.5)
                if period:
                    next_at += period
                    delay = next_at - time.perf_counter()
                    if delay > 0:
                        self._stop.wait(delay)
                    else:
                        next_at = time.perf_counter()

    def _send_one(self, client, region: str, rng, stats: RegionTraffic, orjson) -> None:
        import httpx

        with self._lock:
            pool = self._pools.get(region, self.events)
            sh = self._shift.get(region)
        rows = rng.integers(0, len(pool), self.batch)
        x = pool[rows]
        if sh is not None:
            x = x.copy()
            x[:, sh[0]] = np.clip(x[:, sh[0]] + sh[1], 0.0, 1.0)
        body = orjson.dumps({"events": x.tolist(), "keys": [f"evt-{int(r)}" for r in rows]})
        t0 = time.perf_counter()
        try:
            r = client.post(stats.url + self.path, content=body, headers={"content-type": "application/json"})
            ms = (time.perf_counter() - t0) * 1000.0
            stats.requests += 1
            if r.status_code == 200:
                out = orjson.loads(r.content)
                stats.events += len(out["versions"])
                stats.latencies_ms.append(ms)
                for v in set(out["versions"]):
                    stats.versions[v] = stats.versions.get(v, 0) + out["versions"].count(v)
            else:
                stats.errors += 1
                stats.last_error = f"HTTP {r.status_code}: {r.text[:200]}"
        except httpx.HTTPError as e:
            stats.requests += 1
            stats.errors += 1
            stats.last_error = f"{type(e).__name__}: {e}"
            time.sleep(0.2)
