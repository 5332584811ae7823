"""Start and stop regional nodes as local processes (the demo, ``ebmops up``, benchmarks, tests).

Each node is its own process (``python -m ebmops.cli.main node --region R``): on a small
machine two single-threaded processes beat one process with two threads, and a node that
crashes takes no other region with it. The environment is inherited, so the nodes resolve
the same settings (home, stores, signing key) as the caller.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from ebmops.core.errors import EbmopsError
from ebmops.core.settings import Settings
from ebmops.core.waiting import wait_until


class NodeStartError(EbmopsError):
    """A node process exited or did not answer in time."""


@dataclass
class LocalNode:
    region: str
    url: str
    process: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class LocalNodes:
    """Node processes started together; a context manager that stops them all."""

    nodes: dict[str, LocalNode] = field(default_factory=dict)

    def __enter__(self) -> "LocalNodes":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self, timeout_s: float = 10.0) -> None:
        for n in self.nodes.values():
            if n.process.poll() is None:
                n.process.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
        deadline = time.monotonic() + timeout_s
        for n in self.nodes.values():
            try:
                n.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                n.process.kill()
                n.process.wait()


def start_nodes(settings: Settings, regions: Sequence[str] | None = None, *, wait_ready: bool = False,
                timeout_s: float = 60.0, env: Mapping[str, str] | None = None,
                log_dir: Path | None = None) -> LocalNodes:
    """Start one node per region on its configured port and wait until each answers ``/healthz``
    (or, with ``wait_ready``, ``/readyz``: a model is loaded). Logs go to ``<home>/logs/node-<region>.log``."""
    import httpx

    regions = list(regions or settings.data.regions)
    log_dir = Path(log_dir or settings.home / "logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    child_env = {**os.environ, "EBMOPS_HOME": str(settings.home), **(env or {})}
    nodes = LocalNodes()
    try:
        for region in regions:
            log_path = log_dir / f"node-{region}.log"
            log = open(log_path, "ab")  # noqa: SIM115 - the child owns the handle
            proc = subprocess.Popen([sys.executable, "-m", "ebmops.cli.main", "node", "--region", region],
                                    stdout=log, stderr=subprocess.STDOUT, env=child_env, start_new_session=True)
            log.close()
            nodes.nodes[region] = LocalNode(region=region, url=settings.node_url(region), process=proc,
                                            log_path=log_path)
        path = "/readyz" if wait_ready else "/healthz"
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=1.0) as client:
            for n in nodes.nodes.values():
                wait_until(lambda: client.get(n.url + path).status_code == 200,
                           timeout_s=max(0.1, deadline - time.monotonic()), what=f"node {n.region} ({n.url}{path})",
                           proc=n.process, log_path=n.log_path, error=NodeStartError)
    except BaseException:
        nodes.stop()
        raise
    return nodes
