"""What a node has trusted, kept on its disk so a restart does not forget it.

TUF's rule for metadata: never accept a document older than one already trusted. A node keeps,
per model, the highest desired-state generation it verified and applied, and that signed
document itself, in ``<install_dir>/trust/<model>.json``. With it:

* **anti-rollback survives restarts**: after a restart, a validly signed but older document
  (replayed into the store by someone who can write there) is refused as loudly as while running,
  and a different document under the same generation is refused as a reused generation;
* **the last verified state can be served from disk**: when the store is unreachable or its
  current document fails verification at boot, the node re-verifies the kept document's
  signature and each installed bundle against its signed manifest, serves that, and says it is
  degraded until the store is good again.

The file holds nothing secret (a signed document and a number). It is written atomically under an
exclusive lock and only ever raised, never lowered, so replicas sharing one install directory
cannot take the floor back. A file that cannot be read or verified keeps its generation as the
floor when one can be read at all: a damaged record must not lower what is refused.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from pydantic import ValidationError

from ebmops.core.errors import SignatureError
from registry.desired_state import DesiredState
from registry.signing import SigningKey, verify_document

log = logging.getLogger(__name__)

TRUST_TYPE = "ebmops.node-trust/1"


@dataclass(frozen=True)
class Trusted:
    """The highest generation this node verified for a model, and that document when it still verifies."""

    model: str
    generation: int
    desired: DesiredState | None  # None when the kept document no longer verifies (damaged file, rotated key)
    recorded_at: datetime | None = None
    problem: str | None = None  # why ``desired`` is None


def trust_path(install_dir: Path, model: str) -> Path:
    return Path(install_dir) / "trust" / f"{model}.json"


def trusted_models(install_dir: Path) -> list[str]:
    """The models with a trust record under ``install_dir`` (sorted)."""
    try:
        return sorted(p.stem for p in (Path(install_dir) / "trust").glob("*.json"))
    except OSError:
        return []


def load_trusted(install_dir: Path, model: str, key: SigningKey) -> Trusted | None:
    """What was trusted for ``model`` before this process started; None when nothing was."""
    path = trust_path(install_dir, model)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        log.error("%s: trust record unreadable (%s); no generation floor from disk", model, e)
        return None
    try:
        body = json.loads(raw)
        generation = int(body["generation"])
    except (ValueError, KeyError, TypeError) as e:
        log.error("%s: trust record %s is damaged (%s); no generation floor from disk", model, path, e)
        return None
    recorded = _time(body.get("recorded_at"))
    try:
        doc = verify_document(body.get("desired") or {}, key, what=f"kept desired state {path}")
        desired = DesiredState.model_validate(doc)
        if desired.model != model or desired.generation != generation:
            raise ValueError(f"it names {desired.model} generation {desired.generation}")
    except (SignatureError, ValidationError, ValueError, TypeError) as e:
        return Trusted(model, generation, None, recorded, f"the kept document does not verify: {e}")
    return Trusted(model, generation, desired, recorded)


def record_trusted(install_dir: Path, desired: DesiredState) -> int:
    """Keep ``desired`` (verified and applied) as the trusted state of its model, unless a higher
    generation is already kept (another replica got further). Returns the kept generation."""
    path = trust_path(install_dir, desired.model)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.with_suffix(".lock")):
        try:
            kept = int(json.loads(path.read_bytes())["generation"])
        except (OSError, ValueError, KeyError, TypeError):
            kept = 0
        if kept > desired.generation:
            return kept
        body = {"type": TRUST_TYPE, "model": desired.model, "generation": desired.generation,
                "recorded_at": datetime.now(timezone.utc).isoformat(), "desired": desired.document()}
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}"
        try:
            with open(tmp, "wb") as f:
                f.write(json.dumps(body, sort_keys=True, indent=1).encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return desired.generation


@contextmanager
def _locked(lock: Path) -> Iterator[None]:
    with open(lock, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _time(v) -> datetime | None:
    try:
        return datetime.fromisoformat(v) if isinstance(v, str) else None
    except ValueError:
        return None
