"""Atomic file writes for checkpoints and exported models.

A process can be killed at any instruction, including halfway through writing a file. Every
artifact is therefore written to a temporary file in the same directory, flushed to disk,
and renamed over the target with ``os.replace``, which is atomic on POSIX and Windows: a
reader sees the old complete file or the new complete file, never a torn one. A leftover
temporary file from a killed writer is harmless (readers never open it);
:func:`remove_stale_temps` clears them when a writer starts again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(f)`` on a temporary file, then move it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the rename must not land before the bytes do
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def remove_stale_temps(path: Path) -> None:
    """Delete temporary files that killed writers of ``path`` left behind (one writer per path at a time)."""
    path = Path(path)
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        tmp.unlink(missing_ok=True)
