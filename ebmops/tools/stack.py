"""The whole control plane on one machine, as background processes: ``ebmops up`` / ``ebmops down``.

``up`` starts a Prefect server, an MLflow server, the process work pool ``local`` with a
worker, and one inference node per region; waits until each answers its health URL; then
deploys the flows in ``prefect.yaml``. Every process is started in its own session (so it
outlives ``up`` and a signal to its group reaches its children) and leaves under
``<home>/stack/``:

- ``<name>.pid``: the pid on the first line, the exact command line (JSON) on the second;
- ``logs/<name>.log``: its output;
- ``stack.json``: what runs where (URLs, ports, pids), for ``down`` and for people.

``down`` stops exactly those processes, and only while ``/proc/<pid>/cmdline`` still is the
recorded command line (a pid the kernel gave to another program is left alone), together with
what they started (the worker's flow-run processes live in sessions of their own).

This module does the work and prints nothing; ``ebmops/cli/stack.py`` is the command.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ebmops.core.errors import StackError, StackRunning
from ebmops.core.settings import Settings
from ebmops.core.waiting import wait_until

# Environment every started process gets unless the user exported otherwise (measured here: the
# MLflow job runner would start about ten extra processes and 2 GB).
_CHILD_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
    "PYTHONUNBUFFERED": "1",
}
POOL = "local"
GPU_POOL = "gpu"
GPU_TEMPLATE = Path("deploy/k8s/gpu-job-template.json")
# Stop order: consumers first, the Prefect server last (the worker reports to it as it stops).
_STOP_ORDER = ("worker", "node", "mlflow", "prefect")


@dataclass
class StackOptions:
    prefect_port: int = 4200
    mlflow_port: int = 5000
    host: str = "127.0.0.1"
    deploy: bool = True
    timeout_s: float = 180.0
    deploy_timeout_s: float = 600.0


@dataclass
class Service:
    """One background process of the stack."""

    name: str                      # file-safe: prefect, mlflow, worker, node-us-east
    kind: str                      # prefect | mlflow | worker | node
    what: str                      # for people
    pid: int | None = None
    argv: list[str] = field(default_factory=list)
    url: str | None = None         # what people open or call
    health_url: str | None = None
    port: int | None = None
    log: str | None = None


@dataclass
class StackReport:
    home: str
    stack_dir: str
    repo_dir: str
    prefect_api_url: str
    services: list[Service]
    pools: dict[str, str] = field(default_factory=dict)
    deployments: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    deploy_error: str | None = None   # the stack runs, but `prefect deploy` failed
    started_in_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


# ---- processes ------------------------------------------------------------------------------


def stack_dir(settings: Settings) -> Path:
    return settings.home / "stack"


def proc_cmdline(pid: int) -> list[str] | None:
    """The command line of a live process, or None when there is none (a zombie counts as gone)."""
    try:
        if _proc_state(pid) in (None, "Z", "X"):
            return None
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="surrogateescape") for a in raw.split(b"\0")[:-1]] if raw else None


def _proc_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ')'
    head, _, rest = raw.rpartition(")")
    return [head.split(" (", 1)[0]] + rest.split()  # [pid, state, ppid, pgrp, session, ...]


def _proc_state(pid: int) -> str | None:
    st = _proc_stat(pid)
    return st[1] if st else None


def _proc_start(pid: int) -> str | None:
    st = _proc_stat(pid)
    return st[20] if st and len(st) > 20 else None  # starttime: field 22 of stat


def alive(pid: int) -> bool:
    return _proc_state(pid) not in (None, "Z", "X")


def _all_procs() -> list[tuple[int, int, int]]:
    """(pid, ppid, pgrp) of every live process."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _proc_stat(int(d))
            if st and st[1] not in ("Z", "X"):
                out.append((int(d), int(st[2]), int(st[3])))
    return out


def _family(pid: int) -> list[tuple[int, str | None]]:
    """Live descendants of ``pid`` and members of its process group, with their start times
    (a pid checked against its start time cannot be mistaken for a reused one)."""
    procs = _all_procs()
    children: dict[int, list[int]] = {}
    for p, pp, _ in procs:
        children.setdefault(pp, []).append(p)
    found: set[int] = {p for p, _, g in procs if g == pid and p != pid}
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in found:
                found.add(c)
                todo.append(c)
    found.discard(pid)
    return [(p, _proc_start(p)) for p in sorted(found)]


def _signal_family(pid: int, family: list[tuple[int, str | None]], sig: int) -> None:
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for p, start in family:
        if start is not None and _proc_start(p) == start and alive(p):
            try:
                os.kill(p, sig)
            except (ProcessLookupError, PermissionError):
                pass


def _all_gone(pid: int, family: list[tuple[int, str | None]], leader_start: str | None) -> bool:
    if alive(pid) and _proc_start(pid) == leader_start:
        return False
    return not any(alive(p) and _proc_start(p) == s for p, s in family)


def stop_process(pid: int, argv: Sequence[str], grace_s: float = 8.0) -> tuple[str, int]:
    """Stop ``pid`` and what it started, if ``pid`` still runs ``argv``.

    SIGTERM to its group and descendants, then SIGINT (a Prefect worker stops on SIGINT after
    SIGTERM), then SIGKILL. Returns (outcome, number of other processes stopped with it)."""
    cmd = proc_cmdline(pid)
    if cmd is None:
        return "not running", 0
    if list(cmd) != list(argv):
        return f"pid {pid} now runs another program ({' '.join(cmd)[:80]}); left alone", 0
    leader_start = _proc_start(pid)
    family = _family(pid)
    for sig, wait in ((signal.SIGTERM, grace_s * 0.6), (signal.SIGINT, grace_s * 0.4), (signal.SIGKILL, 5.0)):
        if alive(pid):  # pick up what started since the last signal
            family += [f for f in _family(pid) if f not in family]
        _signal_family(pid, family, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if _all_gone(pid, family, leader_start):
                how = {signal.SIGTERM: "stopped", signal.SIGINT: "stopped (SIGINT)",
                       signal.SIGKILL: "killed"}[sig]
                return how, len(family)
            time.sleep(0.1)
    return f"pid {pid} or its children did not exit after SIGKILL", len(family)


def write_pidfile(path: Path, pid: int, argv: Sequence[str]) -> None:
    path.write_text(f"{pid}\n{json.dumps(list(argv))}\n")


def read_pidfile(path: Path) -> tuple[int, list[str] | None] | None:
    try:
        lines = path.read_text().splitlines()
        pid = int(lines[0].strip())
    except (OSError, ValueError, IndexError):
        return None
    try:
        argv = json.loads(lines[1]) if len(lines) > 1 else None
    except ValueError:
        argv = None
    return pid, argv


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now (SO_REUSEADDR as uvicorn sets it, so a
    socket in TIME_WAIT after ``down`` does not count as taken)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


# ---- up -------------------------------------------------------------------------------------


def repo_dir() -> Path:
    """The checkout whose prefect.yaml and flows the stack deploys (the worker runs flows from it)."""
    import ebmops

    here = Path(ebmops.__file__).resolve().parents[1]  # the checkout that holds the ebmops package
    for cand in (here, Path.cwd()):
        if (cand / "prefect.yaml").is_file() and (cand / "flows").is_dir():
            return cand
    raise StackError(f"no prefect.yaml next to the ebmops package ({here}) or in {Path.cwd()}: "
                     "`ebmops up` runs from a checkout of the repository (make install)")


def _child_env(settings: Settings, sdir: Path, api_url: str, repo: Path) -> dict[str, str]:
    env = {**_CHILD_DEFAULTS, **os.environ}
    env.update({
        "EBMOPS_HOME": str(settings.home),
        "EBMOPS_REPO_DIR": str(repo),
        "PREFECT_API_URL": api_url,
        # the stack's own Prefect home: profiles, the server's database, local results
        "PREFECT_HOME": str(sdir / "prefect"),
    })
    env.pop("PREFECT_API_KEY", None)  # a Prefect Cloud key must not be sent to the local server
    return env


def _spawn(svc: Service, argv: list[str], env: dict[str, str], log_dir: Path, cwd: Path) -> subprocess.Popen:
    log_path = log_dir / f"{svc.name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=cwd, start_new_session=True)
    svc.pid, svc.argv, svc.log = proc.pid, list(argv), str(log_path)
    return proc


def _wait_healthy(services: list[Service], procs: dict[str, subprocess.Popen], timeout_s: float,
                  progress: Callable[[str], None]) -> None:
    """Wait until each service answers its health URL (they started together: one deadline for all)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    for svc in (s for s in services if s.health_url):
        wait_until(lambda: httpx.get(svc.health_url, timeout=2.0).status_code == 200,
                   timeout_s=max(0.0, deadline - time.monotonic()), what=f"{svc.what} ({svc.health_url})",
                   proc=procs.get(svc.name), log_path=Path(svc.log) if svc.log else None, interval_s=0.25,
                   error=StackError)
        progress(f"{svc.what} is healthy: {svc.health_url}")


def _prefect(args: list[str], env: dict[str, str], cwd: Path, timeout_s: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prefect", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout_s)


def _ensure_pools(api: str, env: dict[str, str], repo: Path, progress: Callable[[str], None],
                  notes: list[str]) -> dict[str, str]:
    """Create the process pool `local` and the Kubernetes pool `gpu` (from deploy/k8s) unless they exist."""
    import httpx

    wanted = {POOL: ["--type", "process"]}
    template = repo / GPU_TEMPLATE
    if template.is_file():
        wanted[GPU_POOL] = ["--type", "kubernetes", "--base-job-template", str(template)]
    pools: dict[str, str] = {}
    for name, args in wanted.items():
        r = httpx.get(f"{api}/work_pools/{name}", timeout=10)
        if r.status_code == 200:
            pools[name] = f"{r.json().get('type')} (existed)"
            continue
        res = _prefect(["work-pool", "create", name, *args], env, repo, 120)
        if res.returncode == 0:
            pools[name] = args[1]
            progress(f"work pool {name!r} ({args[1]}) created")
        elif name == POOL:
            raise StackError(f"`prefect work-pool create {name}` failed:\n{(res.stdout + res.stderr)[-1500:]}")
        else:
            notes.append(f"work pool {name!r} not created ({(res.stdout + res.stderr).strip()[-200:]}); "
                         f"deployments on it were skipped")
    return pools


def _deployments(repo: Path) -> list[tuple[str, str]]:
    """(deployment name, work pool) of every deployment in prefect.yaml."""
    import yaml

    doc = yaml.safe_load((repo / "prefect.yaml").read_text()) or {}
    return [(d["name"], (d.get("work_pool") or {}).get("name")) for d in doc.get("deployments") or []]


def _deploy(env: dict[str, str], repo: Path, pools: dict[str, str], timeout_s: float,
            notes: list[str], log_path: Path) -> list[str]:
    declared = _deployments(repo)
    names = [n for n, pool in declared if pool in pools]
    args = ["--no-prompt", "deploy"]
    args += ["--all"] if len(names) == len(declared) else [a for n in names for a in ("--name", n)]
    try:
        res = _prefect(args, env, repo, timeout_s)
    except subprocess.TimeoutExpired:
        raise StackError(f"`prefect {' '.join(args)}` did not finish within {timeout_s:.0f} s; the stack is "
                         "still running (`ebmops down` stops it)") from None
    out = res.stdout + res.stderr
    log_path.write_text(out)
    if res.returncode != 0:
        raise StackError(f"`prefect {' '.join(args)}` failed (exit {res.returncode}); the stack is still running "
                         f"(`ebmops down` stops it). Output ends with:\n{out[-2500:]}")
    skipped = [n for n, pool in declared if pool not in pools]
    if skipped:
        notes.append(f"not deployed (no work pool): {', '.join(skipped)}")
    return names


def _wait_worker(api: str, pool: str, proc: subprocess.Popen, svc: Service, timeout_s: float) -> None:
    """Wait until the worker has registered with its pool (its first heartbeat)."""
    import httpx

    def registered() -> bool:
        r = httpx.post(f"{api}/work_pools/{pool}/workers/filter", json={}, timeout=5)
        return r.status_code == 200 and bool(r.json())

    wait_until(registered, timeout_s=timeout_s, what=f"the worker of pool {pool!r}", proc=proc, log_path=svc.log,
               interval_s=0.5, error=StackError)


def _preflight(settings: Settings, sdir: Path, ports: list[tuple[str, str, int]]) -> list[str]:
    """Refuse when a recorded process still runs or a port is taken; drop stale pid files."""
    running, stale = [], []
    for pf in sorted(sdir.glob("*.pid")):
        rec = read_pidfile(pf)
        cmd = proc_cmdline(rec[0]) if rec else None
        if rec and cmd is not None and (rec[1] is None or cmd == rec[1]):
            running.append(f"{pf.stem} (pid {rec[0]})")
        else:
            stale.append(pf.stem)
            pf.unlink(missing_ok=True)
    if running:
        raise StackRunning(f"the stack under {sdir} is already running: {', '.join(running)}; "
                           "`ebmops down` stops it (or set EBMOPS_HOME for a second stack)")
    taken = [f"{port} ({what}, {host})" for what, host, port in ports if not port_free(host, port)]
    if taken:
        raise StackRunning(f"port(s) already in use by another program: {', '.join(taken)}; stop that program or "
                           "choose others (--prefect-port, --mlflow-port, serving.base_port / "
                           "EBMOPS_SERVING__BASE_PORT for the nodes)")
    return [f"removed stale pid file {s}.pid (its process was gone)" for s in stale]


def _ports(settings: Settings, opts: StackOptions, local_mlflow: bool) -> list[tuple[str, str, int]]:
    """(what, host, port) of everything ``up`` binds; a port asked for twice is refused."""
    node_bind = "127.0.0.1" if settings.serving.host in ("", "localhost") else settings.serving.host
    ports = [("prefect server", opts.host, opts.prefect_port)]
    if local_mlflow:
        ports.append(("mlflow server", opts.host, opts.mlflow_port))
    ports += [(f"node {r}", node_bind, settings.node_port(r)) for r in settings.data.regions]
    dupes = {p for _, _, p in ports if [q for _, _, q in ports].count(p) > 1}
    if dupes:
        raise StackRunning(f"port(s) {', '.join(map(str, sorted(dupes)))} are asked for twice; choose distinct "
                           "--prefect-port, --mlflow-port and serving.base_port")
    return ports


@dataclass
class _Launch:
    """The processes ``up`` starts, recorded (pid file) as each starts, so a failure stops exactly them."""

    settings: Settings
    opts: StackOptions
    sdir: Path
    repo: Path
    env: dict
    progress: Callable[[str], None]
    notes: list[str]
    services: list[Service] = field(default_factory=list)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def log_dir(self) -> Path:
        return self.sdir / "logs"

    @property
    def api_base(self) -> str:
        return f"http://{self.opts.host}:{self.opts.prefect_port}"

    def _record(self, svc: Service, proc: subprocess.Popen) -> None:
        self.services.append(svc)
        self.procs[svc.name] = proc
        write_pidfile(self.sdir / f"{svc.name}.pid", svc.pid, svc.argv)

    def servers(self, tracking: str, local_mlflow: bool) -> None:
        host, o = self.opts.host, self.opts
        prefect = Service("prefect", "prefect", "Prefect server", url=self.api_base, port=o.prefect_port,
                          health_url=f"{self.api_base}/api/health")
        self._record(prefect, _spawn(prefect, [sys.executable, "-m", "prefect", "server", "start", "--host", host,
                                               "--port", str(o.prefect_port)], self.env, self.log_dir, self.repo))
        self.progress(f"Prefect server starting (pid {prefect.pid})")
        if not local_mlflow:
            self.notes.append(f"MLflow: using the configured tracking server {tracking}; no local one started")
            return
        artifacts = self.settings.resolved_artifact_root
        artifacts.mkdir(parents=True, exist_ok=True)
        mlflow = Service("mlflow", "mlflow", "MLflow server", url=f"http://{host}:{o.mlflow_port}",
                         port=o.mlflow_port, health_url=f"http://{host}:{o.mlflow_port}/health")
        argv = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking, "--artifacts-destination",
                str(artifacts), "--host", host, "--port", str(o.mlflow_port), "--workers", "1"]
        self._record(mlflow, _spawn(mlflow, argv, {**self.env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                                    self.log_dir, self.settings.home))
        self.progress(f"MLflow server starting (pid {mlflow.pid})")

    def nodes(self) -> None:
        from ebmops.tools.localnodes import start_nodes

        node_procs = None
        try:
            node_procs = start_nodes(self.settings, list(self.settings.data.regions), timeout_s=self.opts.timeout_s,
                                     env=self.env, log_dir=self.log_dir)
        finally:
            # start_nodes stops its nodes itself when one fails; record whatever runs
            for r, n in (node_procs.nodes.items() if node_procs else ()):
                self._record(Service(f"node-{r}", "node", f"node {r}", pid=n.pid, argv=list(n.process.args),
                                     url=n.url, health_url=f"{n.url}/healthz", port=self.settings.node_port(r),
                                     log=str(n.log_path)), n.process)
                self.progress(f"node {r} is healthy: {n.url}/healthz")

    def worker(self) -> None:
        worker = Service("worker", "worker", f"Prefect worker (pool {POOL})",
                         url=f"{self.api_base}/work-pools/work-pool/{POOL}")
        argv = [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--type", "process",
                "--name", f"ebmops-{POOL}"]
        self._record(worker, _spawn(worker, argv, self.env, self.log_dir, self.repo))
        _wait_worker(f"{self.api_base}/api", POOL, self.procs["worker"], worker, self.opts.timeout_s)
        self.progress(f"worker polling pool {POOL!r} (pid {worker.pid})")

    def stop_all(self) -> None:
        for svc in sorted(self.services, key=lambda s: _STOP_ORDER.index(s.kind)):
            stop_process(svc.pid, svc.argv)
            (self.sdir / f"{svc.name}.pid").unlink(missing_ok=True)


def up(settings: Settings, opts: StackOptions | None = None,
       progress: Callable[[str], None] = lambda _m: None) -> StackReport:
    """Start the stack (see the module docstring); on a failure before the deploy step
    everything started so far is stopped again."""
    opts = opts or StackOptions()
    t0 = time.monotonic()
    from registry.signing import signing_key

    signing_key(settings, verify_only=True)  # the nodes refuse to start without a key: fail first, clearly
    repo, sdir = repo_dir(), stack_dir(settings)
    (sdir / "logs").mkdir(parents=True, exist_ok=True)
    (sdir / "prefect").mkdir(exist_ok=True)
    api = f"http://{opts.host}:{opts.prefect_port}/api"
    tracking = settings.resolved_tracking_uri
    local_mlflow = not tracking.startswith(("http://", "https://", "databricks"))
    notes = _preflight(settings, sdir, _ports(settings, opts, local_mlflow))
    launch = _Launch(settings, opts, sdir, repo, _child_env(settings, sdir, api, repo), progress, notes)
    try:
        launch.servers(tracking, local_mlflow)
        launch.nodes()
        _wait_healthy([s for s in launch.services if s.kind in ("prefect", "mlflow")], launch.procs, opts.timeout_s,
                      progress)
        pools = _ensure_pools(api, launch.env, repo, progress, notes)
        launch.worker()
    except BaseException:
        launch.stop_all()
        raise

    report = StackReport(home=str(settings.home), stack_dir=str(sdir), repo_dir=str(repo), prefect_api_url=api,
                         services=launch.services, pools=pools, notes=notes)
    _write_state(sdir, report)
    if opts.deploy:
        progress("deploying the flows in prefect.yaml")
        try:
            report.deployments = _deploy(launch.env, repo, pools, opts.deploy_timeout_s, notes,
                                         sdir / "logs" / "deploy.log")
        except StackError as e:
            report.deploy_error = str(e)
    else:
        notes.append(f"deploy skipped (--no-deploy); later, with PREFECT_API_URL exported: cd {repo} && "
                     f"EBMOPS_REPO_DIR={repo} prefect --no-prompt deploy --all")
    report.started_in_s = round(time.monotonic() - t0, 1)
    _write_state(sdir, report)
    return report


def _write_state(sdir: Path, report: StackReport) -> None:
    (sdir / "stack.json").write_text(json.dumps(report.to_dict(), indent=2))


def read_state(settings: Settings) -> dict | None:
    try:
        return json.loads((stack_dir(settings) / "stack.json").read_text())
    except (OSError, ValueError):
        return None


# ---- down -----------------------------------------------------------------------------------


@dataclass
class StopResult:
    name: str
    pid: int | None
    outcome: str
    children: int = 0


def down(settings: Settings, grace_s: float = 8.0) -> list[StopResult]:
    """Stop every process whose pid file ``up`` wrote (only while its pid still runs the
    recorded command line), remove the pid files; returns what happened to each."""
    sdir = stack_dir(settings)
    files = sorted(sdir.glob("*.pid")) if sdir.is_dir() else []

    def order(pf: Path) -> int:
        stem = pf.stem
        kind = "node" if stem.startswith("node-") else stem
        return _STOP_ORDER.index(kind) if kind in _STOP_ORDER else -1

    results = []
    for pf in sorted(files, key=order):
        rec = read_pidfile(pf)
        if rec is None:
            results.append(StopResult(pf.stem, None, "unreadable pid file; removed"))
        elif rec[1] is None:
            outcome = ("no recorded command line; left alone" if alive(rec[0]) else "not running")
            results.append(StopResult(pf.stem, rec[0], outcome))
        else:
            outcome, n = stop_process(rec[0], rec[1], grace_s=grace_s)
            results.append(StopResult(pf.stem, rec[0], outcome, n))
        pf.unlink(missing_ok=True)
    if files:
        (sdir / "stack.json").unlink(missing_ok=True)
    return results
