"""Shared pieces of the serving and sync benchmarks: the machine block, subprocess servers that are
always stopped, process memory, the default model, MLflow registration and node start-up.

Servers run as subprocesses in their own session (process group), so a benchmark that fails or
is interrupted still stops them and every child they started (``server_process``).
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # registry/, serving/, training/ are top-level packages of the repo
    sys.path.insert(0, str(ROOT))

SIGNING_SECRET = "bench-signing-key-" + "b" * 32  # HMAC secret shared by publisher and nodes (>= 32 chars)


# ---- machine ----------------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(**extra) -> dict:
    """The machine block every bench/results/*.json carries (same keys as gate.json and train.json)."""
    import torch

    return {"platform": platform.platform(), "python": platform.python_version(), "cpu_model": cpu_model(),
            "cores": os.cpu_count(), "torch": torch.__version__, "numpy": np.__version__,
            "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None, **extra}


# ---- processes --------------------------------------------------------------------------------------------

def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append(int(d.name))
    return out


def process_tree(pid: int) -> list[int]:
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(_children(p))
    return tree


def rss_mb(pid: int, children: bool = True) -> float:
    """Resident memory (VmRSS) of ``pid``, plus every descendant with ``children``, in MiB."""
    total_kb = 0
    for p in (process_tree(pid) if children else [pid]):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
                    break
        except OSError:
            pass
    return total_kb / 1024.0


def cpu_seconds(pid: int, children: bool = True) -> float:
    """User + system CPU seconds used so far by ``pid`` (and its live descendants)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in (process_tree(pid) if children else [pid]):
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
            f = stat[stat.rindex(")") + 2:].split()
            total += int(f[11]) + int(f[12])
        except (OSError, ValueError, IndexError):
            pass
    return total / tick


def stop_process(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGINT the process group, then SIGKILL whatever is left of it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # children (uvicorn under `mlflow models serve`) included
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


@contextmanager
def server_process(cmd: Sequence[str], env: dict, log_path: Path, cwd: Path | None = None) -> Iterator[subprocess.Popen]:
    """A server subprocess in its own process group, logging to ``log_path``; always stopped."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "wb")
    proc = subprocess.Popen(list(cmd), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                            start_new_session=True)
    try:
        yield proc
    finally:
        stop_process(proc)
        log.close()


def log_tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, proc: subprocess.Popen | None = None,
               log_path: Path | None = None, interval_s: float = 0.1) -> float:
    """Poll ``check`` until true; returns the seconds waited. Fails early when ``proc`` exits."""
    from ebmops.core.waiting import wait_until as wait

    return wait(check, timeout_s=timeout_s, what=what, proc=proc, log_path=log_path, interval_s=interval_s,
                error=RuntimeError)


def http_status(url: str, method: str = "GET", timeout: float = 2.0) -> int:
    import httpx

    return httpx.request(method, url, timeout=timeout).status_code


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the model --------------------------------------------------------------------------------------------

def default_model(path: Path, x: np.ndarray, *, seed: int = 0, quantile: float = 0.995) -> tuple[Path, float, dict]:
    """The default EBM (``training.model.EnergyMLP``, ``TrainingSettings().hidden``), standardisation
    fitted on ``x``, weights untrained (seeded), threshold the ``quantile`` of its energies on ``x``,
    exported with ``training.export.export_torchscript``. Returns (path, threshold, description)."""
    import torch

    from ebmops.core.settings import TrainingSettings
    from training.export import export_torchscript
    from training.model import build_model, fit_standardisation

    cfg = TrainingSettings()
    mean, std = fit_standardisation(x, cfg.std_floor)
    model = build_model(x.shape[1], list(cfg.hidden), mean, std, seed=seed).eval()
    with torch.inference_mode():
        energies = model(torch.from_numpy(x[:20_000])).numpy()
    threshold = float(np.quantile(energies, quantile))
    model.threshold.fill_(threshold)
    export_torchscript(model, path)
    return path, threshold, {"class": "training.model.EnergyMLP", "n_features": int(x.shape[1]),
                             "hidden": list(cfg.hidden), "trained": False, "seed": seed,
                             "standardisation": "fitted on the benchmark events",
                             "threshold": f"{quantile} quantile of its energies",
                             "export": "training.export.export_torchscript"}


def register_in_mlflow(settings, model_path: Path, x: np.ndarray, features: list[str], threshold: float) -> str:
    """Log ``model_path`` as a training run and register it (ModelRegistry, as ``ebmops train`` does);
    returns the version."""
    from registry import ModelRegistry

    reg = ModelRegistry.from_settings(settings)
    run_id = reg.log_training_run(params={"bench": "serving"}, metrics={}, tags={"dataset": "kdd99"},
                                  scripted_path=model_path, input_example=np.ascontiguousarray(x[:5]),
                                  threshold=threshold, feature_names=list(features), device="cpu",
                                  data_fingerprint="sha256:" + "0" * 64, run_name="bench")
    info = reg.register(run_id, tags={"gate.verdict": "pass"}, alias="candidate")
    return info.version


# ---- nodes ------------------------------------------------------------------------------------------------

def node_env(home: Path, extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EBMOPS_")}
    env.update({"EBMOPS_HOME": str(home), "EBMOPS_SYNC__SIGNING_KEY": SIGNING_SECRET, "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")})
    env.update(extra or {})
    return env


def node_cmd(region: str, port: int) -> list[str]:
    return [sys.executable, "-m", "ebmops.cli.main", "node", "--region", region, "--port", str(port)]


# ---- the LitServe peer ------------------------------------------------------------------------------------

LITSERVE_SPEC = ("litserve==0.2.19", "torch==2.13.0", "numpy")
LITSERVE_VENV = ROOT / ".ebmops" / "bench-venvs" / "litserve"  # git-ignored (.ebmops/)


def litserve_python(venv: Path = LITSERVE_VENV) -> Path:
    """The Python of a virtual environment with LitServe (its own: LitServe needs a newer FastAPI than
    ebmops pins); created and installed from the package index on first use (a few minutes)."""
    py = venv / "bin" / "python"
    stamp = venv / ".installed"
    if not stamp.is_file() or stamp.read_text() != " ".join(LITSERVE_SPEC):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *LITSERVE_SPEC], check=True)
        stamp.write_text(" ".join(LITSERVE_SPEC))
    return py


def litserve_cmd(python: Path, model: Path, port: int) -> list[str]:
    return [str(python), str(ROOT / "bench" / "litserve_server.py"), "--model", str(model), "--port", str(port)]
