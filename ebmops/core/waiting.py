"""Wait for a process we started to become ready: one loop for nodes, the local stack and benchmarks."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Callable

from ebmops.core.errors import EbmopsError


def log_tail(path: Path | None, n: int = 2000) -> str:
    """The last ``n`` characters of a log file ('' when there is none)."""
    if path is None:
        return ""
    try:
        return Path(path).read_text(errors="replace")[-n:]
    except OSError:
        return ""


def wait_until(check: Callable[[], object], *, timeout_s: float, what: str, proc: subprocess.Popen | None = None,
               log_path: Path | None = None, interval_s: float = 0.1,
               error: type[Exception] = EbmopsError) -> float:
    """Poll ``check`` until it returns something true; returns the seconds waited.

    A ``check`` that raises counts as "not yet" (a server that does not listen yet). Fails at once,
    with the end of ``log_path``, when ``proc`` exits; and after ``timeout_s``."""
    t0 = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - t0
        except Exception:  # noqa: BLE001 - not up yet
            pass
        if proc is not None and proc.poll() is not None:
            raise error(f"{what}: the process exited with code {proc.returncode}"
                        + (f"; its log ({log_path}) ends with:\n{log_tail(log_path)}" if log_path else ""))
        if time.monotonic() - t0 > timeout_s:
            raise error(f"{what}: not ready within {timeout_s:.0f} s" + (f"; see {log_path}" if log_path else ""))
        time.sleep(interval_s)
