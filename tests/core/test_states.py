"""The lifecycle table and the state mapper."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rhapsody import states
from rhapsody.backends.constants import StateMapper, TasksMainStates


def test_final_states_are_absorbing() -> None:
    for final in states.FINAL_STATES:
        assert states.TRANSITIONS[final] == frozenset()


def test_every_non_final_state_can_fail_or_be_canceled() -> None:
    for state in states.LIFECYCLE:
        if state not in states.FINAL_STATES:
            assert {states.FAILED, states.CANCELED} <= states.TRANSITIONS[state]


@given(st.lists(st.sampled_from(states.LIFECYCLE), max_size=12))
def test_legal_paths_never_leave_a_final_state(path: list[str]) -> None:
    current = states.NEW
    for nxt in path:
        if states.is_legal(current, nxt):
            assert current not in states.FINAL_STATES
            current = nxt


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
