"""Which phase comes next: the whole rollout state machine's decisions in two tables.

The controller (canary/controller.py) and ``ebmops rollback`` never choose a phase themselves: they
tell ``next_region`` or ``next_rollout`` what happened (an ``Event``), act on the outside world as
the answer says, and persist the answer. The phases and the transitions the state store allows are
in ebmops/core/phases.py; every answer here is one of those transitions (tested).

A region, per traffic step::

    pending --start--> progressing(0) --baked--> analysing --pass--> progressing(1) ... analysing(last)
    analysing(last) --pass--> promoting (or awaiting_approval when the plan asks for one)
    analysing --marginal/inconclusive--> awaiting_approval --approved--> next step, or promoting when last
    analysing --fail--> rolling_back;  awaiting_approval --rejected/timed out--> rolling_back
    promoting --done--> promoted;  rolling_back --done--> rolled_back
    pending --rollback--> aborted;  any other active phase --rollback--> rolling_back

The rollout as a whole::

    pending --start--> progressing --a region ended without promoting--> rolling_back --done--> rolled_back
    progressing --every region promoted--> analysing --the nodes serve it--> promoting --done--> promoted
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Callable

from ebmops.core.errors import TransitionRefused
from ebmops.core.phases import Phase

P = Phase


class Event(str, Enum):
    START = "start"                  # the controller picks the region (or the rollout) up
    BAKED = "baked"                  # the step's bake time is over
    PASS = "pass"                    # the judge's verdicts on a step
    MARGINAL = "marginal"
    INCONCLUSIVE = "inconclusive"
    FAIL = "fail"
    APPROVED = "approved"            # a roster member's answer to an approval request
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"          # nobody answered before the deadline
    DONE = "done"                    # the promotion or the rollback is applied to the outside world
    ROLLBACK = "rollback"            # a person (``ebmops rollback``) or the rollout rolls the region back
    REGION_ENDED = "region_ended"    # a region of the rollout ended without promoting
    ALL_PROMOTED = "all_promoted"    # every region of the rollout is promoted
    SERVED = "served"                # the final check: every reachable node serves the version

    @classmethod
    def of_verdict(cls, verdict) -> "Event":
        return cls(getattr(verdict, "value", verdict))


@dataclass(frozen=True)
class Step:
    """Where a region stands: its traffic step, how many the plan has, whether the plan asks for an
    approval before this region is promoted."""

    index: int
    n_steps: int
    approval: bool

    @property
    def last(self) -> bool:
        return self.index >= self.n_steps - 1


@dataclass(frozen=True)
class Next:
    phase: Phase
    step: int | None = None   # the traffic step to start (only with PROGRESSING)
    reason: str = ""


def _next_step_or_promote(s: Step, why: str) -> Next:
    return Next(P.PROMOTING, reason=why) if s.last else Next(P.PROGRESSING, s.index + 1, why)


def _after_pass(s: Step) -> Next:
    if s.last and s.approval:
        return Next(P.AWAITING_APPROVAL, reason="analysis passed; the plan asks for an approval")
    return _next_step_or_promote(s, "analysis passed")


Rule = Callable[[Step], Next]

REGION: dict[tuple[Phase, Event], Rule] = {
    (P.PENDING, Event.START): lambda s: Next(P.PROGRESSING, 0, "first traffic step"),
    (P.PENDING, Event.ROLLBACK): lambda s: Next(P.ABORTED, reason="not started: rolled back before its turn"),
    (P.PROGRESSING, Event.BAKED): lambda s: Next(P.ANALYSING, reason="bake time over"),
    (P.PROGRESSING, Event.ROLLBACK): lambda s: Next(P.ROLLING_BACK, reason="rollback asked for"),
    (P.ANALYSING, Event.PASS): _after_pass,
    (P.ANALYSING, Event.MARGINAL): lambda s: Next(P.AWAITING_APPROVAL, reason="analysis marginal: a human decides"),
    (P.ANALYSING, Event.INCONCLUSIVE): lambda s: Next(P.AWAITING_APPROVAL,
                                                      reason="analysis inconclusive: a human decides"),
    (P.ANALYSING, Event.FAIL): lambda s: Next(P.ROLLING_BACK, reason="analysis failed"),
    (P.ANALYSING, Event.ROLLBACK): lambda s: Next(P.ROLLING_BACK, reason="rollback asked for"),
    (P.AWAITING_APPROVAL, Event.APPROVED): lambda s: _next_step_or_promote(s, "approved"),
    (P.AWAITING_APPROVAL, Event.REJECTED): lambda s: Next(P.ROLLING_BACK, reason="rejected"),
    (P.AWAITING_APPROVAL, Event.TIMED_OUT): lambda s: Next(P.ROLLING_BACK,
                                                           reason="approval timed out; the wave rolls back"),
    (P.AWAITING_APPROVAL, Event.ROLLBACK): lambda s: Next(P.ROLLING_BACK, reason="rollback asked for"),
    (P.PROMOTING, Event.DONE): lambda s: Next(P.PROMOTED, reason="promoted"),
    (P.ROLLING_BACK, Event.DONE): lambda s: Next(P.ROLLED_BACK, reason="rolled back"),
}

ROLLOUT: dict[tuple[Phase, Event], Next] = {
    (P.PENDING, Event.START): Next(P.PROGRESSING, reason="started"),
    (P.PROGRESSING, Event.REGION_ENDED): Next(P.ROLLING_BACK, reason="a region ended without promoting"),
    (P.PROGRESSING, Event.ALL_PROMOTED): Next(P.ANALYSING, reason="every region promoted; checking what the nodes "
                                                                   "serve"),
    (P.ANALYSING, Event.SERVED): Next(P.PROMOTING, reason="every region promoted and served"),
    (P.PROMOTING, Event.DONE): Next(P.PROMOTED, reason="promoted"),
    (P.ROLLING_BACK, Event.DONE): Next(P.ROLLED_BACK, reason="rolled back"),
}


def next_region(phase: Phase | str, event: Event, step: Step) -> Next:
    """The region's next phase after ``event`` in ``phase`` at ``step``; TransitionRefused when the
    event means nothing in that phase."""
    rule = REGION.get((Phase(phase), event))
    if rule is None:
        raise TransitionRefused(f"a region in {Phase(phase).value} cannot take the event {event.value}",
                                old=Phase(phase))
    return rule(step)


def next_rollout(phase: Phase | str, event: Event) -> Next:
    """The rollout's next phase after ``event`` in ``phase``; TransitionRefused when it means nothing there."""
    nxt = ROLLOUT.get((Phase(phase), event))
    if nxt is None:
        raise TransitionRefused(f"a rollout in {Phase(phase).value} cannot take the event {event.value}",
                                old=Phase(phase))
    return nxt
