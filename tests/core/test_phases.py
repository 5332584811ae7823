"""The rollout phase machine: one transition table, enforced in one place."""

import pytest

from ebmops.core.phases import TERMINAL, TRANSITIONS, Phase, TransitionRefused, check_transition, is_terminal
from ebmops.core.errors import EbmopsError

ALLOWED = [(old, new) for old, nxt in TRANSITIONS.items() for new in nxt]


def test_table_covers_every_phase():
    assert set(TRANSITIONS) == set(Phase)
    assert all(new in Phase for nxt in TRANSITIONS.values() for new in nxt)


@pytest.mark.parametrize("old,new", ALLOWED, ids=[f"{o.value}->{n.value}" for o, n in ALLOWED])
def test_every_allowed_transition_is_accepted(old, new):
    assert check_transition(old, new) is new
    assert check_transition(old.value, new.value) is new  # plain strings, as stored


@pytest.mark.parametrize("old,new", [
    (Phase.PENDING, Phase.PROMOTED),
    (Phase.PENDING, Phase.ANALYSING),
    (Phase.PROGRESSING, Phase.PROMOTING),
    (Phase.ANALYSING, Phase.PROMOTED),
    (Phase.AWAITING_APPROVAL, Phase.ANALYSING),
    (Phase.PROMOTING, Phase.ROLLING_BACK),
    (Phase.ROLLING_BACK, Phase.PROGRESSING),
    (Phase.PROMOTED, Phase.ROLLING_BACK),
    (Phase.ABORTED, Phase.PENDING),
    (Phase.FAILED, Phase.PROGRESSING),
    (Phase.PROGRESSING, Phase.PROGRESSING),
])
def test_refused_transitions_name_both_phases_and_the_allowed_ones(old, new):
    with pytest.raises(TransitionRefused) as e:
        check_transition(old, new)
    msg = str(e.value)
    assert f"from {old.value} to {new.value}" in msg
    for p in TRANSITIONS[old]:
        assert p.value in msg
    assert isinstance(e.value, EbmopsError) and e.value.old is old and e.value.new is new
    assert e.value.allowed == TRANSITIONS[old]


def test_terminal_phases():
    assert TERMINAL == {Phase.PROMOTED, Phase.ROLLED_BACK, Phase.FAILED, Phase.ABORTED}
    for p in Phase:
        assert is_terminal(p) is (p in TERMINAL)
        assert is_terminal(p.value) is (p in TERMINAL)
    with pytest.raises(TransitionRefused, match="promoted is terminal"):
        check_transition(Phase.PROMOTED, Phase.PENDING)


def test_unknown_phase_is_refused():
    with pytest.raises(TransitionRefused, match="unknown phase 'baking'"):
        check_transition("pending", "baking")


def test_every_active_phase_can_reach_a_terminal_one():
    for start in set(Phase) - TERMINAL:
        seen, todo = set(), [start]
        while todo:
            p = todo.pop()
            seen.add(p)
            todo.extend(TRANSITIONS[p] - seen)
        assert seen & TERMINAL, start
