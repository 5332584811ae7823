"""The desired state of a model in one region: what its nodes should serve.

Each region's store holds one signed document per model at ``desired/<model>.json``::

    stable_version    the version every node serves
    canary_version    an optional second version, served to ``canary_weight`` of the traffic
    generation        an integer that only grows; each write is generation + 1

The control plane writes it, nodes read it (Flagger keeps rollout status the same way: one
persisted record the controller can resume from). It is written *last*: after the bundles it
names are published, ``write_desired`` checks that their manifests exist, so a node never
reads a desired state it cannot act on.

Why a generation: it orders documents without trusting clocks. ``write_desired`` refuses a
document whose generation does not exceed the stored one (a stale controller cannot roll a
region back), and a node should ignore a document older than the one it applied (an attacker
replaying an old, validly signed document cannot either). The check is read-then-write, so one
control plane must be the single writer per region.

A store can be replayed, so the store's own generation is not enough: nodes keep the highest
generation they verified on disk (serving/trust.py), report it, and the control plane writes past
``max(store, nodes)`` (``next_desired(floor=...)``), never reusing a generation. ``expires_at`` makes
a frozen store visible: a node refuses (and reports) an expired document, and the daily reconcile
re-signs a document before half its lifetime (``sync.desired_ttl_s``) is gone.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ebmops.core.errors import DesiredStateError, ObjectNotFound, SignatureError
from registry.manifest import NAME_PATTERN, manifest_key
from registry.objectstore.base import ObjectStore
from registry.signing import SigningKey, sign_document, verify_document

DESIRED_TYPE = "ebmops.desired-state/1"


DESIRED_PREFIX = "desired/"


def desired_key(model: str) -> str:
    """Store key of ``model``'s desired-state document."""
    return f"{DESIRED_PREFIX}{model}.json"


def desired_models(store: ObjectStore) -> list[str]:
    """The models with a desired-state document in ``store`` (sorted; keys that are no model name skipped).
    Raises the store's StoreError when it cannot be listed."""
    names = []
    for k in store.list(DESIRED_PREFIX):
        name = k[len(DESIRED_PREFIX):]
        if name.endswith(".json") and "/" not in name and re.match(NAME_PATTERN, name[:-len(".json")]):
            names.append(name[:-len(".json")])
    return sorted(names)


class DesiredState(BaseModel):
    """What a region's nodes should serve for one model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["ebmops.desired-state/1"] = DESIRED_TYPE
    model: str = Field(pattern=NAME_PATTERN)
    stable_version: str = Field(pattern=NAME_PATTERN)
    canary_version: str | None = Field(default=None, pattern=NAME_PATTERN)
    canary_weight: float = Field(default=0.0, ge=0.0, le=1.0, allow_inf_nan=False,
                                 description="Share of traffic for the canary version, 0..1.")
    generation: int = Field(ge=1, description="Grows by one with every write.")
    updated_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    expires_at: datetime | None = Field(default=None, description="After this time a node reports the document as "
                                        "expired (a frozen store); the control plane re-signs before it.")
    updated_by: str = Field(default="ebmops", min_length=1, max_length=200)
    signature: dict[str, str] | None = None

    @model_validator(mode="after")
    def _check_canary(self) -> "DesiredState":
        if self.canary_weight > 0 and self.canary_version is None:
            raise ValueError("canary_weight > 0 needs a canary_version")
        if self.canary_version is not None and self.canary_version == self.stable_version:
            raise ValueError(f"canary_version equals stable_version ({self.stable_version}); clear the canary instead")
        return self

    def versions(self) -> list[str]:
        """The versions this state needs installed: stable, then the canary if any."""
        return [self.stable_version] + ([self.canary_version] if self.canary_version else [])

    def expired(self, now: datetime | None = None) -> bool:
        """Whether the document is past its ``expires_at`` (a store that stopped being updated)."""
        return self.expires_at is not None and (now or datetime.now(timezone.utc)) >= self.expires_at

    def expires_within(self, seconds: float, now: datetime | None = None) -> bool:
        """Whether it expires in less than ``seconds`` (time to re-sign it), or never was given an expiry."""
        if self.expires_at is None:
            return True
        return (self.expires_at - (now or datetime.now(timezone.utc))).total_seconds() < seconds

    def document(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def same_target(self, other: "DesiredState | None") -> bool:
        """Whether ``other`` asks for the same versions and weight (generation and audit fields aside)."""
        return other is not None and (self.stable_version, self.canary_version, self.canary_weight) == (
            other.stable_version, other.canary_version, other.canary_weight)


def make_desired(model: str, *, stable_version: str, canary_version: str | None = None, canary_weight: float = 0.0,
                 generation: int, updated_by: str = "ebmops", ttl_s: float | None = None) -> DesiredState:
    """Build a DesiredState (expiring ``ttl_s`` from now when given), turning validation failures into
    DesiredStateError."""
    now = datetime.now(timezone.utc)
    try:
        return DesiredState(model=model, stable_version=stable_version, canary_version=canary_version,
                            canary_weight=canary_weight, generation=generation, updated_by=updated_by, updated_at=now,
                            expires_at=now + timedelta(seconds=ttl_s) if ttl_s else None)
    except ValidationError as e:
        raise DesiredStateError(f"invalid desired state for {model}: {_first(e)}") from e


def next_desired(current: DesiredState | None, model: str, *, stable_version: str, canary_version: str | None = None,
                 canary_weight: float = 0.0, updated_by: str = "ebmops", floor: int = 0,
                 ttl_s: float | None = None) -> DesiredState:
    """The state that follows ``current`` (or the first one) with these versions.

    Its generation exceeds both the stored one and ``floor``: the highest generation the region's
    nodes report having trusted. A store holding a replayed older document would otherwise make the
    control plane reuse a generation the nodes already applied, and they would refuse (or ignore) it.
    """
    return make_desired(model, stable_version=stable_version, canary_version=canary_version,
                        canary_weight=canary_weight, generation=max(current.generation if current else 0, floor) + 1,
                        updated_by=updated_by, ttl_s=ttl_s)


def needs_write(wanted: DesiredState, current: DesiredState | None, *, floor: int = 0,
                refresh_within_s: float | None = None) -> bool:
    """Whether ``wanted`` must be written over ``current``: another target; or the nodes trust a newer
    generation than the store holds (a replayed document: write past it); or ``current`` expires within
    ``refresh_within_s`` (re-sign it so a live store never looks frozen)."""
    if current is None or not wanted.same_target(current) or floor > current.generation:
        return True
    return refresh_within_s is not None and current.expires_within(refresh_within_s)


def read_desired(store: ObjectStore, model: str, key: SigningKey) -> DesiredState | None:
    """The verified desired state of ``model`` in ``store``, or None when none was written.

    Raises:
        DesiredStateError: the document is unreadable, fails its signature, or is invalid.
    """
    dkey = desired_key(model)
    where = f"{store.description}/{dkey}"
    try:
        raw = store.get_bytes(dkey)
    except ObjectNotFound:
        return None
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DesiredStateError(f"{where} is not JSON: {e}") from e
    try:
        verify_document(doc, key, what=f"desired state {where}")
    except SignatureError as e:
        raise DesiredStateError(f"refused: {e}") from e
    try:
        state = DesiredState.model_validate(doc)
    except ValidationError as e:
        raise DesiredStateError(f"{where} is signed but invalid: {_first(e)}") from e
    if state.model != model:
        raise DesiredStateError(f"{where} names model {state.model}, not {model}")
    return state


def write_desired(store: ObjectStore, new: DesiredState, key: SigningKey, *,
                  check_manifests: bool = True, replace_unverified: bool = False) -> DesiredState:
    """Sign and store ``new`` as the desired state of its model; returns the signed document.

    Raises:
        DesiredStateError: ``new.generation`` does not exceed the stored generation, the stored
            document fails verification, or (with ``check_manifests``) a version it names has no
            manifest in this store.
    """
    if replace_unverified:
        current = None
        stored = unverified_generation(store, new.model)
        if stored is not None and new.generation <= stored:
            raise DesiredStateError(f"{store.description}: generation {new.generation} of {new.model} does not exceed "
                                    f"the stored (unverified) generation {stored}")
    else:
        current = read_desired(store, new.model, key)
    if current is not None and new.generation <= current.generation:
        raise DesiredStateError(f"{store.description}: generation {new.generation} of {new.model} does not exceed "
                                f"the stored generation {current.generation}; re-read the desired state and "
                                "write generation + 1")
    if check_manifests:
        missing = [v for v in new.versions() if not store.exists(manifest_key(new.model, v))]
        if missing:
            raise DesiredStateError(f"{store.description}: {new.model} versions {missing} are not published here; "
                                    "publish their bundles before naming them in the desired state")
    signed = DesiredState.model_validate(sign_document(new.document(), key))
    body = json.dumps(signed.document(), sort_keys=True, indent=1) + "\n"
    store.put_bytes(desired_key(new.model), body.encode("utf-8"))
    return signed


def unverified_generation(store: ObjectStore, model: str) -> int | None:
    """The generation written in the stored document, read without trusting it (for a repair that
    replaces a document which fails verification: the new one must still be newer for the nodes)."""
    try:
        doc = json.loads(store.get_bytes(desired_key(model)))
        return int(doc.get("generation")) if isinstance(doc, dict) and doc.get("generation") is not None else None
    except ObjectNotFound:
        return None
    except (ValueError, TypeError, UnicodeDecodeError):
        return None


def repair_desired(store: ObjectStore, model: str, key: SigningKey, *, stable_version: str,
                   updated_by: str = "ebmops", floor: int = 0, ttl_s: float | None = None,
                   refresh_within_s: float | None = None) -> tuple[DesiredState, bool]:
    """Replace ``model``'s desired state with ``stable_version`` and no canary, whatever the stored
    document holds (unverifiable, edited by hand): the generation still grows past what it said.
    Returns the state and whether it was written (False: it already was exactly that)."""
    try:
        current = read_desired(store, model, key)
    except DesiredStateError:
        current = None
    gen = max(current.generation if current else 0, unverified_generation(store, model) or 0, floor) + 1
    new = make_desired(model, stable_version=stable_version, generation=gen, updated_by=updated_by, ttl_s=ttl_s)
    if not needs_write(new, current, floor=floor, refresh_within_s=refresh_within_s):
        return current, False
    return write_desired(store, new, key, replace_unverified=current is None), True


def _first(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err.get("loc", ())) or "document"
    return f"{loc}: {err['msg']}"
