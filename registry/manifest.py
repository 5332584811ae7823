"""The manifest of a model bundle, and where things live in a region's store.

A manifest names a model version's files by sha256 and carries what a node needs to serve it
(feature order, alert threshold) and to trust it (the gate verdict, a signature). Keys::

    blobs/sha256/<first two hex>/<sha256>     file bytes, named by their hash
    manifests/<model>/<version>.json          the signed manifest

The signature covers every field but itself (see registry/signing.py), and the sha256s extend
it to every byte of every file. ``read_manifest`` is the one way in: it verifies the signature
before it parses the fields, and refuses a manifest stored under another model or version.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ebmops.core.errors import BundleError, ObjectNotFound, SignatureError
from registry.objectstore.base import ObjectStore
from registry.signing import SigningKey, sign_document, verify_document

MANIFEST_TYPE = "ebmops.bundle-manifest/1"
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.=+-]{0,127}$"
MODEL_ROLE = "model"
MODEL_FILENAME = "model.pt"
_HASH_CHUNK = 1 << 20


# ---- keys and hashing -----------------------------------------------------------------------
def blob_key(sha256: str) -> str:
    """Store key of the blob with this sha256 (lowercase hex)."""
    return f"blobs/sha256/{sha256[:2]}/{sha256}"


def manifest_key(model: str, version: str) -> str:
    """Store key of the manifest of ``model`` ``version``."""
    return f"manifests/{model}/{version}.json"


def file_sha256(path: Path) -> str:
    """sha256 (hex) of a local file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def role_filename(role: str) -> str:
    """File name of a role inside an installed bundle directory."""
    return MODEL_FILENAME if role == MODEL_ROLE else role


# ---- the manifest ---------------------------------------------------------------------------
class FileEntry(BaseModel):
    """One file of a bundle: its hash, size and blob key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    key: str


class Manifest(BaseModel):
    """What a bundle holds, signed by the control plane."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["ebmops.bundle-manifest/1"] = MANIFEST_TYPE
    model_name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=NAME_PATTERN)
    files: dict[str, FileEntry] = Field(description="By role; 'model' is the TorchScript energy model.")
    features: list[str] = Field(min_length=1, description="Feature names, in model input order.")
    threshold: float = Field(allow_inf_nan=False, description="Energy above which an event is an anomaly.")
    created_at: datetime
    gate_verdict: str = Field(pattern=r"^[a-z][a-z_-]{0,31}$", description="Promotion gate verdict, e.g. pass.")
    metadata: dict[str, str] = Field(default_factory=dict, description="Lineage: run id, data fingerprint, ...")
    signature: dict[str, str] | None = None

    @field_validator("files")
    @classmethod
    def _check_files(cls, v: dict[str, FileEntry]) -> dict[str, FileEntry]:
        if MODEL_ROLE not in v:
            raise ValueError(f"a bundle needs a '{MODEL_ROLE}' file")
        for role, entry in v.items():
            if not re.match(NAME_PATTERN, role):
                raise ValueError(f"file role {role!r} must match {NAME_PATTERN}")
            if entry.key != blob_key(entry.sha256):
                raise ValueError(f"file {role} has key {entry.key}, expected {blob_key(entry.sha256)}")
        return v

    def document(self) -> dict[str, Any]:
        """The JSON object stored in the region (signature included when set)."""
        return self.model_dump(mode="json", exclude_none=True)

    def content(self) -> dict[str, Any]:
        """What makes a version what it is; publishing it again must not change this."""
        return self.model_dump(mode="json", include={"model_name", "version", "files", "features", "threshold"})


def build_manifest(files: Mapping[str, Path], *, model_name: str, version: str, features: Sequence[str],
                   threshold: float, gate_verdict: str, metadata: Mapping[str, str] | None = None,
                   created_at: datetime | None = None) -> Manifest:
    """An unsigned manifest for local ``files`` (by role), hashing each file."""
    entries = {}
    for role, path in files.items():
        sha = file_sha256(Path(path))
        entries[role] = FileEntry(sha256=sha, size=Path(path).stat().st_size, key=blob_key(sha))
    return Manifest(model_name=model_name, version=version, files=entries, features=list(features),
                    threshold=float(threshold), created_at=created_at or datetime.now(timezone.utc),
                    gate_verdict=gate_verdict, metadata=dict(metadata or {}))


def sign_manifest(manifest: Manifest, key: SigningKey) -> Manifest:
    """A copy of ``manifest`` with its signature set."""
    return Manifest.model_validate(sign_document(manifest.document(), key))


def serialize_manifest(manifest: Manifest) -> bytes:
    """The stored form of a manifest: sorted, indented JSON (the signature does not depend on it)."""
    return (json.dumps(manifest.document(), sort_keys=True, indent=1) + "\n").encode("utf-8")


def read_manifest(store: ObjectStore, model: str, version: str, key: SigningKey) -> tuple[Manifest, bytes]:
    """Read, verify and validate a manifest; returns it with its raw bytes. Raises BundleError."""
    mkey = manifest_key(model, version)
    where = f"{store.description}/{mkey}"

    def fail(reason: str, msg: str, cause: Exception | None = None) -> BundleError:
        err = BundleError(f"bundle {model} {version} refused ({reason}): {msg}", reason=reason, model=model,
                          version=version, key=mkey)
        err.__cause__ = cause
        return err

    try:
        raw = store.get_bytes(mkey)
    except ObjectNotFound as e:
        raise fail("manifest-missing", f"no manifest at {where}; publish the version to this region first", e)
    return parse_manifest(raw, model, version, key, where=where), raw


def parse_manifest(raw: bytes, model: str, version: str, key: SigningKey, *, where: str) -> Manifest:
    """Verify and validate a manifest's raw bytes (read from ``where``). Raises BundleError."""
    mkey = manifest_key(model, version)

    def fail(reason: str, msg: str, cause: Exception | None = None) -> BundleError:
        err = BundleError(f"bundle {model} {version} refused ({reason}): {msg}", reason=reason, model=model,
                          version=version, key=mkey)
        err.__cause__ = cause
        return err

    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise fail("manifest-unreadable", f"{where} is not JSON: {e}", e)
    try:
        verify_document(doc, key, what=f"manifest {where}")
    except SignatureError as e:
        raise fail("bad-signature", str(e), e)
    try:
        manifest = Manifest.model_validate(doc)
    except ValidationError as e:
        raise fail("manifest-invalid", f"{where} is signed but malformed: {e.errors()[0]['msg']}", e)
    if (manifest.model_name, manifest.version) != (model, version):
        raise fail("manifest-mismatch", f"{where} describes {manifest.model_name} {manifest.version}")
    return manifest


def list_versions(store: ObjectStore, model: str) -> list[str]:
    """Versions of ``model`` with a manifest in ``store`` (unverified; fetch to verify)."""
    prefix = f"manifests/{model}/"
    return [k[len(prefix):-len(".json")] for k in store.list(prefix) if k.endswith(".json")]
