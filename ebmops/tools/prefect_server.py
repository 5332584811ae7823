"""Which Prefect server a CLI flow reports to, and a temporary one that dies with the command.

A flow run needs a Prefect API. Without one, Prefect starts a temporary server per process
(12-27 s, measured at 21 s of a 91 s ``ebmops train``), and that server outlives a CLI killed with
SIGKILL (Prefect stops it at ``atexit``, which a killed process never reaches). So the CLI picks
the server itself, first found wins:

1. one Prefect's own settings name: ``PREFECT_API_URL`` exported or in the active profile (a
   test harness sets it the same way); used as is, as Prefect would;
2. ``orchestration.prefect_api_url``; checked at ``/health`` first, a dead one is an error;
3. the server of a running ``ebmops up`` stack (``<home>/stack/stack.json``, its pid still
   running the recorded command, ``/health`` answering), unless ``orchestration.use_stack`` is off;
4. a temporary server this process starts: the same app Prefect's own temporary server runs
   (``prefect.server.api.server:create_app``, ephemeral services, database under PREFECT_HOME),
   in a child that dies with its parent: on Linux the kernel sends it SIGTERM when the parent
   dies (``prctl(PR_SET_PDEATHSIG)``), and everywhere a thread in the child sees its parent
   gone (the parent pid changes) and stops it, with SIGKILL-like ``os._exit`` if the graceful
   stop hangs. A normal exit of the CLI stops it too.

Only Prefect's in-process settings point at the chosen server (``temporary_settings``), not the
environment: what reads ``PREFECT_API_URL`` itself (``rollout.approvals: auto``) behaves as before.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ebmops.core.errors import PrefectServerError
from ebmops.core.settings import Settings

# Environment of the temporary server, as Prefect's own temporary server gets it.
_SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
_PARENT_POLL_S = 0.5
_GRACEFUL_STOP_S = 10.0


@dataclass
class PrefectServer:
    """The Prefect API a command's flows report to."""

    api_url: str
    source: str            # PREFECT_API_URL | orchestration.prefect_api_url | stack | temporary
    detail: str            # for people: where the choice came from
    pid: int | None = None  # the temporary server's process

    def describe(self) -> str:
        return f"Prefect server: {self.api_url.removesuffix('/api')} ({self.detail})"


def _healthy(api_url: str, timeout_s: float = 3.0) -> bool:
    import httpx

    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def _configured_url() -> str | None:
    """What Prefect's settings name (environment, profile, a test harness's temporary settings)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def stack_server(settings: Settings) -> str | None:
    """The API URL of a running ``ebmops up`` stack's Prefect server, or None."""
    from ebmops.tools.stack import proc_cmdline, read_state

    state = read_state(settings)
    if not state:
        return None
    for svc in state.get("services") or []:
        if svc.get("kind") == "prefect" and svc.get("pid") and proc_cmdline(svc["pid"]) == svc.get("argv"):
            api = state.get("prefect_api_url") or f"{svc.get('url')}/api"
            return api if _healthy(api) else None
    return None


def resolve(settings: Settings) -> PrefectServer | None:
    """The server to use, or None when none runs (then a temporary one is needed)."""
    named = _configured_url()
    if named:
        src = "PREFECT_API_URL" if os.environ.get("PREFECT_API_URL") else "Prefect profile or settings"
        return PrefectServer(named, "PREFECT_API_URL", f"named by {src}")
    orch = settings.orchestration
    if orch.prefect_api_url:
        url = orch.prefect_api_url.rstrip("/")
        if not _healthy(url):
            raise PrefectServerError(f"orchestration.prefect_api_url {url} does not answer at {url}/health; start "
                                     "that server or unset the setting")
        return PrefectServer(url, "orchestration.prefect_api_url", "orchestration.prefect_api_url")
    if orch.use_stack:
        api = stack_server(settings)
        if api:
            return PrefectServer(api, "stack", f"the running `ebmops up` stack in {settings.home / 'stack'}")
    return None


# ---- the temporary server ---------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_temporary(settings: Settings, log_path: Path | None = None) -> tuple[subprocess.Popen, str]:
    """Start a temporary server that dies with this process; returns (process, API URL) once healthy."""
    from ebmops.core.waiting import wait_until

    port = _free_port()
    argv = [sys.executable, "-m", "ebmops.tools.prefect_server", "--port", str(port), "--parent", str(os.getpid())]
    env = {**os.environ, **_SERVER_ENV}
    env.pop("PREFECT_API_URL", None)
    log_path = log_path or settings.home / "prefect" / "temporary-server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{port}/api"
    try:
        wait_until(lambda: _healthy(api, 2.0), timeout_s=settings.orchestration.temporary_server_timeout_s,
                   what=f"temporary Prefect server on port {port}", proc=proc, log_path=log_path, interval_s=0.2,
                   error=PrefectServerError)
    except BaseException:
        stop_temporary(proc)
        raise
    return proc, api


def stop_temporary(proc: subprocess.Popen, grace_s: float = _GRACEFUL_STOP_S) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def flow_server(settings: Settings, announce: Callable[[str], None] = lambda _m: None) -> Iterator[PrefectServer]:
    """Point this process's Prefect at the server to use for the block; says which through ``announce``."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = resolve(settings)
    proc = None
    if server is None:
        announce("Prefect server: none running; starting a temporary one (it stops with this command; "
                 "`ebmops up` keeps one running)")
        proc, api = start_temporary(settings)
        server = PrefectServer(api, "temporary", "temporary: stops with this command", pid=proc.pid)
    announce(server.describe())
    ctx = nullcontext() if server.source == "PREFECT_API_URL" else temporary_settings(updates={PREFECT_API_URL:
                                                                                              server.api_url})
    try:
        with ctx:
            try:
                yield server
            finally:
                drain_workers()
    finally:
        if proc is not None:
            stop_temporary(proc)


def drain_workers(timeout_s: float = 10.0) -> None:
    """Send Prefect's queued logs and events now, while the server still runs: left to Prefect's own
    exit hook, they went to a server already stopped and retried for about 100 s (measured)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=timeout_s)
        except Exception:  # noqa: BLE001 - a worker that never started, or one already stopped
            pass


# ---- the child --------------------------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    """Stop this process when ``parent`` dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_POLL_S)
        os.kill(os.getpid(), signal.SIGTERM)  # uvicorn stops gracefully on SIGTERM ...
        time.sleep(_GRACEFUL_STOP_S)
        os._exit(1)                            # ... and if that hangs, the process ends anyway

    if os.getppid() != parent:  # the parent died before the watch was set up
        os._exit(1)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    import argparse

    import uvicorn

    ap = argparse.ArgumentParser(description="A temporary Prefect server that stops when --parent dies.")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--parent", type=int, required=True)
    args = ap.parse_args(argv)
    _die_with_parent(args.parent)
    uvicorn.run("prefect.server.api.server:create_app", factory=True, host="127.0.0.1", port=args.port,
                log_level="error", lifespan="on")


if __name__ == "__main__":
    main()
