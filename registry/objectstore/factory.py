"""Pick a region's object store from settings (``sync.regions``), the way MLflow picks a store
from a URI: regions configured with ``kind: s3`` get an :class:`S3Store`, every other region a
:class:`LocalStore` under ``<home>/stores/<region>`` (the embedded default)."""

from __future__ import annotations

import re

from ebmops.core.settings import REGION_NAME_PATTERN, RegionStoreSettings, Settings
from registry.objectstore.base import ObjectStore
from registry.objectstore.local import LocalStore


def region_settings(settings: Settings, region: str) -> RegionStoreSettings:
    """The store settings of ``region``: its entry under ``sync.regions``, else the local default."""
    if not re.match(REGION_NAME_PATTERN, region):
        raise ValueError(f"region name {region!r} must be lowercase letters, digits and '-' (at most 40)")
    return settings.sync.regions.get(region) or RegionStoreSettings()


def store_for_region(settings: Settings, region: str) -> ObjectStore:
    """The object store of ``region``, built from settings. Builds no connection until first use."""
    cfg = region_settings(settings, region)
    if cfg.kind == "local":
        return LocalStore(cfg.path or settings.home / "stores" / region)
    from registry.objectstore.s3 import S3Store

    sync = settings.sync
    return S3Store(cfg.endpoint_url, cfg.bucket or f"ebmops-{region}",
                   access_key=cfg.access_key.get_secret_value() if cfg.access_key else None,
                   secret_key=cfg.secret_key.get_secret_value() if cfg.secret_key else None,
                   region_name=cfg.region_name, prefix=cfg.prefix,
                   multipart_threshold=sync.multipart_threshold_mb * 1024 * 1024, max_concurrency=sync.max_workers,
                   connect_timeout=sync.s3_connect_timeout_s, read_timeout=sync.s3_read_timeout_s,
                   max_attempts=sync.s3_max_attempts)


def stores_for_regions(settings: Settings, regions: list[str] | None = None) -> dict[str, ObjectStore]:
    """Stores for ``regions`` (default: ``data.regions``), keyed by region, in the given order."""
    return {r: store_for_region(settings, r) for r in (regions or settings.data.regions)}
