"""Lineage: which code and which data a model came from.

Every training run and every registered version carries the same small set of string tags, so a
version can be traced back to its run, its dataset fingerprint and the exact commit that trained it.
The tag keys are constants here; the CLI, the gates and the canary read them by these names.

``code_version()`` asks git for the commit of the checkout the code runs from (and whether it has
uncommitted changes); outside a git checkout (an installed wheel) it falls back to the package
version, so there is always something to record.
"""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

# Tag keys, shared by runs and model versions.
RUN_ID = "run_id"
DATASET = "dataset"
DATA_FINGERPRINT = "data_fingerprint"
THRESHOLD = "threshold"
DEVICE = "device"
CODE_COMMIT = "code_commit"
CODE_DIRTY = "code_dirty"
CODE_VERSION = "code_version"

#: Run tags copied onto a model version when it is registered.
LINEAGE_KEYS = (DATASET, DATA_FINGERPRINT, THRESHOLD, DEVICE, CODE_COMMIT, CODE_DIRTY, CODE_VERSION)

_GIT_TIMEOUT_S = 5.0


def _package_root() -> Path:
    # registry/ sits next to ebmops/ at the top of the checkout (or of site-packages).
    return Path(__file__).resolve().parents[1]


def _package_version() -> str:
    try:
        return metadata.version("ebmops")
    except metadata.PackageNotFoundError:
        from ebmops import __version__

        return __version__


def _git(repo: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              timeout=_GIT_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):  # git missing or hung: no git lineage
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def code_version(repo: str | Path | None = None) -> dict[str, Any]:
    """The code a model is trained with.

    Args:
        repo: directory to ask git about; default the checkout this package runs from.

    Returns:
        ``{"commit": sha | None, "dirty": bool | None, "version": str, "source": "git" | "package"}``.
        ``version`` is the short commit (with ``-dirty`` when tracked files have uncommitted changes)
        inside a git checkout, else the installed package version.
    """
    root = Path(repo) if repo is not None else _package_root()
    commit = _git(root, "rev-parse", "--verify", "HEAD")
    if not commit:
        return {"commit": None, "dirty": None, "version": _package_version(), "source": "package"}
    # Untracked files do not change what runs, so only tracked changes make a checkout dirty.
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    dirty = bool(status) if status is not None else None
    return {"commit": commit, "dirty": dirty, "version": commit[:12] + ("-dirty" if dirty else ""), "source": "git"}


def code_tags(code: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Tags describing the code version (``code_version()`` when not given)."""
    code = code_version() if code is None else code
    tags = {CODE_VERSION: str(code["version"])}
    if code.get("commit"):
        tags[CODE_COMMIT] = str(code["commit"])
    if code.get("dirty") is not None:
        tags[CODE_DIRTY] = str(bool(code["dirty"])).lower()
    return tags


def lineage_tags(*, run_id: str | None = None, dataset: str | None = None, data_fingerprint: str | None = None,
                 threshold: float | None = None, device: str | None = None,
                 code: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Lineage tags as MLflow strings; arguments left as None are left out (``code`` included)."""
    tags: dict[str, str] = {}
    for key, value in ((RUN_ID, run_id), (DATASET, dataset), (DATA_FINGERPRINT, data_fingerprint),
                       (DEVICE, device)):
        if value is not None:
            tags[key] = str(value)
    if threshold is not None:
        tags[THRESHOLD] = repr(float(threshold))  # repr keeps every digit, so the float round-trips
    if code is not None:
        tags.update(code_tags(code))
    return tags


def parse_threshold(tags: Mapping[str, str]) -> float | None:
    """The threshold recorded in tags, or None when absent or unreadable."""
    raw = tags.get(THRESHOLD)
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None
