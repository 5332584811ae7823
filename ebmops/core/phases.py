"""Phases of a canary rollout and the one table of legal transitions between them.

The same machine describes a rollout as a whole and each region inside it: a region goes through
``pending -> progressing -> analysing -> (progressing ... ) -> awaiting_approval -> promoting ->
promoted``; the rollout takes the phase of the region it is busy with and ends with the last wave.
Every write of a phase goes through ``check_transition`` (the state store calls it inside the same
transaction that compares and sets the phase), so an illegal jump is refused in one place.
"""

from __future__ import annotations

from enum import Enum

from ebmops.core.errors import TransitionRefused


class Phase(str, Enum):
    PENDING = "pending"                       # created; no traffic has moved yet
    PROGRESSING = "progressing"               # canary weight being set to the current step, then baking
    ANALYSING = "analysing"                   # the judge is comparing canary and stable at this step
    AWAITING_APPROVAL = "awaiting_approval"   # analysis passed; waiting for a human before promotion
    PROMOTING = "promoting"                   # the canary becomes the stable version (weight 1, alias moved)
    PROMOTED = "promoted"                     # terminal: the canary version is the stable one
    ROLLING_BACK = "rolling_back"             # traffic being moved back to the stable version
    ROLLED_BACK = "rolled_back"               # terminal: the stable version serves all traffic again
    FAILED = "failed"                         # terminal: an operation failed and could not be completed
    ABORTED = "aborted"                       # terminal: stopped by a person before it finished

    def __str__(self) -> str:  # f"{phase}" reads as the value
        return self.value


P = Phase

TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    P.PENDING: frozenset({P.PROGRESSING, P.ABORTED}),
    P.PROGRESSING: frozenset({P.ANALYSING, P.ROLLING_BACK, P.ABORTED, P.FAILED}),
    # analysing -> progressing is the move to the next traffic step of the same region
    P.ANALYSING: frozenset({P.PROGRESSING, P.AWAITING_APPROVAL, P.PROMOTING, P.ROLLING_BACK, P.ABORTED,
                            P.FAILED}),
    # awaiting_approval -> progressing: a human let a marginal / inconclusive step go on to the next one
    P.AWAITING_APPROVAL: frozenset({P.PROGRESSING, P.PROMOTING, P.ROLLING_BACK, P.ABORTED}),
    P.PROMOTING: frozenset({P.PROMOTED, P.FAILED}),
    P.ROLLING_BACK: frozenset({P.ROLLED_BACK, P.FAILED}),
    P.PROMOTED: frozenset(),
    P.ROLLED_BACK: frozenset(),
    P.FAILED: frozenset(),
    P.ABORTED: frozenset(),
}

TERMINAL: frozenset[Phase] = frozenset(p for p, nxt in TRANSITIONS.items() if not nxt)
ACTIVE: frozenset[Phase] = frozenset(Phase) - TERMINAL


def as_phase(value: Phase | str) -> Phase:
    try:
        return Phase(value)
    except ValueError:
        raise TransitionRefused(f"unknown phase {value!r}; phases are {', '.join(p.value for p in Phase)}",
                                new=str(value)) from None


def is_terminal(phase: Phase | str) -> bool:
    """Whether nothing can follow ``phase`` (promoted, rolled_back, failed, aborted)."""
    return as_phase(phase) in TERMINAL


def allowed_from(phase: Phase | str) -> frozenset[Phase]:
    return TRANSITIONS[as_phase(phase)]


def check_transition(old: Phase | str, new: Phase | str, *, what: str = "rollout") -> Phase:
    """Return ``new`` as a Phase when ``old -> new`` is in the table; else raise ``TransitionRefused``
    naming both phases and the ones allowed from ``old``."""
    o, n = as_phase(old), as_phase(new)
    allowed = TRANSITIONS[o]
    if n not in allowed:
        options = ", ".join(sorted(p.value for p in allowed)) or f"none: {o.value} is terminal"
        raise TransitionRefused(f"{what} cannot go from {o.value} to {n.value}; allowed from {o.value}: {options}",
                                old=o, new=n, allowed=allowed)
    return n
