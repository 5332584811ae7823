"""What a node reports: Prometheus metrics (``/metrics``) and recent samples (``/stats``).

Each app gets its own ``CollectorRegistry``, so several nodes in one process (tests, a
multi-region demo) never share or clash on series. A node serves several models: every per-model
series carries a ``model`` label, and ``NodeMetrics.model(name)`` is the view one model writes through
(the same attribute names, the label filled in). Node-wide series (the micro-batcher, the token
guard's client counters) have no ``model`` label. The per-event energy histogram is kept in
numpy and exposed by a custom collector: calling ``Histogram.observe`` once per event would cost
more than scoring the event.
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left
from collections import OrderedDict
from typing import Callable, Iterable, Iterator

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

PREFIX = "ebmops_node"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
ENERGY_BUCKETS = tuple(float(b) for b in np.round(np.geomspace(1e-3, 1e4, 22), 6))
BATCH_BUCKETS = (1, 8, 32, 128, 512, 1024, 2048, 4096, 8192)
MAX_STATS_VERSIONS = 8
SMALL_BATCH = 16  # up to this many values, per-value Python is cheaper than numpy's per-call cost


class EnergyShift(Collector):
    """``ebmops_node_energy_shift{model, version}``: the live Δ of each served version's recent energies against
    its own calibration energies (drift/delta.py), computed when scraped (a few ms for the default window).
    ``source`` returns {label values: Δ}, label values in the order of ``labels``."""

    def __init__(self, source: Callable[[], dict[tuple[str, ...], float]], labels: tuple[str, ...] = ("model", "version")):
        self._source = source
        self.labels = list(labels)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        fam = GaugeMetricFamily(f"{PREFIX}_energy_shift",
                                "Energy shift Δ of recent energies against the version's calibration energies.",
                                labels=self.labels)
        for key, delta in sorted(self._source().items()):
            fam.add_metric(list(key), delta)
        yield fam


class EnergyHistograms(Collector):
    """Per-version histograms of event energies, updated a whole batch at a time. A key is one label
    value (``labels`` of one name) or a tuple of them (``("model", "version")``)."""

    def __init__(self, buckets: Iterable[float] = ENERGY_BUCKETS, labels: tuple[str, ...] = ("version",)):
        self.labels = list(labels)
        self.bounds = np.asarray(sorted(buckets), dtype=np.float64)
        self._bounds_list = self.bounds.tolist()
        self._lock = threading.Lock()
        self._counts: dict[str, np.ndarray] = {}
        self._sums: dict[str, float] = {}

    def observe(self, version: str | tuple[str, ...], energies: np.ndarray) -> int:
        """Add a batch of energies; returns how many were not finite (NaN ones are not counted,
        +-inf ones land in the end buckets but stay out of the sum)."""
        if isinstance(energies, np.ndarray) and energies.ndim == 1 and len(energies) <= SMALL_BATCH:
            return self._observe_few(version, energies)
        e = np.asarray(energies, dtype=np.float64)
        total = float(e.sum())
        bad = 0
        if not math.isfinite(total):  # a finite sum means every energy is finite: no mask needed
            finite = np.isfinite(e)
            bad = len(e) - int(np.count_nonzero(finite))
            total = float(e[finite].sum())
            e = e[~np.isnan(e)]
        idx = np.searchsorted(self.bounds, e, side="left")  # bucket i holds bounds[i-1] < e <= bounds[i]
        counts = np.bincount(idx, minlength=len(self.bounds) + 1)
        with self._lock:
            if version not in self._counts:
                self._counts[version] = np.zeros(len(self.bounds) + 1, dtype=np.int64)
                self._sums[version] = 0.0
            self._counts[version] += counts
            self._sums[version] += total
        return bad

    def _observe_few(self, version: str | tuple[str, ...], energies: np.ndarray) -> int:
        """``observe`` for a few energies: plain Python beats half a dozen numpy calls there."""
        bounds = self._bounds_list
        bad = 0
        total = 0.0
        idx = []
        for v in energies.tolist():
            if not math.isfinite(v):
                bad += 1
                if v != v:  # NaN: not counted at all
                    continue
            else:
                total += v
            idx.append(bisect_left(bounds, v))
        with self._lock:
            counts = self._counts.get(version)
            if counts is None:
                counts = self._counts[version] = np.zeros(len(self.bounds) + 1, dtype=np.int64)
                self._sums[version] = 0.0
            for i in idx:
                counts[i] += 1
            self._sums[version] += total
        return bad

    def collect(self) -> Iterator[HistogramMetricFamily]:
        fam = HistogramMetricFamily(f"{PREFIX}_event_energy", "Energy of each scored event, by model version.",
                                    labels=self.labels)
        with self._lock:
            items = [(v, c.copy(), self._sums[v]) for v, c in self._counts.items()]
        for version, counts, total in items:
            cumulative = np.cumsum(counts)
            buckets = [(_fmt(b), int(c)) for b, c in zip(self.bounds, cumulative[:-1])]
            buckets.append(("+Inf", int(cumulative[-1])))
            fam.add_metric(list(version) if isinstance(version, tuple) else [version], buckets, total)
        yield fam


def _fmt(b: float) -> str:
    return repr(float(b))


class NodeMetrics:
    """Every Prometheus series of one node, in a registry of its own; per-model series are labelled
    ``model`` (write them through ``model(name)``)."""

    def __init__(self, region: str, model: str = ""):
        self.region = region
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        m = ["model"]
        self.requests = Counter(f"{PREFIX}_requests", "Score requests answered, by model and HTTP status.",
                                [*m, "status"], registry=r)
        self.events = Counter(f"{PREFIX}_events", "Events scored, by model and version.", [*m, "version"], registry=r)
        self.errors = Counter(f"{PREFIX}_errors", "Errors, by model and kind (bad-json, invalid-input, too-large, "
                                                  "no-model, internal, reconcile, non-finite-energy, body-timeout; "
                                                  "model is empty for errors of no one model).", [*m, "kind"], registry=r)
        self.latency = Histogram(f"{PREFIX}_request_seconds", "Wall time of a score request, parse to response.",
                                 m, buckets=LATENCY_BUCKETS, registry=r)
        self.batch_events = Histogram(f"{PREFIX}_micro_batch_events", "Events per model call of the micro-batcher "
                                      "(one batcher per node, shared by its models).", buckets=BATCH_BUCKETS, registry=r)
        self.load_failures = Counter(f"{PREFIX}_model_load_failures", "Refused desired states and bundles, by model and "
                                     "reason.", [*m, "reason"], registry=r)
        self.loaded = Gauge(f"{PREFIX}_loaded_version_info", "1 for each model version loaded, by model and role.",
                            [*m, "version", "role"], registry=r)
        self.generation = Gauge(f"{PREFIX}_desired_generation", "Generation of the desired state being served.",
                                m, registry=r)
        self.target_generation = Gauge(f"{PREFIX}_target_generation",
                                       "Generation of the newest desired state read from the store (applied or "
                                       "refused); above desired_generation: the node does not serve what is desired.",
                                       m, registry=r)
        self.trusted_generation = Gauge(f"{PREFIX}_trusted_generation",
                                        "Highest desired-state generation this node verified, kept on disk across "
                                        "restarts; anything older is refused.", m, registry=r)
        self.degraded = Gauge(f"{PREFIX}_degraded", "1 while the node serves a model's last verified state from disk "
                              "because its store is unreachable or its desired state is refused.", m, registry=r)
        self.ready = Gauge(f"{PREFIX}_ready", "1 once a verified, warmed-up version of the model serves (what /readyz "
                           "says of it).", m, registry=r)
        self.canary_weight = Gauge(f"{PREFIX}_canary_weight", "Share of the model's traffic routed to the canary.",
                                   m, registry=r)
        self.info = Gauge(f"{PREFIX}_region_info", "1, labelled with the node's region and each model it serves.",
                          ["region", "model"], registry=r)
        self.unknown_categories = Counter(f"{PREFIX}_unknown_categories",
                                          "Values of categorical columns the scoring model never saw in training "
                                          "(scored in its 'unknown' slot), by model and column.",
                                          ["region", "model", "column"], registry=r)
        self.energies = EnergyHistograms(labels=("model", "version"))
        r.register(self.energies)
        self._models: dict[str, ModelMetrics] = {}
        if model:
            self.model(model)

    def model(self, name: str) -> "ModelMetrics":
        """The series of model ``name`` (created at 0 the first time it is asked for)."""
        view = self._models.get(name)
        if view is None:
            view = self._models[name] = ModelMetrics(self, name)
        return view

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Labelled:
    """A metric of several labels with ``model`` filled in: ``labels(**the others)``."""

    def __init__(self, parent, model: str):
        self._parent, self._model = parent, model
        self._children: set[tuple[str, ...]] = set()

    def labels(self, **kw):
        child = self._parent.labels(model=self._model, **kw)
        self._children.add(tuple(kw[n] for n in self._parent._labelnames[1:]))
        return child

    def clear(self) -> None:
        """Remove this model's series (never another model's)."""
        for values in self._children:
            try:
                self._parent.remove(self._model, *values)
            except KeyError:
                pass
        self._children.clear()


class ModelMetrics:
    """One model's series: the attributes of ``NodeMetrics`` with the ``model`` label filled in
    (``requests.labels(status=...)``, ``latency.observe(...)``, ``energies.observe(version, e)``, ...).
    Node-wide metrics read through (``batch_events``)."""

    def __init__(self, node: NodeMetrics, model: str):
        self.node, self.name = node, model
        for attr in ("requests", "events", "errors", "load_failures", "loaded"):
            setattr(self, attr, _Labelled(getattr(node, attr), model))
        for attr in ("latency", "generation", "target_generation", "trusted_generation", "degraded", "ready",
                     "canary_weight"):
            setattr(self, attr, getattr(node, attr).labels(model=model))
        self.energies = _ModelEnergies(node.energies, model)
        for reason in ("stale-generation", "generation-reused"):  # exported at 0: the replay alert's rate needs a start
            self.load_failures.labels(reason=reason)
        self.ready.set(0)
        node.info.labels(region=node.region, model=model).set(1)

    def __getattr__(self, name: str):  # a node-wide metric (e.g. batch_events), unlabelled by model
        return getattr(self.node, name)

    def set_serving(self, generation: int, roles: dict[str, str], canary_weight: float) -> None:
        """Publish what the model serves now (``roles``: version -> stable|canary)."""
        self.loaded.clear()
        for version, role in roles.items():
            self.loaded.labels(version=version, role=role).set(1)
        self.generation.set(generation)
        self.canary_weight.set(canary_weight)
        self.ready.set(1)


class _ModelEnergies:
    def __init__(self, hist: EnergyHistograms, model: str):
        self._hist, self._model = hist, model

    def observe(self, version: str, energies: np.ndarray) -> int:
        return self._hist.observe((self._model, version), energies)


class Ring:
    """The last ``size`` floats appended, in order, in a preallocated numpy buffer."""

    def __init__(self, size: int):
        self._buf = np.zeros(size, dtype=np.float64)
        self._n = 0  # total appended

    def append(self, value: float) -> None:
        self._buf[self._n % len(self._buf)] = value
        self._n += 1

    def extend(self, values: np.ndarray) -> None:
        if isinstance(values, np.ndarray) and values.ndim == 1 and len(values) <= SMALL_BATCH:
            buf, size = self._buf, len(self._buf)
            for value in values.tolist():
                buf[self._n % size] = value
                self._n += 1
            return
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        size = len(self._buf)
        if len(v) >= size:
            self._buf[:] = v[-size:]
            self._n = (self._n // size + 1) * size  # any multiple of size puts the oldest at index 0
            return
        start = self._n % size
        first = min(len(v), size - start)
        self._buf[start:start + first] = v[:first]
        self._buf[:len(v) - first] = v[first:]
        self._n += len(v)

    def values(self) -> np.ndarray:
        size = len(self._buf)
        if self._n < size:
            return self._buf[:self._n].copy()
        start = self._n % size
        return np.concatenate([self._buf[start:], self._buf[:start]])

    def __len__(self) -> int:
        return min(self._n, len(self._buf))


class VersionStats:
    """Recent samples of one version: request latencies (ms) and event energies, plus totals."""

    def __init__(self, window: int):
        self.latency_ms = Ring(window)
        self.energies = Ring(window)
        self.outcomes = Ring(window)  # per request: 0 scored, 1 failed (the canary judge's error samples)
        self.requests = 0
        self.events = 0
        self.anomalies = 0
        self.errors = 0
        self.threshold: float | None = None
        self.last_at: float | None = None

    def as_dict(self) -> dict:
        lat = self.latency_ms.values()
        return {"requests": self.requests, "events": self.events, "anomalies": self.anomalies, "errors": self.errors,
                "threshold": self.threshold, "outcomes": self.outcomes.values().tolist(),
                "last_at": self.last_at, "latency_ms": lat.tolist(), "energies": self.energies.values().tolist(),
                "latency_ms_p50": _q(lat, 0.5), "latency_ms_p99": _q(lat, 0.99)}


def _q(a: np.ndarray, q: float) -> float | None:
    return float(np.quantile(a, q)) if len(a) else None


class RecentStats:
    """Per-version ``VersionStats``, for the newest ``MAX_STATS_VERSIONS`` versions seen."""

    def __init__(self, window: int):
        self.window = window
        self._lock = threading.Lock()
        self._by_version: OrderedDict[str, VersionStats] = OrderedDict()

    def _get(self, version: str) -> VersionStats:
        s = self._by_version.get(version)
        if s is None:
            s = self._by_version[version] = VersionStats(self.window)
            while len(self._by_version) > MAX_STATS_VERSIONS:
                self._by_version.popitem(last=False)
        return s

    def energies(self, version: str) -> np.ndarray:
        """The version's recent event energies (oldest first); empty when it scored nothing yet."""
        with self._lock:
            s = self._by_version.get(version)
            return s.energies.values() if s is not None else np.empty(0)

    def record_error(self, version: str) -> None:
        """A request part this version failed to score (counted for the canary's error rate)."""
        with self._lock:
            s = self._get(version)
            s.outcomes.append(1.0)
            s.requests += 1
            s.errors += 1
            s.last_at = time.time()

    def record(self, version: str, latency_ms: float, energies: np.ndarray, anomalies: int,
               threshold: float | None = None) -> None:
        with self._lock:
            s = self._get(version)
            s.threshold = threshold
            s.outcomes.append(0.0)
            s.latency_ms.append(latency_ms)
            s.energies.extend(energies)
            s.requests += 1
            s.events += len(energies)
            s.anomalies += anomalies
            s.last_at = time.time()

    def as_dict(self) -> dict[str, dict]:
        with self._lock:
            return {v: s.as_dict() for v, s in self._by_version.items()}
