"""Publish a model version to many regions at once: the body of the ``sync`` flow.

For each region, concurrently (one thread per region; boto3 clients and local stores are
thread-safe, and the work is network-bound):

1. publish the bundle (blobs that are missing, then the signed manifest);
2. with ``set_stable``, write the region's desired state: ``stable_version`` = this version, no
   canary, generation + 1. A region already in exactly that state is left alone, so re-running a
   sync uploads nothing and does not bump generations.

The manifest is built (files hashed) once and published to every region, so all regions hold
byte-identical bundles. Regions are independent: one failing region does not stop the others;
the failures are raised together after every region finished (``RegionSyncFailed``), and
``sync_version`` records every region's outcome, duration and bytes in the state store.
"""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from ebmops.core.errors import RegionSyncFailed
from registry.bundle import MODEL_ROLE, PublishStats, build_manifest, publish_bundle
from registry.desired_state import needs_write, next_desired, read_desired, repair_desired, write_desired
from registry.objectstore.base import ObjectStore
from registry.signing import SigningKey

log = logging.getLogger(__name__)


@dataclass
class RegionPublish(PublishStats):
    """PublishStats of one region, plus what happened to its desired state. ``seconds`` covers both."""

    region: str = ""
    desired_generation: int | None = None
    desired_written: bool = False


def publish_to_regions(stores: Mapping[str, ObjectStore], model_file: Path, *, model_name: str, version: str,
                       features: Sequence[str], threshold: float, gate_verdict: str, key: SigningKey,
                       set_stable: bool = False, updated_by: str = "ebmops",
                       extra_files: Mapping[str, Path] | None = None, metadata: Mapping[str, str] | None = None,
                       max_workers: int = 8, repair: bool = False, floors: Mapping[str, int] | None = None,
                       ttl_s: float | None = None) -> dict[str, RegionPublish]:
    """Publish one version to every region in ``stores`` concurrently.

    ``floors``: per region, the highest desired-state generation its nodes report having trusted; a
    written generation exceeds it (see ``next_desired``). ``ttl_s``: written documents expire after it,
    and one already in place is re-signed when less than half of it is left.

    Returns:
        per region (in the order of ``stores``): bytes and blobs uploaded, blobs skipped, seconds,
        and the desired-state generation when ``set_stable``.
    Raises:
        RegionSyncFailed: some regions failed; ``.results`` holds the others, ``.failures`` the errors.
        BundleError / ConfigError: before any upload, when the files or arguments are unusable.
    """
    files = {MODEL_ROLE: Path(model_file), **{r: Path(p) for r, p in (extra_files or {}).items()}}
    manifest = build_manifest(files, model_name=model_name, version=version, features=features, threshold=threshold,
                              gate_verdict=gate_verdict, metadata=metadata)

    def one(region: str) -> RegionPublish:
        t0 = time.perf_counter()
        store = stores[region]
        stats = publish_bundle(store, files[MODEL_ROLE], model_name=model_name, version=version, features=features,
                               threshold=threshold, gate_verdict=gate_verdict, key=key, extra_files=extra_files,
                               metadata=metadata, manifest=manifest)
        result = RegionPublish(**vars(stats), region=region)
        floor = (floors or {}).get(region, 0)
        refresh = ttl_s / 2 if ttl_s else None
        if set_stable and repair:
            d, written = repair_desired(store, model_name, key, stable_version=version, updated_by=updated_by,
                                        floor=floor, ttl_s=ttl_s, refresh_within_s=refresh)
            result.desired_generation, result.desired_written = d.generation, written
        elif set_stable:
            current = read_desired(store, model_name, key)
            wanted = next_desired(current, model_name, stable_version=version, updated_by=updated_by, floor=floor,
                                  ttl_s=ttl_s)
            if not needs_write(wanted, current, floor=floor, refresh_within_s=refresh):
                result.desired_generation = current.generation
            else:
                result.desired_generation = write_desired(store, wanted, key).generation
                result.desired_written = True
        result.seconds = time.perf_counter() - t0
        log.info("published %s %s to %s: %d bytes, %d blobs uploaded, %d skipped, %.3f s", model_name, version,
                 region, result.bytes_uploaded, result.blobs_uploaded, result.blobs_skipped, result.seconds)
        return result

    regions = list(stores)
    results: dict[str, RegionPublish] = {}
    failures: dict[str, Exception] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(regions)))) as pool:
        futures = {r: pool.submit(one, r) for r in regions}
        for region, fut in futures.items():
            try:
                results[region] = fut.result()
            except Exception as e:  # noqa: BLE001 - every region's failure is reported, none hides another
                failures[region] = e
    if failures:
        detail = "; ".join(f"{r}: {type(e).__name__}: {e}" for r, e in failures.items())
        raise RegionSyncFailed(f"publishing {model_name} {version} failed in {len(failures)} of {len(regions)} "
                               f"regions ({detail}); the other regions are done, re-run the sync to retry",
                               results=results, failures=failures)
    return results


@dataclass
class SyncResult:
    """The outcome of ``sync_version``: one id for the whole sync, and each region's stats."""

    sync_id: str
    regions: dict[str, RegionPublish] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def bytes_uploaded(self) -> int:
        return sum(r.bytes_uploaded for r in self.regions.values())


def sync_version(settings, model_file: Path, *, model_name: str, version: str, features: Sequence[str],
                 threshold: float, gate_verdict: str, regions: Sequence[str] | None = None, set_stable: bool = True,
                 state=None, key: SigningKey | None = None, updated_by: str = "ebmops",
                 extra_files: Mapping[str, Path] | None = None,
                 metadata: Mapping[str, str] | None = None, repair: bool = False,
                 floors: Mapping[str, int] | None = None) -> SyncResult:
    """Publish a version to ``regions`` (default ``data.regions``) from settings, and record each
    region's outcome, seconds and bytes in the state store (``state``, default the configured one).

    Raises:
        RegionSyncFailed: after recording, when some regions failed.
        SigningKeyMissing: no signing key is configured (and not in dev mode).
    """
    from ebmops.core.state import open_store
    from registry.objectstore.factory import stores_for_regions
    from registry.signing import signing_key

    key = key or signing_key(settings)
    stores = stores_for_regions(settings, list(regions) if regions else None)
    sync_id = uuid.uuid4().hex
    t0 = time.perf_counter()
    error: RegionSyncFailed | None = None
    try:
        results = publish_to_regions(stores, model_file, model_name=model_name, version=version, features=features,
                                     threshold=threshold, gate_verdict=gate_verdict, key=key, set_stable=set_stable,
                                     updated_by=updated_by, extra_files=extra_files, metadata=metadata,
                                     max_workers=settings.sync.max_workers, repair=repair, floors=floors,
                                     ttl_s=settings.sync.desired_ttl_s)
        failures: dict[str, Exception] = {}
    except RegionSyncFailed as e:
        results, failures = e.results, e.failures
        error = e
    seconds = time.perf_counter() - t0
    own_state = state is None
    state = state or open_store(settings)
    try:
        for region, r in results.items():
            state.record_sync(sync_id=sync_id, model_name=model_name, version=version, region=region, status="ok",
                              seconds=r.seconds, bytes_uploaded=r.bytes_uploaded, blobs_uploaded=r.blobs_uploaded,
                              blobs_skipped=r.blobs_skipped, generation=r.desired_generation)
        for region, exc in failures.items():
            state.record_sync(sync_id=sync_id, model_name=model_name, version=version, region=region,
                              status="failed", seconds=seconds, message=f"{type(exc).__name__}: {exc}")
    finally:
        if own_state:
            state.close()
    if error is not None:
        raise error
    return SyncResult(sync_id=sync_id, regions=results, seconds=seconds)
