"""``ebmops down`` stops only what ``up`` recorded. (``up`` itself, with every deployment run through a
real worker, is tested end to end in tests/flows/test_deployments_e2e.py.)"""

from __future__ import annotations

import subprocess
import sys


def test_down_leaves_a_pid_that_runs_another_program_alone(tmp_path):
    from ebmops.core.settings import load_settings
    from ebmops.tools.stack import down, write_pidfile

    s = load_settings(home=tmp_path / "home")
    sdir = s.home / "stack"
    sdir.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_pidfile(sdir / "worker.pid", other.pid, [sys.executable, "-m", "prefect", "worker", "start"])
        write_pidfile(sdir / "mlflow.pid", 2 ** 22 + 7, [sys.executable, "-m", "mlflow", "server"])  # no such pid
        results = {r.name: r.outcome for r in down(s)}
        assert "left alone" in results["worker"]
        assert results["mlflow"] == "not running"
        assert other.poll() is None, "a process that is not the recorded command line must not be signalled"
        assert not list(sdir.glob("*.pid"))
    finally:
        other.kill()
        other.wait()
