"""The lifecycle table and the state mapper."""

from __future__ import annotations

import pytest

from rhapsody import states
from rhapsody.backends.constants import StateMapper, TasksMainStates


def test_final_states_are_absorbing() -> None:
    for final in states.FINAL_STATES:
        assert states.TRANSITIONS[final] == frozenset()


def test_every_non_final_state_can_fail_or_be_canceled() -> None:
    for state in states.LIFECYCLE:
        if state not in states.FINAL_STATES:
            assert {states.FAILED, states.CANCELED} <= states.TRANSITIONS[state]


def test_states_move_forward_but_for_a_retry() -> None:
    # (A random walk that "never leaves a final state" was implied by the test above.)
    order = {state: i for i, state in enumerate(states.LIFECYCLE)}
    backward = {
        (old, new)
        for old, nexts in states.TRANSITIONS.items()
        for new in nexts
        if order[new] <= order[old]
    }
    assert backward == {(states.EXECUTING, states.EXECUTING_PENDING)}  # a retry waits again
    reach_done = [old for old, nexts in states.TRANSITIONS.items() if states.DONE in nexts]
    assert reach_done == [states.EXECUTING]  # nothing is DONE without having run


def test_aliases_and_main_states() -> None:
    assert states.canonical("CANCELLED") == states.CANCELED
    assert states.canonical("RUNNING") == states.EXECUTING
    assert TasksMainStates.RUNNING == "EXECUTING" and str(TasksMainStates.DONE) == "DONE"
    with pytest.raises(ValueError, match="unknown task state 'BOGUS'"):
        states.canonical("BOGUS")


def test_state_mapper_for_a_core_backend() -> None:
    mapper = StateMapper(backend="concurrent")
    assert mapper.DONE == "DONE" and mapper.RUNNING == "EXECUTING"
    assert mapper.terminal_states == {"DONE", "FAILED", "CANCELED"}
    assert mapper.to_main_state("CANCELLED") == "CANCELED"


def test_state_mapper_with_a_native_table() -> None:
    mapper = StateMapper(
        backend="x", native={"memory": "DONE", "erred": "FAILED", "processing": "RUNNING"}
    )
    assert mapper.to_main_state("processing") == "EXECUTING"
    assert mapper.native_states("DONE") == ["memory"]
    with pytest.raises(ValueError, match="backend 'x' has no state named 'zzz'"):
        mapper.to_main_state("zzz")
