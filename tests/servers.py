"""Real servers for integration tests, started on loopback in private temporary directories."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).exists():
            return str(d / name)
    raise RuntimeError(f"PostgreSQL's {name} is not installed; install the postgresql package")


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr or proc.stdout}")


@contextmanager
def postgres_server() -> Iterator[str]:
    """A private PostgreSQL cluster on loopback; yields its SQLAlchemy URL."""
    # Its own directory under /tmp: pytest's tmp dirs are private to root, and the server
    # must run as the unprivileged postgres user.
    workdir = Path(tempfile.mkdtemp(prefix="ebmops-pg-"))
    data, sock = workdir / "pgdata", workdir / "pgsock"
    sock.mkdir()
    if os.geteuid() == 0:
        for p in (workdir, sock):
            shutil.chown(p, "postgres")
    _run(_as_postgres([_pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]))
    port = free_port()
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off"
    _run(_as_postgres([_pg_bin("pg_ctl"), "-D", str(data), "-o", opts, "-w", "-l", str(workdir / "pg.log"), "start"]))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres([_pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)


def wait_http(url: str, timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except Exception as e:  # noqa: BLE001 - any connection error means not up yet
            last = e
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s: {last}")
