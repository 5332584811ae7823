"""LocalStore: a region's object store as a directory (the embedded default).

Each key is a file under ``root``. Writes go to a temporary file under ``root/.tmp`` (same
filesystem), are flushed to disk, then renamed over the target: rename is atomic on POSIX, so a
reader sees the old file or the new one, never a partial file. ``.tmp`` is outside the key space
(keys cannot start with ``.``), so listings never show writes in progress.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ebmops.core.errors import ObjectNotFound, StoreError
from registry.objectstore.base import ObjectStore, check_key, check_prefix

_COPY_CHUNK = 1 << 20


class LocalStore(ObjectStore):
    """Object store rooted at a local directory (created on first use)."""

    def __init__(self, root: str | Path, *, fsync: bool = True):
        self.root = Path(root).expanduser().resolve()
        self.fsync = fsync
        self.description = f"local:{self.root}"

    # ---- helpers -------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _tmp_dir(self) -> Path:
        d = self.root / ".tmp"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _commit(self, tmp: Path, key: str) -> None:
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"{self.description}: cannot write {key}: {e}") from e

    def _write_tmp(self, write) -> Path:
        fd, name = tempfile.mkstemp(dir=self._tmp_dir(), prefix="put-")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    # ---- the port --------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> None:
        check_key(key)
        try:
            tmp = self._write_tmp(lambda f: f.write(data))
        except OSError as e:
            raise StoreError(f"{self.description}: cannot write {key}: {e}") from e
        self._commit(tmp, key)

    def put_file(self, key: str, path: Path) -> int:
        check_key(key)
        path = Path(path)
        size = path.stat().st_size  # FileNotFoundError for a missing source, as documented
        try:
            with open(path, "rb") as src:
                tmp = self._write_tmp(lambda f: shutil.copyfileobj(src, f, _COPY_CHUNK))
        except OSError as e:
            raise StoreError(f"{self.description}: cannot write {key} from {path}: {e}") from e
        self._commit(tmp, key)
        return size

    def get_bytes(self, key: str) -> bytes:
        p = self._path(key)
        try:
            return p.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"{self.description}: no object {key}", key=key) from None
        except OSError as e:
            raise StoreError(f"{self.description}: cannot read {key}: {e}") from e

    def get_file(self, key: str, path: Path) -> int:
        p = self._path(key)
        try:
            with open(p, "rb") as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst, _COPY_CHUNK)
                return dst.tell()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            if not p.is_file():
                raise ObjectNotFound(f"{self.description}: no object {key}", key=key) from None
            raise
        except OSError as e:
            raise StoreError(f"{self.description}: cannot read {key} into {path}: {e}") from e

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        p = self._path(key)
        try:
            st = p.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"{self.description}: no object {key}", key=key) from None
        if not p.is_file():
            raise ObjectNotFound(f"{self.description}: no object {key}", key=key)
        return st.st_size

    def list(self, prefix: str = "") -> list[str]:
        check_prefix(prefix)
        # Walk only the deepest directory the prefix names, then filter by string prefix.
        head = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / head if head else self.root
        if not start.is_dir():
            return []
        keys = []
        for dirpath, dirnames, filenames in os.walk(start):
            rel_dir = os.path.relpath(dirpath, self.root)
            if rel_dir == ".":
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                rel_dir = ""
            for name in filenames:
                key = f"{rel_dir}/{name}" if rel_dir else name
                if key.startswith(prefix) and not name.startswith("."):
                    keys.append(key.replace(os.sep, "/"))
        return sorted(keys)

    def probe(self) -> None:
        if not self.root.is_dir():
            raise StoreError(f"{self.description}: the directory does not exist (a wrong path, or its volume is "
                             "not mounted); nothing can have been published there")

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except IsADirectoryError:
            pass  # a prefix, not an object: nothing to delete
        except OSError as e:
            raise StoreError(f"{self.description}: cannot delete {key}: {e}") from e
