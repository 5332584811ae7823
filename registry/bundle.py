"""Signed, content-addressed model bundles.

A published model version is a *bundle*: its files (the TorchScript model, optionally more)
stored as content-addressed blobs, plus a signed *manifest* that names them by sha256::

    blobs/sha256/<first two hex>/<sha256>     the bytes, named by their hash
    manifests/<model>/<version>.json          model, version, {role: sha256, size, key}, features,
                                              threshold, created_at, gate verdict, signature

Why this shape:

* Content addressing makes publishing idempotent and cheap: a blob whose key already holds an
  object of the right size is not uploaded again, so re-publishing an unchanged version moves 0
  blob bytes, and versions that share a file share its blob.
* Order gives atomic visibility: all blobs are written before the manifest, and the manifest
  before any desired state names the version, so a reader that sees a manifest finds its blobs.
* The signature covers the manifest, and the manifest covers every byte through the sha256s:
  ``fetch_bundle`` checks the signature, then each blob's hash, and only then installs the
  bundle, by renaming a fully verified staging directory into place. A tampered manifest, a
  tampered or missing blob, or a wrong key raise :class:`BundleError` (``reason`` says which) and
  leave the destination as it was.
* A version is immutable: publishing the same version with different files, features or threshold
  is refused (``version-conflict``); only the gate verdict and metadata may be re-stated.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from ebmops.core.errors import BundleError, ObjectNotFound
from registry.manifest import (
    MANIFEST_TYPE,
    MODEL_FILENAME,
    MODEL_ROLE,
    NAME_PATTERN,
    FileEntry,
    Manifest,
    blob_key,
    build_manifest,
    file_sha256,
    list_versions,
    manifest_key,
    parse_manifest,
    read_manifest,
    role_filename,
    serialize_manifest,
    sign_manifest,
)
from registry.objectstore.base import ObjectStore
from registry.signing import SigningKey

__all__ = ["MANIFEST_TYPE", "MODEL_FILENAME", "MODEL_ROLE", "NAME_PATTERN", "FileEntry", "Manifest", "PublishStats",
           "VerifiedBundle", "blob_key", "build_manifest", "bundle_dir", "fetch_bundle", "file_sha256",
           "installed_bundle", "list_versions", "manifest_key", "publish_bundle", "read_manifest", "role_filename", "sign_manifest"]


# ---- publishing -----------------------------------------------------------------------------
@dataclass
class PublishStats:
    """What publishing one bundle to one store did."""

    bytes_uploaded: int
    blobs_uploaded: int
    blobs_skipped: int
    seconds: float
    manifest_written: bool = False
    manifest_key: str = ""


def publish_bundle(store: ObjectStore, model_file: Path, *, model_name: str, version: str,
                   features: Sequence[str], threshold: float, gate_verdict: str, key: SigningKey,
                   extra_files: Mapping[str, Path] | None = None, metadata: Mapping[str, str] | None = None,
                   max_workers: int = 4, manifest: Manifest | None = None) -> PublishStats:
    """Publish a bundle to ``store``: missing blobs first (concurrently), the signed manifest last.

    Args:
        store: the region's object store.
        model_file: the TorchScript energy model.
        extra_files: more files by role (e.g. a reference profile).
        manifest: a manifest already built for these files (saves hashing once per region).
    Returns:
        bytes and blobs uploaded, blobs skipped because already present, and the wall time.
    Raises:
        BundleError: ``version-conflict`` when the version exists with other content, or
            ``existing-manifest-invalid`` when the stored one fails verification.
        StoreError: the store failed; the manifest is then not written.
    """
    t0 = time.perf_counter()
    files = {MODEL_ROLE: Path(model_file), **{r: Path(p) for r, p in (extra_files or {}).items()}}
    built = manifest or build_manifest(files, model_name=model_name, version=version, features=features,
                                       threshold=threshold, gate_verdict=gate_verdict, metadata=metadata)
    existing = _existing_manifest(store, built, key)

    def upload(role: str) -> int:
        entry = built.files[role]
        if store.size_or_none(entry.key) == entry.size:
            return -1
        store.put_file(entry.key, files[role])
        return entry.size

    roles = list(built.files)
    if len(roles) == 1:
        sizes = [upload(roles[0])]
    else:
        with ThreadPoolExecutor(max_workers=min(max_workers, len(roles))) as pool:
            sizes = list(pool.map(upload, roles))
    uploaded = [s for s in sizes if s >= 0]
    stats = PublishStats(bytes_uploaded=sum(uploaded), blobs_uploaded=len(uploaded),
                         blobs_skipped=len(sizes) - len(uploaded), seconds=0.0,
                         manifest_key=manifest_key(model_name, version))
    same = existing is not None and (existing.gate_verdict, existing.metadata) == (built.gate_verdict, built.metadata)
    if not same:
        if existing is not None:  # re-stating verdict or metadata keeps the version's creation time
            built = built.model_copy(update={"created_at": existing.created_at})
        store.put_bytes(stats.manifest_key, serialize_manifest(sign_manifest(built, key)))
        stats.manifest_written = True
    stats.seconds = time.perf_counter() - t0
    return stats


def _existing_manifest(store: ObjectStore, built: Manifest, key: SigningKey) -> Manifest | None:
    try:
        existing, _ = read_manifest(store, built.model_name, built.version, key)
    except BundleError as e:
        if e.reason == "manifest-missing":
            return None
        raise BundleError(f"{built.model_name} {built.version} is already in {store.description} but its manifest "
                          f"does not verify ({e.reason}): {e}. Investigate, then delete "
                          f"{manifest_key(built.model_name, built.version)} to publish again",
                          reason="existing-manifest-invalid", model=built.model_name, version=built.version) from e
    if existing.content() != built.content():
        raise BundleError(f"{built.model_name} {built.version} is already published to {store.description} with "
                          "other files, features or threshold; versions are immutable, publish a new version",
                          reason="version-conflict", model=built.model_name, version=built.version)
    return existing


# ---- fetching -------------------------------------------------------------------------------
@dataclass
class VerifiedBundle:
    """A bundle installed under ``path`` after every check passed."""

    manifest: Manifest
    path: Path
    model_path: Path
    files: dict[str, Path]
    bytes_downloaded: int
    blobs_from_cache: int


def bundle_dir(dest_dir: Path, model: str, version: str) -> Path:
    """Where ``fetch_bundle`` installs a version: ``<dest_dir>/<model>/<version>``."""
    return Path(dest_dir) / model / version


def fetch_bundle(store: ObjectStore, model: str, version: str, key: SigningKey, dest_dir: Path, *,
                 cache_dir: Path | None = None) -> VerifiedBundle:
    """Download, verify and install ``model`` ``version`` under ``<dest_dir>/<model>/<version>``.

    The manifest's signature and every blob's sha256 are checked before anything is installed:
    files are assembled in a staging directory inside ``dest_dir`` and renamed into place last.
    Verified blobs are kept in ``cache_dir`` (default ``<dest_dir>/.blobs``) by sha256, so a
    version sharing files with an earlier one, or fetched again, downloads nothing; a cached blob
    is re-hashed on use, so a damaged cache costs a download, never a wrong model.

    Raises:
        BundleError: ``reason`` is one of manifest-missing, manifest-unreadable, bad-signature,
            manifest-invalid, manifest-mismatch, blob-missing, blob-size-mismatch,
            blob-hash-mismatch. ``dest_dir`` and the cache are then exactly as they were.
        StoreError: the store could not be read; ``dest_dir`` is unchanged too.
    """
    manifest, raw = read_manifest(store, model, version, key)
    dest_dir = Path(dest_dir)
    cache = Path(cache_dir) if cache_dir is not None else dest_dir / ".blobs"
    final = bundle_dir(dest_dir, model, version)
    installed = _installed(final, raw, manifest)
    if installed is not None:
        return installed
    created = [d for d in (dest_dir, *dest_dir.parents) if not d.exists()]
    staging = dest_dir / f".partial-{model}-{version}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    downloaded = from_cache = 0
    fresh: list[tuple[Path, str]] = []
    try:
        for role, entry in manifest.files.items():
            target = staging / role_filename(role)
            if _from_cache(cache, entry, target):
                from_cache += 1
                continue
            downloaded += _download_verified(store, entry, target, model, version, role)
            fresh.append((target, entry.sha256))
        (staging / "manifest.json").write_bytes(raw)
        # Everything verified: only now touch the cache and the install location.
        for target, sha in fresh:
            _cache_put(cache, sha, target)
        final.parent.mkdir(parents=True, exist_ok=True)
        if not _swap_into_place(staging, final, raw, manifest):
            shutil.rmtree(staging, ignore_errors=True)  # another process installed the same bytes first
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for d in created:  # directories this call created, innermost first
            try:
                d.rmdir()
            except OSError:
                break
        raise
    return _verified(final, manifest, downloaded, from_cache)


def installed_bundle(dest_dir: Path, model: str, version: str, key: SigningKey) -> VerifiedBundle:
    """The bundle ``fetch_bundle`` installed under ``dest_dir``, verified again without the store: the
    installed manifest's signature with ``key``, then every file's size and sha256 against it. What a node
    serves from when its store is unreachable or its current desired state fails verification.

    Raises:
        BundleError: ``reason`` installed-missing (never installed here), or what the manifest's check
            raises (bad-signature, manifest-invalid, ...), or installed-damaged (a file differs).
    """
    final = bundle_dir(dest_dir, model, version)
    try:
        raw = (final / "manifest.json").read_bytes()
    except OSError as e:
        raise BundleError(f"bundle {model} {version} is not installed under {dest_dir} ({type(e).__name__})",
                          reason="installed-missing", model=model, version=version) from e
    manifest = parse_manifest(raw, model, version, key, where=str(final / "manifest.json"))
    installed = _installed(final, raw, manifest)
    if installed is None:
        raise BundleError(f"bundle {model} {version} under {final} no longer matches its signed manifest (a file is "
                          "missing or changed); the node fetches it again when its store is reachable",
                          reason="installed-damaged", model=model, version=version)
    return installed


def _verified(final: Path, manifest: Manifest, downloaded: int, from_cache: int) -> VerifiedBundle:
    files = {role: final / role_filename(role) for role in manifest.files}
    return VerifiedBundle(manifest=manifest, path=final, model_path=files[MODEL_ROLE], files=files,
                          bytes_downloaded=downloaded, blobs_from_cache=from_cache)


def _installed(final: Path, raw: bytes, manifest: Manifest) -> VerifiedBundle | None:
    """The bundle already installed at ``final`` when it matches this manifest byte for byte."""
    try:
        if (final / "manifest.json").read_bytes() != raw:
            return None
        for role, entry in manifest.files.items():
            p = final / role_filename(role)
            if p.stat().st_size != entry.size or file_sha256(p) != entry.sha256:
                return None
    except OSError:
        return None
    return _verified(final, manifest, 0, len(manifest.files))


def _cache_path(cache: Path, sha: str) -> Path:
    return cache / "sha256" / sha[:2] / sha


def _from_cache(cache: Path, entry: FileEntry, target: Path) -> bool:
    """Copy a cached blob to ``target`` and verify the copy; False when absent or damaged."""
    src = _cache_path(cache, entry.sha256)
    try:
        if src.stat().st_size != entry.size:
            return False
        shutil.copyfile(src, target)
    except OSError:
        return False
    if file_sha256(target) == entry.sha256:
        return True
    target.unlink(missing_ok=True)
    return False


def _cache_put(cache: Path, sha: str, verified: Path) -> None:
    dst = _cache_path(cache, sha)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".tmp-{uuid.uuid4().hex}"
    try:
        shutil.copyfile(verified, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _download_verified(store: ObjectStore, entry: FileEntry, target: Path, model: str, version: str,
                       role: str) -> int:
    """Download ``entry``'s blob to ``target`` and check its size and sha256; returns the bytes."""
    def fail(reason: str, msg: str) -> BundleError:
        return BundleError(f"bundle {model} {version} refused ({reason}): {role} blob {entry.key}: {msg}",
                           reason=reason, model=model, version=version, key=entry.key)

    try:
        n = store.get_file(entry.key, target)
    except ObjectNotFound:
        raise fail("blob-missing", f"not in {store.description}; publish the version again") from None
    if n != entry.size:
        raise fail("blob-size-mismatch", f"{n} bytes, the manifest says {entry.size}")
    actual = file_sha256(target)
    if actual != entry.sha256:
        raise fail("blob-hash-mismatch", f"sha256 is {actual}, the manifest says {entry.sha256}")
    return n


def _swap_into_place(staging: Path, final: Path, raw: bytes, manifest: Manifest) -> bool:
    """Rename ``staging`` to ``final``; False when ``final`` already holds this very bundle.

    Replicas on one host may share an install directory: a verified install of the same manifest
    is never moved, since another process may be loading from it. Only a damaged install is moved
    aside and replaced.
    """
    if _installed(final, raw, manifest) is not None:
        return False
    if final.exists():
        old = final.parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
        try:
            os.replace(final, old)
        except FileNotFoundError:  # another process moved the damaged install aside just now
            old = None
        try:
            os.replace(staging, final)
        except OSError:
            if old is not None and not final.exists():
                os.replace(old, final)
            if _installed(final, raw, manifest) is not None:  # another process won the race with the same bytes
                return False
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return True
    try:
        os.replace(staging, final)
    except OSError:  # a concurrent install landed between the check and the rename
        if _installed(final, raw, manifest) is not None:
            return False
        raise
    return True
