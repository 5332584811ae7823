"""Which Prefect server CLI flows use, and a temporary one that dies with a killed CLI.

One real temporary server (started by a real child process standing in for the CLI) serves every
test here; the last test kills that process with SIGKILL and watches the server go."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ebmops.core.errors import PrefectServerError
from ebmops.core.settings import load_settings
from ebmops.core.waiting import wait_until
from ebmops.tools.stack import alive, proc_cmdline

ROOT = Path(__file__).resolve().parents[2]

HOLDER = textwrap.dedent("""
    import sys, time
    from ebmops.core.runtime import prepare_environment
    from ebmops.core.settings import load_settings
    from ebmops.tools.prefect_server import flow_server
    s = load_settings(home=sys.argv[1])
    prepare_environment(s)
    with flow_server(s, announce=lambda m: print(m, flush=True)) as srv:
        print("SERVER", srv.pid, srv.api_url, srv.source, flush=True)
        time.sleep(3600)
""")


@pytest.fixture(scope="module")
def cli_with_temporary_server(tmp_path_factory):
    """A process that, like an ebmops command with no server running, started a temporary one."""
    home = tmp_path_factory.mktemp("cli-home")
    out = home / "out.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PREFECT_API_URL", None)
    with open(out, "w") as f:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(home)], stdout=f, stderr=subprocess.STDOUT,
                                env=env, cwd=home)
    try:
        wait_until(lambda: "SERVER " in out.read_text(), timeout_s=120, what="temporary server", proc=proc,
                   log_path=out)
        line = next(x for x in out.read_text().splitlines() if x.startswith("SERVER "))
        _, pid, api, source = line.split()
        yield {"proc": proc, "server_pid": int(pid), "api": api, "source": source, "output": out.read_text()}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _no_named_server():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(restore_defaults={PREFECT_API_URL})


def test_with_no_server_the_command_starts_a_temporary_one_and_says_so(cli_with_temporary_server):
    srv = cli_with_temporary_server
    assert srv["source"] == "temporary"
    assert "starting a temporary one" in srv["output"]
    assert f"Prefect server: {srv['api'].removesuffix('/api')} (temporary" in srv["output"]
    import httpx

    assert httpx.get(srv["api"] + "/health", timeout=5).status_code == 200


def test_a_running_stack_server_is_used_instead_of_a_temporary_one(cli_with_temporary_server, tmp_path):
    from ebmops.tools.prefect_server import resolve

    srv = cli_with_temporary_server
    s = load_settings(home=tmp_path / "home")
    sdir = s.home / "stack"
    sdir.mkdir(parents=True)
    # the stack's record of its Prefect server, pointing at a live server process and its real command line
    state = {"prefect_api_url": srv["api"], "services": [
        {"name": "prefect", "kind": "prefect", "pid": srv["server_pid"], "argv": proc_cmdline(srv["server_pid"]),
         "url": srv["api"].removesuffix("/api")}]}
    (sdir / "stack.json").write_text(json.dumps(state))
    with _no_named_server():
        found = resolve(s)
        assert found is not None and found.source == "stack" and found.api_url == srv["api"]
        assert "ebmops up" in found.describe()
        # use_stack off: no server is found (the command would start a temporary one)
        assert resolve(load_settings(home=s.home, orchestration={"use_stack": False})) is None
        # a stack record whose pid now runs another program is not trusted
        state["services"][0]["argv"] = [sys.executable, "-m", "prefect", "server", "start", "--port", "1"]
        (sdir / "stack.json").write_text(json.dumps(state))
        assert resolve(s) is None


def test_a_named_server_wins_and_a_dead_named_one_is_a_clear_error(cli_with_temporary_server, tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from ebmops.tools.prefect_server import flow_server, resolve

    srv = cli_with_temporary_server
    home = tmp_path / "home"
    with _no_named_server():
        named = resolve(load_settings(home=home, orchestration={"prefect_api_url": srv["api"]}))
        assert named.source == "orchestration.prefect_api_url" and named.api_url == srv["api"]
        said = []
        with flow_server(load_settings(home=home, orchestration={"prefect_api_url": srv["api"]}),
                         announce=said.append):
            assert PREFECT_API_URL.value() == srv["api"]  # Prefect in this process now reports there
        assert said == [f"Prefect server: {srv['api'].removesuffix('/api')} (orchestration.prefect_api_url)"]
        with pytest.raises(PrefectServerError, match="orchestration.prefect_api_url http://127.0.0.1:9/api"):
            resolve(load_settings(home=home, orchestration={"prefect_api_url": "http://127.0.0.1:9/api"}))
    with temporary_settings(updates={PREFECT_API_URL: srv["api"]}):
        assert resolve(load_settings(home=home)).source == "PREFECT_API_URL"


def test_the_temporary_server_stops_when_the_cli_is_killed(cli_with_temporary_server):
    srv = cli_with_temporary_server
    assert alive(srv["server_pid"])
    srv["proc"].send_signal(signal.SIGKILL)  # no atexit, no finally: only the child's own watch can act
    srv["proc"].wait()
    wait_until(lambda: not alive(srv["server_pid"]), timeout_s=30, what="the orphaned temporary server to exit")
    import httpx

    with pytest.raises(httpx.HTTPError):
        httpx.get(srv["api"] + "/health", timeout=2)
