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
from serving.metrics import ModelMetrics
from serving.model import LoadedModel, load_installed, load_verified
from serving.trust import Trusted, load_trusted, record_trusted

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
        self.trusted_generation: int | None = None  # the highest generation verified, kept across restarts
        self.degraded: Refusal | None = None  # set while serving the last verified state from disk: why

    @property
    def ready(self) -> bool:
        return self.serving is not None

    @property
    def who(self) -> str:
        """``region/model``: how log lines name this state (a node serves several models)."""
        return f"{self.region}/{self.model_name}"


class Reconciler:
    """Brings ``state`` to the region's desired state. One reconcile at a time (a lock), so the
    poll loop and ``/admin/reload`` never load the same version twice concurrently."""

    def __init__(self, state: NodeState, store: ObjectStore, key: SigningKey, *, install_dir: Path,
                 cache_dir: Path | None = None, metrics: ModelMetrics | None = None, loader: Loader | None = None):
        self.state = state
        self.store = store
        self.key = key
        self.install_dir = Path(install_dir)
        self.cache_dir = cache_dir
        self.metrics = metrics
        self._loader = loader or self._load
        self._lock = threading.Lock()
        self._failed_generation: int | None = None
        self.trusted = load_trusted(self.install_dir, state.model_name, key)
        state.trusted_generation = self.trusted.generation if self.trusted else None
        if self.trusted is not None and self.trusted.problem:
            log.error("%s: %s; generation %d stays the floor, nothing is served from disk", state.who,
                      self.trusted.problem, self.trusted.generation)
        if metrics is not None and self.trusted is not None:
            metrics.trusted_generation.set(self.trusted.generation)

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
            if self.trusted is not None:  # the store lost (or never had) what this node already trusted
                return self._refuse(Refusal(
                    "desired-state-missing", f"no desired state for {self.state.model_name} in {self.store.description}, "
                    f"but this node trusted generation {self.trusted.generation}; the store was wiped or replaced, "
                    "re-sync the region's version", "desired-state"))
            return ReconcileResult("no-desired-state", current)
        if self.metrics is not None:  # what the store asks for, applied or not: the "served != desired" alert
            self.metrics.target_generation.set(desired.generation)
        if desired.expired():
            return self._refuse(Refusal(
                "desired-state-expired", f"the desired state (generation {desired.generation}) expired at "
                f"{desired.expires_at.isoformat()}: the store has not been updated since; run `ebmops sync "
                "--reconcile` (the daily sync re-signs it) and check that the control plane can write the store",
                "desired-state", desired.generation))
        floor = max(current.generation if current else 0, self.trusted.generation if self.trusted else 0)
        if desired.generation < floor:
            return self._refuse(Refusal(
                "stale-generation", f"desired state generation {desired.generation} is older than generation {floor} "
                f"this node already trusted (kept across restarts); a replayed or rolled-back document is ignored, "
                f"write generation {floor + 1} to change what is served", "desired-state", desired.generation))
        if desired.generation == floor:
            same = current if current is not None and current.generation == floor else None
            kept = self.trusted.desired if self.trusted is not None else None
            if same is not None and _target(desired) == _served(same) and self.state.degraded is None:
                return self._unchanged(current)
            if same is None and kept is not None and not desired.same_target(kept):
                return self._refuse(self._reused(desired, kept.stable_version, kept.canary_version))
            if same is not None and _target(desired) != _served(same):
                return self._refuse(self._reused(desired, same.stable.version,
                                                 same.canary.version if same.canary else None))
        return self._apply(desired, current)

    def _reused(self, desired: DesiredState, stable: str, canary: str | None) -> Refusal:
        return Refusal("generation-reused", f"desired state generation {desired.generation} asks for stable "
                       f"{desired.stable_version} / canary {desired.canary_version}, but this node already trusted "
                       f"generation {desired.generation} as stable {stable} / canary {canary}; a document may not be "
                       f"changed under the same generation, write generation {desired.generation + 1}",
                       "desired-state", desired.generation)

    def _unchanged(self, current: Serving) -> ReconcileResult:
        if self.state.last_error is not None:  # the store is good again: what was wrong is repaired
            log.info("%s: desired state good again (generation %d); clearing: %s", self.state.who,
                     current.generation, self.state.last_error.reason)
        self.state.last_error = None
        self._failed_generation = None
        return ReconcileResult("unchanged", current)

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
        self._trust(desired)  # verified and loaded: kept as the floor before anyone sees it served
        self.state.serving = new  # the swap: one reference assignment; old models go when no request holds them
        self.state.last_error = None
        self.state.degraded = None
        self._failed_generation = None
        if self.metrics is not None:
            self.metrics.set_serving(new.generation, new.roles(), new.canary_weight)
            self.metrics.degraded.set(0)
        log.info("%s: serving generation %d: %s (loaded %s)", self.state.who, new.generation,
                 ", ".join(f"{v} ({r})" for v, r in new.roles().items()), ", ".join(loaded) or "nothing",
                 extra={"ebm": {"event": "served", "region": self.state.region, "model": self.state.model_name,
                                "version": new.stable.version, "generation": new.generation,
                                "canary_version": new.canary.version if new.canary else None,
                                "canary_weight": new.canary_weight}})
        return ReconcileResult("applied", new, loaded=tuple(loaded))

    def _trust(self, desired: DesiredState) -> None:
        """Keep the applied document as trusted (the floor after a restart); a disk error is logged,
        never a reason to stop serving what was verified."""
        try:
            kept = record_trusted(self.install_dir, desired)
        except OSError as e:
            log.error("%s: could not keep generation %d as trusted (%s); after a restart the floor is lower",
                      self.state.who, desired.generation, e)
            return
        if kept == desired.generation:
            self.trusted = Trusted(desired.model, desired.generation, desired)
        self.state.trusted_generation = max(kept, self.state.trusted_generation or 0)
        if self.metrics is not None:
            self.metrics.trusted_generation.set(self.state.trusted_generation)

    def _from_disk(self, why: Refusal) -> Serving | None:
        """At boot, with nothing served and the store unusable: serve the last trusted document's versions
        from this node's disk, each re-verified against its signed manifest there. None when impossible."""
        kept = self.trusted.desired if self.trusted is not None else None
        if kept is None or self.state.serving is not None:
            return None
        try:
            models = {v: load_installed(self.state.model_name, v, self.key, self.install_dir) for v in kept.versions()}
        except Exception as e:  # noqa: BLE001 - no usable copy on disk: keep serving nothing, say why
            log.error("%s: cannot serve the last verified state from disk either: %s", self.state.who, e)
            return None
        canary = models.get(kept.canary_version) if kept.canary_version else None
        new = Serving(generation=kept.generation, stable=models[kept.stable_version], canary=canary,
                      canary_weight=kept.canary_weight if canary is not None else 0.0)
        self.state.serving = new
        self.state.degraded = why
        if self.metrics is not None:
            self.metrics.set_serving(new.generation, new.roles(), new.canary_weight)
            self.metrics.degraded.set(1)
        log.error("%s: DEGRADED: serving generation %d (%s) from disk, verified against its signed manifests, "
                  "because %s: %s", self.state.who, new.generation,
                  ", ".join(f"{v} ({r})" for v, r in new.roles().items()), why.reason, why.message,
                  extra={"ebm": {"event": "degraded", "region": self.state.region, "model": self.state.model_name,
                                 "generation": new.generation, "reason": why.reason}})
        return new

    def _refuse(self, refusal: Refusal) -> ReconcileResult:
        self._from_disk(refusal)
        if self.state.degraded is not None:
            self.state.degraded = refusal  # still degraded: the newest reason
        first = refusal.generation is None or refusal.generation != self._failed_generation
        self._failed_generation = refusal.generation
        self.state.last_error = refusal
        if self.metrics is not None:
            self.metrics.load_failures.labels(reason=refusal.reason).inc()
            self.metrics.errors.labels(kind="reconcile").inc()
        served = self.state.serving
        keeps = f"keeps serving generation {served.generation}" if served else "serves nothing yet"
        (log.error if first else log.debug)("%s: refused (%s), node %s: %s", self.state.who, refusal.reason,
                                            keeps, refusal.message,
                                            extra={"ebm": {"event": "refused", "region": self.state.region,
                                                           "model": self.state.model_name, "version": refusal.version,
                                                           "generation": refusal.generation,
                                                           "reason": refusal.reason}})
        return ReconcileResult("refused", served, refusal)


def _target(desired: DesiredState) -> tuple:
    return desired.stable_version, desired.canary_version, desired.canary_weight if desired.canary_version else 0.0


def _served(serving: Serving) -> tuple:
    """What ``serving`` serves, comparable with ``_target`` of a document (generation aside)."""
    return (serving.stable.version, serving.canary.version if serving.canary else None,
            serving.canary_weight if serving.canary else 0.0)


def is_refusal_of_bundle(refusal: Refusal | None) -> bool:
    """Whether a refusal is about a bundle or the store (502) rather than the desired state (409)."""
    return refusal is not None and refusal.kind in ("bundle", "store")


__all__ = ["NodeState", "Reconciler", "ReconcileResult", "Refusal", "Serving", "is_refusal_of_bundle"]
