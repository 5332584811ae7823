"""The rollout controller: one persisted transition at a time, no state in memory.

``RolloutController.advance(rollout_id)`` reads the rollout from the state store, finds the first
region (in wave order) that is not finished, and performs exactly one step of that region's
state machine (canary/phases.py): act on the outside world first (idempotently: "make the
desired state equal X"), then persist the new phase with a compare-and-set. A process killed
between the two repeats the action on resume, which changes nothing the second time; a process
killed after the write resumes from the next phase. So ``run`` can be killed at any point and
``run`` again continues without repeating a completed step or leaving a region half-changed.

Region path::

    pending -> progressing(step 0) -> analysing -> progressing(step 1) -> ... -> analysing(last)
            -> [awaiting_approval] -> promoting -> promoted
    analysing: fail -> rolling_back -> rolled_back (the rollout stops; later regions are aborted)
               marginal / inconclusive -> awaiting_approval (a human decides to go on or roll back)

Rollout path: pending -> progressing (while regions advance) -> analysing (every region's node
serves the version) -> promoting (aliases ``champion`` / ``previous-champion``) -> promoted; or
progressing -> rolling_back -> rolled_back when a region rolled back.

The outside world is reached only through the ports below, so the controller is tested with
in-memory ports and run for real with ebmops/steps/rollout.py's adapters.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Callable, Protocol

import numpy as np

from canary.judge import JudgeVerdict, judge
from canary.phases import Phase, TransitionRefused, is_terminal
from canary.plan import RolloutPlan

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous-champion"


def region_alias(region: str) -> str:
    """The MLflow alias of the version a region serves as stable after a promotion."""
    return f"prod-{region}"


# ---- ports ----------------------------------------------------------------------------------
class SamplesUnavailable(Exception):
    """Some of a region's node replicas could not be read: the judge holds instead of judging part of the region."""


@dataclass(frozen=True)
class VersionCounters:
    """Totals a node reports for one version, to cut "samples since the step began" from its rings;
    ``parts``: each replica's (requests, events), for pooled samples."""

    requests: int = 0
    events: int = 0
    parts: tuple = ()


@dataclass
class VersionSamples:
    """Recent samples of one version in one region (oldest first), with running totals."""

    requests: int
    events: int
    latency_ms: np.ndarray
    outcomes: np.ndarray  # 0 scored / 1 failed, per request
    energies: np.ndarray  # gauge-normalised energies per event
    alerts: np.ndarray    # 0/1 per event

    parts: tuple = ()  # per replica, when pooled from several (oldest first within each)

    @classmethod
    def empty(cls) -> "VersionSamples":
        return cls(0, 0, *(np.empty(0) for _ in range(4)))

    @classmethod
    def pooled(cls, parts: list["VersionSamples"]) -> "VersionSamples":
        """One sample of a region's replicas (the judge's tests do not depend on order)."""
        return cls(sum(p.requests for p in parts), sum(p.events for p in parts),
                   *(np.concatenate([getattr(p, a) for p in parts])
                     for a in ("latency_ms", "outcomes", "energies", "alerts")), parts=tuple(parts))

    def counters(self) -> dict:
        """What ``since`` needs later (stored as the step's baseline)."""
        out: dict = {"requests": self.requests, "events": self.events}
        if self.parts:
            out["parts"] = [[p.requests, p.events] for p in self.parts]
        return out

    def since(self, base: VersionCounters) -> "VersionSamples":
        """Only the samples taken after ``base`` was read (bounded by the node's window); pooled samples are
        cut replica by replica when ``base`` has the same replicas."""
        if self.parts and len(base.parts) == len(self.parts):
            return VersionSamples.pooled([p.since(VersionCounters(*b)) for p, b in zip(self.parts, base.parts)])
        nr = max(0, min(len(self.latency_ms), self.requests - base.requests))
        ne = max(0, min(len(self.energies), self.events - base.events))
        return VersionSamples(self.requests, self.events, self.latency_ms[len(self.latency_ms) - nr:],
                              self.outcomes[len(self.outcomes) - nr:], self.energies[len(self.energies) - ne:],
                              self.alerts[len(self.alerts) - ne:])


class TrafficPort(Protocol):
    def prepare(self, region: str, version: str) -> None:
        """Make ``version``'s bundle available in the region's store (idempotent)."""

    def set_traffic(self, region: str, *, stable: str | None, canary: str | None, weight: float) -> None:
        """Make the region's desired state exactly this (no write when it already is) and have the
        node apply it before returning."""

    def samples(self, region: str) -> dict[str, VersionSamples]:
        """The node's recent samples per version."""


class AliasPort(Protocol):
    def get_alias(self, alias: str) -> str | None: ...

    def set_alias(self, alias: str, version: str) -> None: ...


@dataclass(frozen=True)
class Decision:
    """A human's (or the auto-approver's) answer to an approval request."""

    approve: bool
    actor: str
    comment: str | None = None
    recorded: bool = False  # already in the state store (written by ``ebmops approve``)


class ApprovalPort(Protocol):
    def wait(self, rollout_id: str, region: str, wave: int, *, summary: str, deadline: datetime,
             roster: list[str]) -> Decision | None:
        """Block until an on-roster decision arrives (returned) or ``deadline`` passes (None).
        Off-roster answers are recorded as refused by the port and waiting goes on."""


# ---- the controller -------------------------------------------------------------------------
@dataclass
class RolloutController:
    store: object            # ebmops.state.StateStore
    traffic: TrafficPort
    aliases: AliasPort
    approvals: ApprovalPort
    actor: str = "ebmops-rollout"
    # every region of the fleet: a rollout makes its version ``champion`` only when it promoted all of
    # them (a hotfix or a partial rollout sets ``prod-<region>`` aliases only); None: the plan's regions
    all_regions: list[str] | None = None
    sleep: Callable[[float], None] = time.sleep
    now: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))
    progress: Callable[[str], None] = field(default=lambda msg: log.info("%s", msg))

    # -- running ---------------------------------------------------------------------------
    def run(self, rollout_id: str, *, max_steps: int = 10_000):
        """Advance until the rollout is terminal; returns its final record."""
        for _ in range(max_steps):
            try:
                if not self.advance(rollout_id):
                    break
            except TransitionRefused as e:
                # another writer (``ebmops rollback``, a second controller) moved first: re-read, go on
                self.progress(f"rollout {rollout_id[:8]}: {e}; re-reading the saved state")
        return self.store.get_rollout(rollout_id)

    def advance(self, rollout_id: str) -> bool:
        """Perform one transition; False when the rollout is terminal."""
        ro = self.store.get_rollout(rollout_id)
        if ro is None:
            raise KeyError(rollout_id)
        if is_terminal(ro.phase):
            return False
        plan = RolloutPlan.from_dict(ro.plan)
        if ro.phase == Phase.PENDING.value:
            self._rollout_phase(ro, Phase.PROGRESSING, "started")
            return True
        if ro.phase == Phase.ROLLING_BACK.value:
            return self._finish_rollback(ro)
        if ro.phase == Phase.ANALYSING.value:
            return self._final_check(ro)
        if ro.phase == Phase.PROMOTING.value:
            return self._promote_everywhere(ro)
        for reg in ro.regions:  # wave order
            if reg.phase == Phase.PROMOTED.value:
                continue
            if reg.phase in (Phase.ROLLED_BACK.value, Phase.FAILED.value, Phase.ABORTED.value):
                self._rollout_phase(ro, Phase.ROLLING_BACK, f"{reg.region} ended {reg.phase}")
                return True
            self._advance_region(ro, reg, plan)
            return True
        self._rollout_phase(ro, Phase.ANALYSING, "every region promoted; checking what the nodes serve")
        return True

    # -- one region ------------------------------------------------------------------------
    def _advance_region(self, ro, reg, plan: RolloutPlan) -> None:
        phase = Phase(reg.phase)
        region, version = reg.region, ro.version
        stable = reg.stable_version
        if phase is Phase.PENDING:
            self.traffic.prepare(region, version)
            self._start_step(ro, reg, plan, 0, expected=Phase.PENDING)
        elif phase is Phase.PROGRESSING:
            # bake: the rest of this step's bake time (all of it again after a restart mid-bake)
            started = (reg.last_analysis or {}).get("step_started_at")
            bake = plan.bake_s[reg.step_index or 0]
            if started:
                left = bake - (self.now() - datetime.fromisoformat(started)).total_seconds()
                if left > 0:
                    self.sleep(left)
            self.store.update_region(ro.id, region, phase=Phase.ANALYSING, expected_phase=Phase.PROGRESSING)
        elif phase is Phase.ANALYSING:
            self._analyse(ro, reg, plan)
        elif phase is Phase.AWAITING_APPROVAL:
            self._await_approval(ro, reg, plan)
        elif phase is Phase.PROMOTING:
            self.traffic.set_traffic(region, stable=version, canary=None, weight=0.0)
            self.aliases.set_alias(region_alias(region), version)
            self.store.update_region(ro.id, region, phase=Phase.PROMOTED, expected_phase=Phase.PROMOTING,
                                     weight=1.0, stable_version=version)
            self._audit("promotion", ro, region, {"stable_before": stable, "alias": region_alias(region)})
            self.progress(f"{region}: v{version} promoted to stable (alias {region_alias(region)})")
        elif phase is Phase.ROLLING_BACK:
            self.traffic.set_traffic(region, stable=stable, canary=None, weight=0.0)
            self.store.update_region(ro.id, region, phase=Phase.ROLLED_BACK, expected_phase=Phase.ROLLING_BACK,
                                     weight=0.0)
            self._audit("rollback", ro, region, {"stable": stable, "failed_checks": reg.failed_checks,
                                                  "reason": reg.message})
            self.progress(f"{region}: rolled back to v{stable} ({reg.message})")

    def _start_step(self, ro, reg, plan: RolloutPlan, step: int, *, expected: Phase,
                    carry: dict | None = None) -> None:
        weight = plan.steps[step]
        self.traffic.set_traffic(reg.region, stable=reg.stable_version, canary=ro.version, weight=weight)
        base = {v: s.counters() for v, s in self.traffic.samples(reg.region).items()}
        self.store.update_region(ro.id, reg.region, phase=Phase.PROGRESSING, expected_phase=expected,
                                 step_index=step, weight=weight,
                                 last_analysis={**(carry if carry is not None else reg.last_analysis or {}),
                                                "baseline": base,
                                                "step_started_at": self.now().isoformat()})
        self._audit("rollout_step", ro, reg.region, {"step": step, "weight": weight, "bake_s": plan.bake_s[step]})
        self.progress(f"{reg.region}: step {step + 1}/{len(plan.steps)}, canary v{ro.version} at {weight:.0%}, "
                      f"baking {plan.bake_s[step]:g} s")

    def _analyse(self, ro, reg, plan: RolloutPlan) -> None:
        region, version, stable = reg.region, ro.version, reg.stable_version
        prev = reg.last_analysis or {}
        base = prev.get("baseline") or {}
        try:
            now, unavailable = self.traffic.samples(region), None
        except SamplesUnavailable as e:  # hold: a human decides, told which replicas are missing
            now, unavailable = {}, str(e)
        empty = VersionSamples.empty()

        def window(v: str | None) -> VersionSamples:
            if v is None or v not in now:
                return empty
            return now[v].since(VersionCounters(**base.get(v, {})))

        c, s = window(version), window(stable)
        samples = {"latency_ms": (c.latency_ms, s.latency_ms), "error": (c.outcomes, s.outcomes),
                   "energy": (c.energies, s.energies), "alert": (c.alerts, s.alerts)}
        if len(s.latency_ms) == 0 and stable in now:
            # At 100 % the stable version served nothing in this window. Energies, alerts and errors are
            # compared with its most recent samples in the same region (the node keeps the last
            # stats_window): the traffic is the same stream. Latency is not: it depends on the load of
            # the moment, so across windows it would measure the machine, not the version (no-data here).
            latest = now[stable]
            samples.update(energy=(c.energies, latest.energies), alert=(c.alerts, latest.alerts),
                           error=(c.outcomes, latest.outcomes))
        samples = {k: v for k, v in samples.items() if k in plan.analysis.metrics}
        j = judge(samples, plan.analysis)
        if unavailable:
            j = replace(j, verdict=JudgeVerdict.INCONCLUSIVE, score=None, reason=unavailable)
        step = reg.step_index or 0
        analysis = {**prev, "step": step, "weight": plan.steps[step], "judgement": j.to_dict(),
                    "n_canary_events": int(len(c.energies)), "n_stable_events": int(len(s.energies))}
        self._audit("analysis", ro, region, {"step": step, "verdict": j.verdict.value, "score": j.score,
                                             "failed": j.failed_metrics, "reason": j.reason})
        self.progress(f"{region}: analysis at {plan.steps[step]:.0%}: {j.verdict.value} "
                      f"(score {j.score if j.score is None else round(j.score)}; {j.reason})")
        if j.verdict is JudgeVerdict.FAIL:
            self.store.update_region(ro.id, region, phase=Phase.ROLLING_BACK, expected_phase=Phase.ANALYSING,
                                     last_analysis=analysis, failed_checks=j.failed_metrics,
                                     message=f"analysis failed at {plan.steps[step]:.0%}: {j.reason}")
            return
        last = step == len(plan.steps) - 1
        needs_human = j.verdict in (JudgeVerdict.MARGINAL, JudgeVerdict.INCONCLUSIVE) or (
            last and plan.approval[reg.wave])
        if needs_human:
            deadline = self.now() + timedelta(seconds=plan.approval_timeout_s)
            why = "analysis passed; the plan asks for an approval" if j.verdict is JudgeVerdict.PASS else \
                f"analysis {j.verdict.value}: a human decides"
            self.store.update_region(ro.id, region, phase=Phase.AWAITING_APPROVAL, expected_phase=Phase.ANALYSING,
                                     last_analysis=analysis, failed_checks=j.failed_metrics,
                                     awaiting_since=self.now(), approval_deadline=deadline, message=why)
            return
        if last:
            self.store.update_region(ro.id, region, phase=Phase.PROMOTING, expected_phase=Phase.ANALYSING,
                                     last_analysis=analysis)
            return
        # the analysis of the finished step stays readable next to the new step's baseline
        self._start_step(ro, reg, plan, step + 1, expected=Phase.ANALYSING, carry=analysis)

    def _await_approval(self, ro, reg, plan: RolloutPlan) -> None:
        deadline = reg.approval_deadline or (self.now() + timedelta(seconds=plan.approval_timeout_s))
        summary = approval_summary(ro, reg, plan)
        self.progress(f"{reg.region}: awaiting approval by one of {', '.join(plan.oncall_roster)} "
                      f"until {deadline:%H:%M:%S} UTC (`ebmops approve {ro.id} --as NAME`)")
        decision = self.approvals.wait(ro.id, reg.region, reg.wave, summary=summary, deadline=deadline,
                                       roster=list(plan.oncall_roster))
        analysis = (reg.last_analysis or {}).get("judgement")
        if decision is None:
            self.store.record_decision(ro.id, kind="timeout", actor=self.actor, region=reg.region, wave=reg.wave,
                                       comment=f"no decision by {deadline.isoformat()}", analysis=analysis)
            self._audit("rejection", ro, reg.region, {"timeout": True, "deadline": deadline.isoformat()})
            self.store.update_region(ro.id, reg.region, phase=Phase.ROLLING_BACK,
                                     expected_phase=Phase.AWAITING_APPROVAL,
                                     message="approval timed out; the wave rolls back")
            return
        kind = "approve" if decision.approve else "reject"
        if not decision.recorded:
            self.store.record_decision(ro.id, kind=kind, actor=decision.actor, region=reg.region, wave=reg.wave,
                                       comment=decision.comment, analysis=analysis)
        self._audit("approval" if decision.approve else "rejection", ro, reg.region,
                    {"comment": decision.comment, "analysis": analysis and analysis.get("verdict")},
                    actor=decision.actor)
        if not decision.approve:
            self.store.update_region(ro.id, reg.region, phase=Phase.ROLLING_BACK,
                                     expected_phase=Phase.AWAITING_APPROVAL,
                                     message=f"rejected by {decision.actor}: {decision.comment or 'no comment'}")
            return
        step = reg.step_index or 0
        if step == len(plan.steps) - 1:
            self.store.update_region(ro.id, reg.region, phase=Phase.PROMOTING, expected_phase=Phase.AWAITING_APPROVAL,
                                     message=f"approved by {decision.actor}")
        else:
            self._start_step(ro, reg, plan, step + 1, expected=Phase.AWAITING_APPROVAL)

    # -- the rollout as a whole ------------------------------------------------------------
    def _final_check(self, ro) -> bool:
        self._rollout_phase(ro, Phase.PROMOTING, "every region promoted")
        return True

    def _promote_everywhere(self, ro) -> bool:
        covered = {r.region for r in ro.regions}
        partial = self.all_regions is not None and not set(self.all_regions) <= covered
        if partial or ro.kind == "hotfix":  # a hotfix adapts a region to its traffic: it is not the champion
            why = "a hotfix" if ro.kind == "hotfix" else "not every region"
            self._rollout_phase(ro, Phase.PROMOTED, f"v{ro.version} promoted in {', '.join(sorted(covered))} "
                                                    f"({why}: the champion alias stays)")
            return False
        current = self.aliases.get_alias(CHAMPION)
        if current is not None and current != ro.version:
            self.aliases.set_alias(PREVIOUS_CHAMPION, current)
        self.aliases.set_alias(CHAMPION, ro.version)
        self._rollout_phase(ro, Phase.PROMOTED, f"v{ro.version} is champion in every region")
        self._audit("promotion", ro, None, {"champion": ro.version, "previous_champion": current})
        return False

    def _finish_rollback(self, ro) -> bool:
        for reg in ro.regions:
            if reg.phase == Phase.PENDING.value:
                self.store.update_region(ro.id, reg.region, phase=Phase.ABORTED, expected_phase=Phase.PENDING,
                                         message="not started: an earlier wave rolled back")
            elif not is_terminal(reg.phase) and reg.phase != Phase.PROMOTED.value:
                # a region mid-way (only possible in a multi-region wave) goes back too
                if reg.phase != Phase.ROLLING_BACK.value:
                    self.store.update_region(ro.id, reg.region, phase=Phase.ROLLING_BACK, expected_phase=reg.phase,
                                             message="rolled back with its wave")
                self._advance_region(ro, self.store.get_rollout(ro.id).region(reg.region), RolloutPlan.from_dict(ro.plan))
        self._rollout_phase(ro, Phase.ROLLED_BACK, "rolled back")
        return False

    def _rollout_phase(self, ro, new: Phase, message: str) -> None:
        self.store.update_rollout_phase(ro.id, new, expected_old=ro.phase, message=message)
        self.progress(f"rollout {ro.id[:8]} v{ro.version}: {ro.phase} -> {new.value} ({message})")

    def _audit(self, kind: str, ro, region: str | None, payload: dict, actor: str | None = None) -> None:
        self.store.append_audit(kind, model=ro.model_name, version=ro.version, region=region,
                                actor=actor or self.actor, payload={"rollout": ro.id, **payload})


def approval_summary(ro, reg, plan: RolloutPlan) -> str:
    """The markdown an approver reads (Prefect's pause form, the CLI)."""
    a = (reg.last_analysis or {}).get("judgement") or {}
    lines = [f"## Rollout `{ro.id}`: {ro.model_name} v{ro.version} in **{reg.region}** (wave {reg.wave + 1})",
             "", f"Canary at {reg.weight:.0%} against stable v{reg.stable_version}; step "
                 f"{(reg.step_index or 0) + 1} of {len(plan.steps)}.", "",
             f"**Analysis: {a.get('verdict', 'none')}** (score {a.get('score')}): {a.get('reason', '')}", "",
             "| metric | class | canary | stable | effect | p |", "|---|---|---|---|---|---|"]
    for m in a.get("metrics", []):
        lines.append(f"| {m['name']} | {m['classification']} | {m.get('canary_summary')} | {m.get('stable_summary')} "
                     f"| {m.get('effect')} | {m.get('p_value')} |")
    lines += ["", f"Approve to {'promote' if (reg.step_index or 0) == len(plan.steps) - 1 else 'go to the next step'}"
              f"; reject to roll this region back. Allowed: {', '.join(plan.oncall_roster)}."]
    return "\n".join(lines)
