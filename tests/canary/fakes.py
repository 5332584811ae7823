"""In-memory ports of the rollout controller for tests of its logic (each real port has its own tests
against the real thing): region desired states and node samples, MLflow aliases, scripted approvals."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from canary.controller import Decision, VersionSamples
from ebmops.core.aliases import CHAMPION

REGIONS = ["us-east", "eu-west", "ap-south"]
TICK = 2000


@dataclass
class FakeTraffic:
    """Region desired states in memory; every samples() call is TICK more requests/events per served version
    (enough for the judge's power rule: +1 point of errors and silence at a 1 % alert rate are visible)."""

    canary_latency_factor: float = 1.0
    seed: int = 0
    desired: dict = field(default_factory=lambda: {r: ("1", None, 0.0) for r in REGIONS})
    writes: list = field(default_factory=list)  # distinct desired-state changes, in order
    prepared: list = field(default_factory=list)
    counters: dict = field(default_factory=dict)
    crash_after: int | None = None
    calls: int = 0

    def _tick(self):
        self.calls += 1
        if self.crash_after is not None and self.calls > self.crash_after:
            raise Crash(f"killed at call {self.calls}")

    def prepare(self, region, version):
        self._tick()
        self.prepared.append((region, version))

    def set_traffic(self, region, *, stable, canary, weight):
        self._tick()
        target = (stable, canary, weight if canary else 0.0)
        if self.desired[region] != target:  # idempotent, like write-if-different on the real store
            self.desired[region] = target
            self.writes.append((region, *target))

    def served(self, region):
        self._tick()
        return self.desired[region][0]

    def samples(self, region):
        self._tick()
        out = {}
        stable, canary, _ = self.desired[region]
        weight = self.desired[region][2]
        for v in filter(None, (stable, canary)):
            req, ev = self.counters.get((region, v), (0, 0))
            if not (v == stable and canary and weight >= 1.0):  # at 100 % the stable version serves nothing
                req, ev = req + TICK, ev + TICK
            self.counters[(region, v)] = (req, ev)
            factor = self.canary_latency_factor if v == canary else 1.0
            rng = np.random.default_rng(self.seed + self.calls)  # the same draws for both: only the factor differs
            out[v] = VersionSamples(requests=req, events=ev,
                                    latency_ms=rng.gamma(4.0, 0.5, TICK) * factor, outcomes=np.zeros(TICK),
                                    energies=rng.normal(0, 1, TICK), alerts=(rng.random(TICK) < 0.01).astype(float),
                                    expected_alert_rate=0.01)
        return out


class Crash(BaseException):
    """Stands for SIGKILL: nothing after the crash point runs."""


@dataclass
class FakeAliases:
    aliases: dict = field(default_factory=lambda: {CHAMPION: "1"})

    def get_alias(self, alias):
        return self.aliases.get(alias)

    def set_alias(self, alias, version):
        self.aliases[alias] = version


@dataclass
class ScriptedApprovals:
    answers: list = field(default_factory=list)  # Decision | None per call
    asked: list = field(default_factory=list)

    def wait(self, rollout_id, region, wave, *, summary, deadline, roster):
        self.asked.append((region, summary))
        return self.answers.pop(0) if self.answers else Decision(True, "alice")
