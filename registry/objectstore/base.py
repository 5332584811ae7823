"""The ObjectStore port: a flat namespace of keys holding immutable-until-overwritten bytes.

The contract every implementation keeps (tests/registry/test_objectstore_contract.py runs it on
each one):

* Keys are relative, ``/``-separated paths of safe segments (see :func:`check_key`); the same
  key means the same object on every implementation.
* A write is atomic: a concurrent reader sees the whole old object, the whole new object, or
  (for a new key) nothing, never a prefix. Local files go to a temporary file and are renamed;
  S3 PUTs and multipart uploads become visible only when complete.
* Once a write returns, every later read (from any process) sees it.
* A missing key raises :class:`ebmops.core.errors.ObjectNotFound`; any other failure raises
  :class:`ebmops.core.errors.StoreError` with the store and key in the message.
* Implementations are safe to share between threads.

The store knows nothing about bundles or signatures; ordering (blobs before manifests before
the desired state) is the caller's job and is what makes a reader never see a dangling reference.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from pathlib import Path

_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.=+-]*$")


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid object key, else raise ValueError.

    A key is 1-512 characters of ``/``-separated segments; each segment starts with a letter,
    digit or ``_`` and holds only letters, digits and ``_ . = + -``. That keeps keys portable
    (no ``..``, no leading ``/``, no hidden files, no case tricks with separators) and lets the
    local store use them as paths without escaping its root.
    """
    if not isinstance(key, str) or not key or len(key) > 512:
        raise ValueError(f"object key must be a non-empty string of at most 512 characters, got {key!r}")
    bad = [seg for seg in key.split("/") if not _SEGMENT.match(seg)]
    if bad:
        raise ValueError(f"object key {key!r} has invalid segments {bad}: use letters, digits and _ . = + - , "
                         "not starting with '.' or '-', separated by single '/'")
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a key-like string (may end in ``/`` or mid-segment)."""
    if prefix == "":
        return prefix
    stripped = prefix[:-1] if prefix.endswith("/") else prefix
    check_key(stripped)
    return prefix


class ObjectStore(ABC):
    """A region's object store. See the module docstring for the contract."""

    #: Short description used in error messages and logs, e.g. ``local:/srv/stores/us-east``.
    description: str = "object store"

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing any object there, atomically.

        Args:
            key: object key (see :func:`check_key`).
            data: the complete object.
        Raises:
            StoreError: the store refused the write or could not be reached.
        """

    @abstractmethod
    def put_file(self, key: str, path: Path) -> int:
        """Store the contents of the local file ``path`` under ``key``, atomically.

        Large files may be uploaded in concurrent parts; the object still appears only when complete.

        Returns:
            the number of bytes stored.
        Raises:
            FileNotFoundError: ``path`` does not exist.
            StoreError: the store refused the write or could not be reached.
        """

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Return the whole object under ``key``.

        Raises:
            ObjectNotFound: no object under ``key``.
            StoreError: any other failure.
        """

    @abstractmethod
    def get_file(self, key: str, path: Path) -> int:
        """Download the object under ``key`` into the local file ``path`` (created or replaced).

        Streams rather than holding the object in memory. On failure ``path`` may hold a partial
        file; callers download into a temporary location and verify before using it.

        Returns:
            the number of bytes written.
        Raises:
            ObjectNotFound: no object under ``key``.
            StoreError: any other failure.
        """

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key`` (a prefix of other keys is not an object)."""

    @abstractmethod
    def size(self, key: str) -> int:
        """Size in bytes of the object under ``key``.

        Raises:
            ObjectNotFound: no object under ``key``.
        """

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """All keys starting with ``prefix`` (plain string prefix, S3 semantics), sorted.

        An empty result is not an error, also when the bucket or directory does not exist yet.
        """

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object under ``key``; removing a missing key is not an error."""

    @abstractmethod
    def probe(self) -> None:
        """Check that the store itself exists and answers (a directory, a bucket), so "nothing is stored
        here" can be told apart from "this store is missing or unreachable".

        Raises:
            StoreError: the directory or bucket does not exist, or the endpoint does not answer.
        """

    def size_or_none(self, key: str) -> int | None:
        """Size of the object under ``key``, or None when there is none (one round trip)."""
        from ebmops.core.errors import ObjectNotFound

        try:
            return self.size(key)
        except ObjectNotFound:
            return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"
