"""What a node serves, and how it converges on its region's desired state.

``NodeState.serving`` is one immutable ``Serving`` snapshot (generation, stable model, optional
canary and its weight). Readers take the reference once per request; the reconciler builds a
complete new snapshot (every model verified and warmed up) and publishes it with a single
assignment. Assigning a reference is atomic in Python, so a request sees the old snapshot or the
new one, never a mix, and no lock sits on the scoring path.

A refused desired state (bad signature, stale generation) or bundle (tampered manifest or blob,
missing blob, unloadable model) changes nothing that is served: the reason goes to
``last_error``, the metrics and the log, and the next poll tries again.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Literal

from ebmops.core.errors import BundleError, DesiredStateError, StoreError
from registry.desired_state import DesiredState, read_desired
from registry.objectstore.base import ObjectStore
from registry.signing import SigningKey
from serving.metrics import NodeMetrics
from serving.model import LoadedModel, load_verified

log = logging.getLogger(__name__)

Loader = Callable[[str], LoadedModel]
Outcome = Literal["applied", "unchanged", "refused", "no-desired-state"]


@dataclass(frozen=True, eq=False)
class Serving:
    """One consistent view of what the node serves."""

    generation: int
    stable: LoadedModel
    canary: LoadedModel | None = None
    canary_weight: float = 0.0
    applied_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def models(self) -> dict[str, LoadedModel]:
        """Loaded models by version: stable first."""
        out = {self.stable.version: self.stable}
        if self.canary is not None:
            out[self.canary.version] = self.canary
        return out

    def roles(self) -> dict[str, str]:
        """version -> 'stable' | 'canary'."""
        out = {self.stable.version: "stable"}
        if self.canary is not None:
            out[self.canary.version] = "canary"
        return out

    def describe(self) -> dict:
        return {"generation": self.generation, "stable_version": self.stable.version,
                "canary_version": self.canary.version if self.canary else None,
                "canary_weight": self.canary_weight if self.canary else 0.0,
                "versions": list(self.models()), "applied_at": self.applied_at.isoformat()}


@dataclass(frozen=True)
class Refusal:
    """Why the latest desired state was not applied."""

    reason: str
    message: str
    kind: Literal["desired-state", "bundle", "store"]
    generation: int | None = None
    version: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def as_dict(self) -> dict:
        return {"reason": self.reason, "message": self.message, "kind": self.kind, "generation": self.generation,
                "version": self.version, "at": self.at.isoformat()}


@dataclass(frozen=True)
class ReconcileResult:
    """What one reconcile did."""

    outcome: Outcome
    serving: Serving | None
    refusal: Refusal | None = None
    loaded: tuple[str, ...] = ()
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"outcome": self.outcome, "loaded": list(self.loaded), "seconds": round(self.seconds, 4),
                "serving": self.serving.describe() if self.serving else None,
                "refusal": self.refusal.as_dict() if self.refusal else None}


class NodeState:
    """The current snapshot and the latest refusal; written only by the reconciler."""

    def __init__(self, region: str, model_name: str):
        self.region = region
        self.model_name = model_name
        self.serving: Serving | None = None
        self.last_error: Refusal | None = None
        self.last_reconcile_at: datetime | None = None

    @property
    def ready(self) -> bool:
        return self.serving is not None


class Reconciler:
    """Brings ``state`` to the region's desired state. One reconcile at a time (a lock), so the
    poll loop and ``/admin/reload`` never load the same version twice concurrently."""

    def __init__(self, state: NodeState, store: ObjectStore, key: SigningKey, *, install_dir: Path,
                 cache_dir: Path | None = None, metrics: NodeMetrics | None = None, loader: Loader | None = None):
        self.state = state
        self.store = store
        self.key = key
        self.install_dir = Path(install_dir)
        self.cache_dir = cache_dir
        self.metrics = metrics
        self._loader = loader or self._load
        self._lock = threading.Lock()
        self._failed_generation: int | None = None

    def _load(self, version: str) -> LoadedModel:
        return load_verified(self.store, self.state.model_name, version, self.key, self.install_dir, self.cache_dir)

    def reconcile(self) -> ReconcileResult:
        """Read the desired state and apply it if it is new; never raises for a refusal."""
        with self._lock:
            t0 = time.perf_counter()
            result = self._reconcile()
            self.state.last_reconcile_at = datetime.now(timezone.utc)
            return ReconcileResult(result.outcome, result.serving, result.refusal, result.loaded,
                                   time.perf_counter() - t0)

    def _reconcile(self) -> ReconcileResult:
        current = self.state.serving
        try:
            desired = read_desired(self.store, self.state.model_name, self.key)
        except DesiredStateError as e:
            return self._refuse(Refusal("bad-desired-state", str(e), "desired-state"))
        except StoreError as e:
            return self._refuse(Refusal("store-unreadable", str(e), "store"))
        if desired is None:
            return ReconcileResult("no-desired-state", current)
        if self.metrics is not None:  # what the store asks for, applied or not: the "served != desired" alert
            self.metrics.target_generation.set(desired.generation)
        if current is not None and desired.generation == current.generation:
            return ReconcileResult("unchanged", current)
        if current is not None and desired.generation < current.generation:
            return self._refuse(Refusal(
                "stale-generation", f"desired state generation {desired.generation} is older than the served "
                f"generation {current.generation}; a replayed or rolled-back document is ignored, write generation "
                f"{current.generation + 1} to change what is served", "desired-state", desired.generation))
        return self._apply(desired, current)

    def _apply(self, desired: DesiredState, current: Serving | None) -> ReconcileResult:
        have = current.models() if current is not None else {}
        models: dict[str, LoadedModel] = {}
        loaded: list[str] = []
        for version in desired.versions():
            if version in have:  # versions are immutable: the loaded object is still right
                models[version] = have[version]
                continue
            try:
                models[version] = self._loader(version)
            except BundleError as e:
                return self._refuse(Refusal(e.reason, str(e), "bundle", desired.generation, version))
            except StoreError as e:
                return self._refuse(Refusal("store-unreadable", str(e), "store", desired.generation, version))
            except Exception as e:  # noqa: BLE001 - whatever a bundle does, the node keeps serving
                return self._refuse(Refusal("load-failed", f"loading {version} raised {type(e).__name__}: {e}",
                                            "bundle", desired.generation, version))
            loaded.append(version)
        canary = models.get(desired.canary_version) if desired.canary_version else None
        new = Serving(generation=desired.generation, stable=models[desired.stable_version], canary=canary,
                      canary_weight=desired.canary_weight if canary is not None else 0.0)
        self.state.serving = new  # the swap: one reference assignment; old models go when no request holds them
        self.state.last_error = None
        self._failed_generation = None
        if self.metrics is not None:
            self.metrics.set_serving(new.generation, new.roles(), new.canary_weight)
        log.info("%s: serving generation %d: %s (loaded %s)", self.state.region, new.generation,
                 ", ".join(f"{v} ({r})" for v, r in new.roles().items()), ", ".join(loaded) or "nothing",
                 extra={"ebm": {"event": "served", "region": self.state.region, "model": self.state.model_name,
                                "version": new.stable.version, "generation": new.generation,
                                "canary_version": new.canary.version if new.canary else None,
                                "canary_weight": new.canary_weight}})
        return ReconcileResult("applied", new, loaded=tuple(loaded))

    def _refuse(self, refusal: Refusal) -> ReconcileResult:
        first = refusal.generation is None or refusal.generation != self._failed_generation
        self._failed_generation = refusal.generation
        self.state.last_error = refusal
        if self.metrics is not None:
            self.metrics.load_failures.labels(reason=refusal.reason).inc()
            self.metrics.errors.labels(kind="reconcile").inc()
        served = self.state.serving
        keeps = f"keeps serving generation {served.generation}" if served else "serves nothing yet"
        (log.error if first else log.debug)("%s: refused (%s), node %s: %s", self.state.region, refusal.reason,
                                            keeps, refusal.message,
                                            extra={"ebm": {"event": "refused", "region": self.state.region,
                                                           "model": self.state.model_name, "version": refusal.version,
                                                           "generation": refusal.generation,
                                                           "reason": refusal.reason}})
        return ReconcileResult("refused", served, refusal)


def is_refusal_of_bundle(refusal: Refusal | None) -> bool:
    """Whether a refusal is about a bundle or the store (502) rather than the desired state (409)."""
    return refusal is not None and refusal.kind in ("bundle", "store")


__all__ = ["NodeState", "Reconciler", "ReconcileResult", "Refusal", "Serving", "is_refusal_of_bundle"]
