"""The rollout controller: one persisted transition at a time, no state in memory.

``RolloutController.advance(rollout_id)`` reads the rollout from the state store, finds the first
region (in wave order) that is not finished, and performs exactly one step of that region's
state machine (ebmops/core/phases.py): act on the outside world first (idempotently: "make the
desired state equal X"), then persist the new phase with a compare-and-set. A process killed
between the two repeats the action on resume, which changes nothing the second time; a process
killed after the write resumes from the next phase. So ``run`` can be killed at any point and
``run`` again continues without repeating a completed step or leaving a region half-changed.

One process drives a rollout: the caller holds the rollout's lease (ebmops/core/state/lease.py) and
gives it to the controller, which passes it with every write to the state store (refused once another
driver took the rollout over) and renews it before every write to the outside world.

Region path::

    pending -> progressing(step 0) -> analysing -> progressing(step 1) -> ... -> analysing(last)
            -> [awaiting_approval] -> promoting -> promoted
    analysing: fail -> rolling_back -> rolled_back (the rollout stops; later regions are aborted)
               marginal / inconclusive -> awaiting_approval (a human decides to go on or roll back)

Rollout path: pending -> progressing (while regions advance) -> analysing (every region's node
serves the version) -> promoting (aliases ``champion`` / ``previous-champion``) -> promoted; or
progressing -> rolling_back -> rolled_back when a region rolled back.

The outside world is reached only through the ports below, so the controller is tested with
in-memory ports and run for real with ebmops/services/rollout.py's adapters.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Callable, Protocol

import numpy as np

from canary.decide import Event, Next, Step, next_region, next_rollout
from canary.judge import Judgement, JudgeVerdict, judge
from canary.plan import RolloutPlan
from ebmops.core.errors import TransitionRefused
from ebmops.core.phases import Phase, is_terminal
from ebmops.core.aliases import CHAMPION, PREVIOUS_CHAMPION, region_alias

log = logging.getLogger(__name__)

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
    # the share of normal events the version's threshold flags, from its calibration (1 - threshold
    # quantile, less the ties at the threshold); None when unknown. The judge holds each side's alert
    # rate to it.
    expected_alert_rate: float | None = None
    # the version's calibration energies in the gauge of ``energies`` (each one's percentile among them: about
    # uniform), thinned; None when unknown. The judge reads each side's drift from its own calibration.
    energy_reference: np.ndarray | None = None
    parts: tuple = ()  # per replica, when pooled from several (oldest first within each)

    @classmethod
    def empty(cls) -> "VersionSamples":
        return cls(0, 0, *(np.empty(0) for _ in range(4)))

    @classmethod
    def pooled(cls, parts: list["VersionSamples"]) -> "VersionSamples":
        """One sample of a region's replicas (the judge's tests do not depend on order)."""
        expected = next((p.expected_alert_rate for p in parts if p.expected_alert_rate is not None), None)
        reference = next((p.energy_reference for p in parts if p.energy_reference is not None), None)
        return cls(sum(p.requests for p in parts), sum(p.events for p in parts),
                   *(np.concatenate([getattr(p, a) for p in parts])
                     for a in ("latency_ms", "outcomes", "energies", "alerts")), expected_alert_rate=expected,
                   energy_reference=reference, parts=tuple(parts))

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
                              self.alerts[len(self.alerts) - ne:], self.expected_alert_rate,
                              self.energy_reference)


class TrafficPort(Protocol):
    def prepare(self, region: str, version: str) -> None:
        """Make ``version``'s bundle available in the region's store (idempotent)."""

    def set_traffic(self, region: str, *, stable: str | None, canary: str | None, weight: float) -> None:
        """Make the region's desired state exactly this (no write when it already is) and have the
        node apply it before returning."""

    def samples(self, region: str) -> dict[str, VersionSamples]:
        """The node's recent samples per version."""

    def served(self, region: str) -> str | None:
        """The stable version the region's node serves now; None when it cannot be reached."""


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


def power_advice(j: Judgement, bake_s: float) -> str | None:
    """The judgement's power line, with how much longer this step's bake would need to be when a
    metric's window was too small (the node's sample rings cap a window: see serving.stats_window)."""
    line = j.power
    scales = [m.power["needed_scale"] for m in j.metrics
              if m.power and not m.power.get("enough") and m.power.get("needed_scale") is not None]
    if scales and bake_s > 0:
        line += f" (a bake of about {max(scales) * bake_s:,.0f} s instead of {bake_s:g} s at this step)"
    return line


# ---- the controller -------------------------------------------------------------------------
@dataclass
class RolloutController:
    store: object            # ebmops.core.state.StateStore
    traffic: TrafficPort
    aliases: AliasPort
    approvals: ApprovalPort
    actor: str = "ebmops-rollout"
    # every region of the fleet: a rollout makes its version ``champion`` only when it promoted all of
    # them (a hotfix or a partial rollout sets ``prod-<region>`` aliases only); None: the plan's regions
    all_regions: list[str] | None = None
    # the driver's lease (ebmops/core/state/lease.py): every write below is refused once another process
    # took the rollout over; None for a person's one-off action (``ebmops rollback``)
    lease: object | None = None
    sleep: Callable[[float], None] = time.sleep
    now: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))
    progress: Callable[[str], None] = field(default=lambda msg: log.info("%s", msg))
    # called after each promotion is audited: anchors the audit log outside the database (a checkpoint)
    after_promotion: Callable[[], None] = field(default=lambda: None)

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
            self._rollout_next(ro, Event.START)
        elif ro.phase == Phase.ROLLING_BACK.value:
            self._finish_rollback(ro, plan)
        elif ro.phase == Phase.ANALYSING.value:
            self._final_check(ro)
        elif ro.phase == Phase.PROMOTING.value:
            self._promote_everywhere(ro)
        else:
            reg = next((r for r in ro.regions if r.phase != Phase.PROMOTED.value), None)  # wave order
            if reg is None:
                self._rollout_next(ro, Event.ALL_PROMOTED)
            elif is_terminal(reg.phase):
                self._rollout_next(ro, Event.REGION_ENDED, f"{reg.region} ended {reg.phase}")
            else:
                self._advance_region(ro, reg, plan)
        return True

    # -- one region ------------------------------------------------------------------------
    def _advance_region(self, ro, reg, plan: RolloutPlan) -> None:
        """One step of one region: act, ask ``next_region`` what comes next, persist it."""
        phase = Phase(reg.phase)
        if phase is Phase.PENDING:
            self._fence()
            self.traffic.prepare(reg.region, ro.version)
            self._apply(ro, reg, plan, self._next(reg, plan, Event.START), expected=phase)
        elif phase is Phase.PROGRESSING:
            self._bake(reg, plan)
            self._apply(ro, reg, plan, self._next(reg, plan, Event.BAKED), expected=phase)
        elif phase is Phase.ANALYSING:
            self._analyse(ro, reg, plan)
        elif phase is Phase.AWAITING_APPROVAL:
            self._await_approval(ro, reg, plan)
        elif phase is Phase.PROMOTING:
            self._fence()
            self.traffic.set_traffic(reg.region, stable=ro.version, canary=None, weight=0.0)
            self.aliases.set_alias(region_alias(reg.region), ro.version)
            self._apply(ro, reg, plan, self._next(reg, plan, Event.DONE), expected=phase, weight=1.0,
                        stable_version=ro.version)
            self._audit("promotion", ro, reg.region, {"stable_before": reg.stable_version,
                                                      "alias": region_alias(reg.region)})
            self.after_promotion()
            self.progress(f"{reg.region}: v{ro.version} promoted to stable (alias {region_alias(reg.region)})")
        elif phase is Phase.ROLLING_BACK:
            self.roll_back_region(ro, reg, plan)

    def roll_back_region(self, ro, reg, plan: RolloutPlan, *, actor: str | None = None,
                         comment: str | None = None) -> None:
        """A region in rolling_back: its stable version gets all traffic again, then rolled_back."""
        self._fence()
        self.traffic.set_traffic(reg.region, stable=reg.stable_version, canary=None, weight=0.0)
        self._apply(ro, reg, plan, self._next(reg, plan, Event.DONE), expected=Phase.ROLLING_BACK, weight=0.0)
        self._audit("rollback", ro, reg.region, {"stable": reg.stable_version, "failed_checks": reg.failed_checks,
                                                 "reason": comment or reg.message}, actor=actor)
        self.progress(f"{reg.region}: rolled back to v{reg.stable_version} ({comment or reg.message})")

    def roll_back(self, rollout_id: str, region: str, *, actor: str, comment: str | None = None) -> str | None:
        """``ebmops rollback`` of one unfinished region of this rollout: a region not started is aborted,
        one under way goes back to its stable version now. Returns that stable version."""
        ro = self.store.get_rollout(rollout_id)
        plan, reg = RolloutPlan.from_dict(ro.plan), ro.region(region)
        nxt = self._next(reg, plan, Event.ROLLBACK)
        why = f"rollback by {actor}: {comment or 'no comment'}"
        self._apply(ro, reg, plan, nxt, expected=Phase(reg.phase), message=why)
        if nxt.phase is Phase.ROLLING_BACK:
            self.roll_back_region(ro, self.store.get_rollout(rollout_id).region(region), plan, actor=actor,
                                  comment=comment)
        else:
            self._audit("rollback", ro, region, {"stable": reg.stable_version, "reason": why}, actor=actor)
        return reg.stable_version

    @staticmethod
    def _next(reg, plan: RolloutPlan, event: Event) -> Next:
        return next_region(reg.phase, event, Step(reg.step_index or 0, len(plan.steps), plan.approval[reg.wave]))

    def _apply(self, ro, reg, plan: RolloutPlan, nxt: Next, *, expected: Phase, carry: dict | None = None,
               **fields) -> None:
        """Persist ``nxt`` for the region (starting its traffic step when it is one)."""
        if nxt.phase is Phase.PROGRESSING:
            self._start_step(ro, reg, plan, nxt.step, expected=expected, carry=carry)
            return
        if nxt.phase is Phase.AWAITING_APPROVAL:
            fields.setdefault("awaiting_since", self.now())
            fields.setdefault("approval_deadline", self.now() + timedelta(seconds=plan.approval_timeout_s))
        self.store.update_region(ro.id, reg.region, phase=nxt.phase, expected_phase=expected, lease=self.lease,
                                 **fields)

    def _bake(self, reg, plan: RolloutPlan) -> None:
        """The rest of this step's bake time (all of it again after a restart mid-bake)."""
        started = (reg.last_analysis or {}).get("step_started_at")
        if started:
            left = plan.bake_s[reg.step_index or 0] - (self.now() - datetime.fromisoformat(started)).total_seconds()
            if left > 0:
                self.sleep(left)

    def _start_step(self, ro, reg, plan: RolloutPlan, step: int, *, expected: Phase,
                    carry: dict | None = None) -> None:
        weight = plan.steps[step]
        self._fence()
        self.traffic.set_traffic(reg.region, stable=reg.stable_version, canary=ro.version, weight=weight)
        base = {v: s.counters() for v, s in self.traffic.samples(reg.region).items()}
        self.store.update_region(ro.id, reg.region, phase=Phase.PROGRESSING, expected_phase=expected,
                                 lease=self.lease, step_index=step, weight=weight,
                                 last_analysis={**(carry if carry is not None else reg.last_analysis or {}),
                                                "baseline": base,
                                                "step_started_at": self.now().isoformat()})
        self._audit("rollout_step", ro, reg.region, {"step": step, "weight": weight, "bake_s": plan.bake_s[step]})
        self.progress(f"{reg.region}: step {step + 1}/{len(plan.steps)}, canary v{ro.version} at {weight:.0%}, "
                      f"baking {plan.bake_s[step]:g} s")

    def _window(self, ro, reg, plan: RolloutPlan) -> tuple[dict, VersionSamples, VersionSamples, str | None]:
        """Canary and stable samples of this step's window per metric of the plan, each side's window
        itself (its counts and expected alert rate), and why the region could not be read, if so (some
        node replicas unreachable: the judge holds instead of judging part of the region)."""
        base = (reg.last_analysis or {}).get("baseline") or {}
        try:
            now, unavailable = self.traffic.samples(reg.region), None
        except SamplesUnavailable as e:
            now, unavailable = {}, str(e)
        empty = VersionSamples.empty()

        def window(v: str | None) -> VersionSamples:
            if v is None or v not in now:
                return empty
            return now[v].since(VersionCounters(**base.get(v, {})))

        c, s = window(ro.version), window(reg.stable_version)
        samples = {"latency_ms": (c.latency_ms, s.latency_ms), "error": (c.outcomes, s.outcomes),
                   "energy": (c.energies, s.energies), "alert": (c.alerts, s.alerts)}
        if len(s.latency_ms) == 0 and reg.stable_version in now:
            # At 100 % the stable version served nothing in this window. Energies, alerts and errors are
            # compared with its most recent samples in the same region (the node keeps the last
            # stats_window): the traffic is the same stream. Latency is not: it depends on the load of
            # the moment, so across windows it would measure the machine, not the version (no-data here).
            latest = now[reg.stable_version]
            samples.update(energy=(c.energies, latest.energies), alert=(c.alerts, latest.alerts),
                           error=(c.outcomes, latest.outcomes))
        return {k: v for k, v in samples.items() if k in plan.analysis.metrics}, c, s, unavailable

    def _analyse(self, ro, reg, plan: RolloutPlan) -> None:
        samples, c, s, unavailable = self._window(ro, reg, plan)
        j = judge(samples, plan.analysis, expected={"alert": (c.expected_alert_rate, s.expected_alert_rate),
                                                    "energy": (c.energy_reference, s.energy_reference)})
        if unavailable:  # hold: a human decides, told which replicas are missing
            j = replace(j, verdict=JudgeVerdict.INCONCLUSIVE, score=None, reason=unavailable)
        step = reg.step_index or 0
        analysis = {**(reg.last_analysis or {}), "step": step, "weight": plan.steps[step], "judgement": j.to_dict(),
                    "n_canary_events": int(len(c.energies)), "n_stable_events": int(len(s.energies)),
                    "power": power_advice(j, plan.bake_s[step])}
        self._audit("analysis", ro, reg.region, {"step": step, "verdict": j.verdict.value, "score": j.score,
                                                 "failed": j.failed_metrics, "reason": j.reason})
        self.progress(f"{reg.region}: analysis at {plan.steps[step]:.0%}: {j.verdict.value} "
                      f"(score {j.score if j.score is None else round(j.score)}; {j.reason})")
        nxt = self._next(reg, plan, Event.of_verdict(j.verdict))
        fields = {"last_analysis": analysis}
        if nxt.phase is Phase.ROLLING_BACK:
            fields.update(failed_checks=j.failed_metrics, message=f"analysis failed at {plan.steps[step]:.0%}: "
                                                                  f"{j.reason}")
        elif nxt.phase is Phase.AWAITING_APPROVAL:
            fields.update(failed_checks=j.failed_metrics, message=nxt.reason)
        # the analysis of the finished step stays readable next to the new step's baseline
        self._apply(ro, reg, plan, nxt, expected=Phase.ANALYSING, carry=analysis,
                    **({} if nxt.phase is Phase.PROGRESSING else fields))

    def _await_approval(self, ro, reg, plan: RolloutPlan) -> None:
        deadline = reg.approval_deadline or (self.now() + timedelta(seconds=plan.approval_timeout_s))
        self.progress(f"{reg.region}: awaiting approval by one of {', '.join(plan.oncall_roster)} "
                      f"until {deadline:%H:%M:%S} UTC (`ebmops approve {ro.id} --as NAME`)")
        decision = self.approvals.wait(ro.id, reg.region, reg.wave, summary=approval_summary(ro, reg, plan),
                                       deadline=deadline, roster=list(plan.oncall_roster))
        analysis = (reg.last_analysis or {}).get("judgement")
        if decision is None:
            self.store.record_decision(ro.id, kind="timeout", actor=self.actor, region=reg.region, wave=reg.wave,
                                       comment=f"no decision by {deadline.isoformat()}", analysis=analysis,
                                       lease=self.lease)
            self._audit("rejection", ro, reg.region, {"timeout": True, "deadline": deadline.isoformat()})
            nxt = self._next(reg, plan, Event.TIMED_OUT)
            self._apply(ro, reg, plan, nxt, expected=Phase.AWAITING_APPROVAL, message=nxt.reason)
            return
        if not decision.recorded:
            self.store.record_decision(ro.id, kind="approve" if decision.approve else "reject", actor=decision.actor,
                                       region=reg.region, wave=reg.wave, comment=decision.comment, analysis=analysis,
                                       lease=self.lease)
        self._audit("approval" if decision.approve else "rejection", ro, reg.region,
                    {"comment": decision.comment, "analysis": analysis and analysis.get("verdict")},
                    actor=decision.actor)
        nxt = self._next(reg, plan, Event.APPROVED if decision.approve else Event.REJECTED)
        message = (f"approved by {decision.actor}" if decision.approve else
                   f"rejected by {decision.actor}: {decision.comment or 'no comment'}")
        self._apply(ro, reg, plan, nxt, expected=Phase.AWAITING_APPROVAL,
                    **({} if nxt.phase is Phase.PROGRESSING else {"message": message}))

    # -- the rollout as a whole ------------------------------------------------------------
    def _final_check(self, ro) -> None:
        """Every region promoted: check that each node serves the version as stable, and re-apply the
        desired state where one does not (a node that is down picks it up when it polls; one that
        refuses raises, and the rollout stays here until it is resumed)."""
        served = {reg.region: self.traffic.served(reg.region) for reg in ro.regions}  # one read per region
        for region, version in served.items():
            if version not in (ro.version, None):
                self._fence()
                self.traffic.set_traffic(region, stable=ro.version, canary=None, weight=0.0)
        down = [region for region, version in served.items() if version is None]
        self._rollout_next(ro, Event.SERVED, "every region promoted and served"
                           + (f" (unreachable now, left to their poll: {', '.join(down)})" if down else ""))

    def _promote_everywhere(self, ro) -> None:
        covered = {r.region for r in ro.regions}
        partial = self.all_regions is not None and not set(self.all_regions) <= covered
        if partial or ro.kind == "hotfix":  # a hotfix adapts a region to its traffic: it is not the champion
            why = "a hotfix" if ro.kind == "hotfix" else "not every region"
            self._rollout_next(ro, Event.DONE, f"v{ro.version} promoted in {', '.join(sorted(covered))} "
                                               f"({why}: the champion alias stays)")
            return
        current = self.aliases.get_alias(CHAMPION)
        self._fence()
        if current is not None and current != ro.version:
            self.aliases.set_alias(PREVIOUS_CHAMPION, current)
        self.aliases.set_alias(CHAMPION, ro.version)
        self._rollout_next(ro, Event.DONE, f"v{ro.version} is champion in every region")
        self._audit("promotion", ro, None, {"champion": ro.version, "previous_champion": current})
        self.after_promotion()

    def _finish_rollback(self, ro, plan: RolloutPlan) -> None:
        for reg in ro.regions:
            if is_terminal(reg.phase) or reg.phase == Phase.PROMOTED.value:
                continue
            if reg.phase != Phase.ROLLING_BACK.value:
                # a region not started is aborted; one mid-way (only in a multi-region wave) goes back too
                nxt = self._next(reg, plan, Event.ROLLBACK)
                self._apply(ro, reg, plan, nxt, expected=Phase(reg.phase),
                            message="not started: an earlier wave rolled back" if nxt.phase is Phase.ABORTED
                            else "rolled back with its wave")
                reg = self.store.get_rollout(ro.id).region(reg.region)
            if reg.phase == Phase.ROLLING_BACK.value:
                self.roll_back_region(ro, reg, plan)
        self._rollout_next(ro, Event.DONE, "rolled back")

    def _rollout_next(self, ro, event: Event, message: str | None = None) -> None:
        nxt = next_rollout(ro.phase, event)
        self.store.update_rollout_phase(ro.id, nxt.phase, expected_old=ro.phase, message=message or nxt.reason,
                                        lease=self.lease)
        self.progress(f"rollout {ro.id[:8]} v{ro.version}: {ro.phase} -> {nxt.phase.value} ({message or nxt.reason})")

    def _audit(self, kind: str, ro, region: str | None, payload: dict, actor: str | None = None) -> None:
        self.store.append_audit(kind, model=ro.model_name, version=ro.version, region=region,
                                actor=actor or self.actor, payload={"rollout": ro.id, **payload}, lease=self.lease)

    def _fence(self) -> None:
        """Before a write outside the state store (desired state, aliases): still this rollout's driver?
        Renewing the lease here leaves the rollout to this process for a whole lease after the check."""
        if self.lease is not None:
            self.store.renew_lease(self.lease)


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
