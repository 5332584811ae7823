"""Real rollout processes killed in every phase, and two drivers of one rollout.

One stack for the module: a real Prefect server process, real MLflow (SQLite), the state store, two
real node processes (us-east, eu-west) fed with kdd99's normal connections, and one trained model
registered twice (v1 stable everywhere, v2 the same network: a canary that passes). Every rollout is
driven by ``ebmops rollout start|resume`` subprocesses.

A phase whose work is short (pending, analysing, promoting, rolling_back) is held open from the outside
by freezing the region's node process (SIGSTOP): the driver then waits in its call to that node, and the
test, polling the state store, sees it in the phase (and, where the phase writes a desired state, sees
that write in the region's store) before it sends SIGKILL. Progressing is caught in its bake,
awaiting_approval while it waits. Each resume in a new process first waits for the killed driver's lease
to expire (``rollout.lease_ttl_s``), then takes over.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager

import httpx
import pytest

from ebmops.core.settings import load_settings
from ebmops.services.authority import os_login
from ebmops.core.state import open_store
from tests.servers import free_port_run

pytestmark = pytest.mark.slow

REGIONS = ["us-east", "eu-west"]
LEASE_TTL_S = 3


@pytest.fixture(scope="module")
def stack(tmp_path_factory, data_home, kdd99):
    from ebmops.adapters.bundles import prepare
    from ebmops.core.runtime import env_overrides
    from ebmops.services import sync as sync_steps
    from ebmops.services import train as train_steps
    from ebmops.tools.localnodes import start_nodes
    from ebmops.tools.replay import Replayer
    from registry import ModelRegistry
    from tests.servers import prefect_server_process

    root = tmp_path_factory.mktemp("kill-every-phase")
    home = root / "home"
    (home / "data").mkdir(parents=True)
    (home / "data" / "kdd99.parquet").symlink_to(load_settings(home=data_home).data_dir / "kdd99.parquet")
    with ExitStack() as cleanup, ThreadPoolExecutor(1) as pool:
        server = prefect_server_process()  # starts (7-19 s) while the model trains
        starting = pool.submit(server.__enter__)
        cleanup.callback(lambda: starting.result() and server.__exit__(None, None, None))
        env = {**os.environ, "EBMOPS_HOME": str(home), "COLUMNS": "200",
               "EBMOPS_SYNC__SIGNING_KEY": "k" * 40, "EBMOPS_SERVING__BASE_PORT": str(free_port_run(2)),
               "EBMOPS_DATA__REGIONS": json.dumps(REGIONS), "EBMOPS_SERVING__POLL_INTERVAL_S": "30",
               "EBMOPS_TRAINING__EPOCHS": "1", "EBMOPS_TRAINING__HIDDEN": "[32, 32]",
               "EBMOPS_ROLLOUT__STEPS": "[0.5, 1.0]", "EBMOPS_ROLLOUT__BAKE_S": "1.5",
               "EBMOPS_ROLLOUT__APPROVALS": "state-store", "EBMOPS_ROLLOUT__ONCALL_ROSTER": json.dumps(["oncall", os_login()]),
               "EBMOPS_ROLLOUT__APPROVAL_TIMEOUT_S": "300", "EBMOPS_ROLLOUT__LEASE_TTL_S": str(LEASE_TTL_S),
               "EBMOPS_ROLLOUT__LEASE_WAIT_S": "30",
               # 1.5 s bakes hold about 60 requests per side: the judge's default of 50 would make a loaded
               # machine's window inconclusive now and then, and they are too few for the power rule's +1 point
               # of errors (the rule has its own tests; see test_rollout_e2e)
               "EBMOPS_ROLLOUT__ANALYSIS__MIN_SAMPLES": "20", "EBMOPS_ROLLOUT__ANALYSIS__POWER": "0",
               # v2 is v1's network judged against itself: every "fail" or "marginal" is a false alarm, which the
               # default alpha (0.05, two looks per rate) raises on a few % of steps (bench/results/judge.json,
               # "no change"); ten judged steps in this module would then fail it now and then (a wave rolled
               # back, an approval asked at the first step). The judge's false-alarm rate has its own bench.
               # Not 1e-4 either: this 1-epoch network's live alert rate on kdd99's normal rows sits off its
               # calibrated one (1.6 % against 0.52 %, binomial p 9e-6 in one run), so at 100 % the judge rightly
               # saw the canary off its calibration. This module is about drivers, leases and kills, not verdicts.
               "EBMOPS_ROLLOUT__ANALYSIS__ALPHA": "1e-12"}
        env.pop("EBMOPS_CONFIG", None)
        with env_overrides({k: v for k, v in env.items() if k.startswith("EBMOPS_")}):
            settings = load_settings()
            # one trained network, registered twice: v1 and v2 serve the same energies
            ds = train_steps.load(settings)
            part = train_steps.split(ds, settings)
            key = train_steps.run_key(ds, settings)
            cand = train_steps.finalize(train_steps.fit(ds, part, settings, key, progress=False), part, settings, key)
            v1 = train_steps.register(cand, {}, ds, settings, summary_md="# v1\n").version
            v2 = train_steps.register(cand, {}, ds, settings, summary_md="# v2\n").version
            ModelRegistry.from_settings(settings).set_alias("champion", v1)
            sync_steps.publish(settings, prepare(settings, v1), REGIONS)
            x = kdd99.features_array(kdd99.frame[kdd99.frame["label"] == 0])
            env["PREFECT_API_URL"] = starting.result()
            with start_nodes(settings, wait_ready=True) as nodes:
                with Replayer({r: n.url for r, n in nodes.nodes.items()}, x, batch=32, rate=40) as replay:
                    store = open_store(settings)
                    cleanup.callback(store.close)
                    yield {"env": env, "settings": settings, "v1": v1, "v2": v2, "nodes": nodes, "replay": replay,
                           "store": store, "root": root}


class Driver:
    """One ``ebmops`` subprocess (its own process group), its output in a log file."""

    def __init__(self, stack, *args: str, env: dict | None = None):
        self.log = stack["root"] / f"cli-{time.monotonic_ns()}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "ebmops.cli.main", *args],
                                         env={**stack["env"], **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def wait(self, timeout: float = 180) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"ebmops did not finish in {timeout} s:\n{self.output()[-4000:]}") from None


def wait_for(pred, what: str, *, driver: Driver | None = None, timeout: float = 120):
    """Poll ``pred`` (reads of the state store, the region stores) until it is true; fail at once when the
    driver exits instead."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if driver is not None and not driver.alive():
            raise AssertionError(f"waiting for {what}: the driver exited {driver.proc.returncode}:\n"
                                 f"{driver.output()[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f":\n{driver.output()[-4000:]}" if driver else ""))
        time.sleep(0.05)


@contextmanager
def frozen(stack, region: str):
    """The region's node process stopped (SIGSTOP): calls to it hang until they time out."""
    pid = stack["nodes"].nodes[region].pid
    os.killpg(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(pid, signal.SIGCONT)


def desired(stack, region: str) -> tuple:
    from registry.desired_state import read_desired
    from registry.objectstore.factory import store_for_region
    from registry.signing import signing_key

    s = stack["settings"]
    d = read_desired(store_for_region(s, region), s.registry.model_name, signing_key(s))
    return (d.stable_version, d.canary_version, d.canary_weight if d.canary_version else 0.0)


def region_of(stack, rid: str, region: str):
    return stack["store"].get_rollout(rid).region(region)


def driven_by(stack, rid: str, driver: Driver) -> bool:
    lease = stack["store"].get_lease(rid)
    return lease is not None and lease.pid == driver.pid


def served(stack, region: str) -> tuple:
    body = httpx.get(stack["nodes"].nodes[region].url + "/stats", timeout=10).json()
    return body["stable_version"], body.get("canary_version")


def kill_in(stack, driver: Driver, rid: str, region: str, phase: str, extra=lambda: True) -> None:
    """Wait until ``driver`` drives the rollout, the region is in ``phase`` and ``extra`` holds; SIGKILL it."""
    wait_for(lambda: driven_by(stack, rid, driver) and region_of(stack, rid, region).phase == phase and extra(),
             f"{region} in {phase} driven by pid {driver.pid}", driver=driver)
    driver.kill()
    assert region_of(stack, rid, region).phase == phase  # killed in that phase, nothing written after it
    stack["killed"].append(phase)


def audit_verify(stack) -> None:
    r = subprocess.run([sys.executable, "-m", "ebmops.cli.main", "audit", "verify"], env=stack["env"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def analyses_of(stack, rid: str) -> list[tuple]:
    return [(e.region, e.payload["step"]) for e in stack["store"].list_audit(limit=5000)
            if e.kind == "analysis" and e.payload.get("rollout") == rid]


def decide(stack, rid: str, *, approve: bool) -> None:
    """What `ebmops approve|reject ID --as oncall` does (without a paused Prefect run to resume: the
    decision goes to the state store, where the driver waits for it); the CLI has its own e2e test."""
    from ebmops.services.rollout import decide as decide_

    assert "PREFECT_API_URL" not in os.environ
    out = decide_(stack["settings"], stack["store"], rid, approve=approve, actor="oncall")
    assert out["via"] == "state-store"


def steps_of(stack, rid: str) -> list[tuple]:
    return [(e.region, e.payload["step"]) for e in stack["store"].list_audit(limit=5000)
            if e.kind == "rollout_step" and e.payload.get("rollout") == rid and "step" in e.payload]


def test_a_rollout_killed_in_every_phase_resumes_to_what_the_nodes_serve(stack):
    """One rollout over both regions: us-east is killed in pending, progressing, analysing,
    awaiting_approval and promoting and ends promoted; eu-west is rejected, killed in rolling_back and
    ends rolled back; so the rollout ends rolled_back with us-east on the new version."""
    store, v1, v2 = stack["store"], stack["v1"], stack["v2"]
    stack["killed"] = []
    model = stack["settings"].registry.model_name

    # pending: the canary's desired state is written, the node (frozen) has not applied it yet
    with frozen(stack, "us-east"):
        d = Driver(stack, "rollout", "start", v2)  # as this OS login, on the roster
        rid = wait_for(lambda: (ro := store.active_rollout(model)) and ro.id, "the rollout", driver=d)
        kill_in(stack, d, rid, "us-east", "pending", lambda: desired(stack, "us-east") == (v1, v2, 0.5))
    # progressing: killed in its bake (once the step is recorded)
    d = Driver(stack, "rollout", "resume", rid)
    kill_in(stack, d, rid, "us-east", "progressing", lambda: ("us-east", 0) in steps_of(stack, rid))
    # analysing: killed while it reads the (frozen) node's samples
    with frozen(stack, "us-east"):
        d = Driver(stack, "rollout", "resume", rid)
        kill_in(stack, d, rid, "us-east", "analysing")
    # awaiting_approval: killed while it waits for a human
    d = Driver(stack, "rollout", "resume", rid)
    kill_in(stack, d, rid, "us-east", "awaiting_approval")
    assert region_of(stack, rid, "us-east").step_index == 1  # both steps passed: the last one awaits approval
    # promoting: approved from another process; killed once the stable version is written, before the
    # (frozen) node applied it and before the phase moved on
    with frozen(stack, "us-east"):
        d = Driver(stack, "rollout", "resume", rid)
        wait_for(lambda: driven_by(stack, rid, d), "the resumed driver", driver=d)
        decide(stack, rid, approve=True)
        kill_in(stack, d, rid, "us-east", "promoting", lambda: desired(stack, "us-east") == (v2, None, 0.0))
    # rolling_back: the resumed driver promotes us-east and takes eu-west to its approval, which is
    # rejected; killed once the stable-only desired state is written, before the (frozen) node applied it
    d = Driver(stack, "rollout", "resume", rid)
    wait_for(lambda: region_of(stack, rid, "eu-west").phase == "awaiting_approval", "eu-west's approval request",
             driver=d)
    assert region_of(stack, rid, "us-east").phase == "promoted"
    with frozen(stack, "eu-west"):
        decide(stack, rid, approve=False)
        kill_in(stack, d, rid, "eu-west", "rolling_back", lambda: desired(stack, "eu-west") == (v1, None, 0.0))
    # the rest in one more process: eu-west back on v1, the rollout rolled back (exit 12: not promoted)
    d = Driver(stack, "rollout", "resume", rid)
    assert d.wait() == 12, d.output()[-4000:]
    assert stack["killed"] == ["pending", "progressing", "analysing", "awaiting_approval", "promoting",
                               "rolling_back"]
    ro = store.get_rollout(rid)
    assert ro.phase == "rolled_back" and not ro.active
    assert [(r.region, r.phase) for r in ro.regions] == [("us-east", "promoted"), ("eu-west", "rolled_back")]
    # what the nodes serve is what the store says, and what each region's desired state says
    assert served(stack, "us-east") == (v2, None) == desired(stack, "us-east")[:2]
    assert served(stack, "eu-west") == (v1, None) == desired(stack, "eu-west")[:2]
    # every step judged once, one decision per wave, each traffic step started once, despite six kills
    assert sorted(analyses_of(stack, rid)) == [(r, s) for r in sorted(REGIONS) for s in (0, 1)]
    assert sorted(steps_of(stack, rid)) == [(r, s) for r in sorted(REGIONS) for s in (0, 1)]
    assert [(x.kind, x.actor, x.region) for x in store.list_decisions(rid)] == [
        ("approve", "oncall", "us-east"), ("reject", "oncall", "eu-west")]
    audit_verify(stack)


def test_one_driver_per_rollout_a_second_is_refused_and_a_paused_one_is_fenced(stack):
    store, settings = stack["store"], stack["settings"]
    model = settings.registry.model_name
    stable = served(stack, "us-east")[0]
    version = stack["v1"] if stable == stack["v2"] else stack["v2"]
    first = Driver(stack, "rollout", "start", version, "--region", "us-east", "--bake", "1")
    rid = wait_for(lambda: (ro := store.active_rollout(model)) and ro.id, "the rollout", driver=first)
    wait_for(lambda: region_of(stack, rid, "us-east").phase == "awaiting_approval", "the approval request",
             driver=first)
    from ebmops.services.rollout import status

    lease = store.get_lease(rid)
    assert lease.pid == first.pid and status(store, rid)["driver"]["pid"] == first.pid  # `rollout status` shows it

    # a second driver of the same rollout waits (here 2 s), then exits naming the first
    second = Driver(stack, "rollout", "resume", rid, env={"EBMOPS_ROLLOUT__LEASE_WAIT_S": "2"})
    assert second.wait() == 17, second.output()[-4000:]
    out = second.output()
    assert f"pid {first.pid}" in out and lease.host in out and "until" in out and "waited 2 s" in out
    assert first.alive() and store.get_lease(rid).pid == first.pid

    # the first is paused past its lease (SIGSTOP; right after a renewal, so not inside one); a third takes
    # over once the lease expired, approves and, the node frozen, hangs in promoting; the first, continued,
    # finds its lease gone: its next write is refused and it exits
    renewed = store.get_lease(rid).renewed_at
    wait_for(lambda: store.get_lease(rid).renewed_at != renewed, "a renewal of the first driver", driver=first)
    os.killpg(first.pid, signal.SIGSTOP)
    try:
        with frozen(stack, "us-east"):
            third = Driver(stack, "rollout", "resume", rid, "--auto-approve")
            wait_for(lambda: driven_by(stack, rid, third) and region_of(stack, rid, "us-east").phase == "promoting",
                     "the third driver in promoting", driver=third)
            assert store.get_lease(rid).token > lease.token
            os.killpg(first.pid, signal.SIGCONT)
            assert first.wait() == 17, first.output()[-4000:]
            assert "lost its lease" in first.output() and f"pid {third.pid} took it over" in first.output()
    finally:
        if first.alive():
            os.killpg(first.pid, signal.SIGCONT)
    assert third.wait() == 0, third.output()[-4000:]
    ro = store.get_rollout(rid)
    assert ro.phase == "promoted" and desired(stack, "us-east")[:2] == (version, None)
    # the node applies it on the reload it was sent while frozen, at the latest when it polls its store
    wait_for(lambda: served(stack, "us-east") == (version, None), f"the node to serve v{version}")
    # nothing doubled by the stale driver: each step judged once, one decision, one promotion
    assert sorted(analyses_of(stack, rid)) == [("us-east", 0), ("us-east", 1)]
    assert [(x.kind, x.actor) for x in store.list_decisions(rid)] == [("approve", os_login())]
    promotions = [e for e in store.list_audit(limit=5000) if e.kind == "promotion" and e.payload.get("rollout") == rid]
    assert [e.region for e in promotions] == ["us-east"]  # one region of three: no champion promotion
    audit_verify(stack)
