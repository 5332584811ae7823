"""The one decider of the rollout state machine, row by row (canary/decide.py)."""

from __future__ import annotations

import itertools

import pytest

from canary.decide import REGION, ROLLOUT, Event, Step, next_region, next_rollout
from ebmops.core.errors import TransitionRefused
from ebmops.core.phases import TRANSITIONS, Phase

P, E = Phase, Event
FIRST, MIDDLE, LAST = Step(0, 3, False), Step(1, 3, False), Step(2, 3, False)
LAST_APPROVAL, FIRST_APPROVAL = Step(2, 3, True), Step(0, 3, True)

# (phase, event, step) -> (next phase, next traffic step)
REGION_ROWS = [
    (P.PENDING, E.START, FIRST, P.PROGRESSING, 0),
    (P.PENDING, E.ROLLBACK, FIRST, P.ABORTED, None),
    (P.PROGRESSING, E.BAKED, MIDDLE, P.ANALYSING, None),
    (P.PROGRESSING, E.ROLLBACK, MIDDLE, P.ROLLING_BACK, None),
    (P.ANALYSING, E.PASS, FIRST, P.PROGRESSING, 1),
    (P.ANALYSING, E.PASS, MIDDLE, P.PROGRESSING, 2),
    (P.ANALYSING, E.PASS, FIRST_APPROVAL, P.PROGRESSING, 1),   # approval is asked before promotion only
    (P.ANALYSING, E.PASS, LAST, P.PROMOTING, None),
    (P.ANALYSING, E.PASS, LAST_APPROVAL, P.AWAITING_APPROVAL, None),
    (P.ANALYSING, E.MARGINAL, FIRST, P.AWAITING_APPROVAL, None),
    (P.ANALYSING, E.MARGINAL, LAST, P.AWAITING_APPROVAL, None),
    (P.ANALYSING, E.INCONCLUSIVE, MIDDLE, P.AWAITING_APPROVAL, None),
    (P.ANALYSING, E.FAIL, FIRST, P.ROLLING_BACK, None),
    (P.ANALYSING, E.FAIL, LAST_APPROVAL, P.ROLLING_BACK, None),
    (P.ANALYSING, E.ROLLBACK, MIDDLE, P.ROLLING_BACK, None),
    (P.AWAITING_APPROVAL, E.APPROVED, FIRST, P.PROGRESSING, 1),
    (P.AWAITING_APPROVAL, E.APPROVED, LAST, P.PROMOTING, None),
    (P.AWAITING_APPROVAL, E.APPROVED, LAST_APPROVAL, P.PROMOTING, None),
    (P.AWAITING_APPROVAL, E.REJECTED, MIDDLE, P.ROLLING_BACK, None),
    (P.AWAITING_APPROVAL, E.TIMED_OUT, LAST, P.ROLLING_BACK, None),
    (P.AWAITING_APPROVAL, E.ROLLBACK, LAST, P.ROLLING_BACK, None),
    (P.PROMOTING, E.DONE, LAST, P.PROMOTED, None),
    (P.ROLLING_BACK, E.DONE, MIDDLE, P.ROLLED_BACK, None),
]

ROLLOUT_ROWS = [
    (P.PENDING, E.START, P.PROGRESSING),
    (P.PROGRESSING, E.REGION_ENDED, P.ROLLING_BACK),
    (P.PROGRESSING, E.ALL_PROMOTED, P.ANALYSING),
    (P.ANALYSING, E.SERVED, P.PROMOTING),
    (P.PROMOTING, E.DONE, P.PROMOTED),
    (P.ROLLING_BACK, E.DONE, P.ROLLED_BACK),
]


@pytest.mark.parametrize("phase, event, step, want, want_step", REGION_ROWS)
def test_region_rows(phase, event, step, want, want_step):
    nxt = next_region(phase, event, step)
    assert (nxt.phase, nxt.step) == (want, want_step)
    assert nxt.phase in TRANSITIONS[phase], "the decider only answers transitions the state store allows"
    assert nxt.reason


def test_every_region_rule_has_a_row():
    assert {(p, e) for p, e, *_ in REGION_ROWS} == set(REGION)


@pytest.mark.parametrize("phase, event, want", ROLLOUT_ROWS)
def test_rollout_rows(phase, event, want):
    nxt = next_rollout(phase, event)
    assert nxt.phase is want and nxt.phase in TRANSITIONS[phase] and nxt.reason


def test_every_rollout_rule_has_a_row():
    assert {(p, e) for p, e, _ in ROLLOUT_ROWS} == set(ROLLOUT)


def test_every_rule_answers_an_allowed_transition_at_every_step():
    for (phase, event), rule in REGION.items():
        for index, approval in itertools.product(range(3), (False, True)):
            assert rule(Step(index, 3, approval)).phase in TRANSITIONS[phase], (phase, event, index, approval)


@pytest.mark.parametrize("phase, event", [(P.PROMOTED, E.ROLLBACK), (P.ROLLED_BACK, E.START), (P.PENDING, E.PASS),
                                          (P.PROMOTING, E.ROLLBACK), (P.PROGRESSING, E.APPROVED)])
def test_an_event_that_means_nothing_in_a_phase_is_refused(phase, event):
    with pytest.raises(TransitionRefused, match=event.value):
        next_region(phase, event, MIDDLE)


def test_the_rollout_refuses_events_of_regions():
    with pytest.raises(TransitionRefused):
        next_rollout(P.PROGRESSING, E.BAKED)


@pytest.mark.parametrize("verdict", ["pass", "marginal", "inconclusive", "fail"])
def test_every_judge_verdict_is_an_event(verdict):
    from canary.judge import JudgeVerdict

    assert Event.of_verdict(JudgeVerdict(verdict)).value == verdict
