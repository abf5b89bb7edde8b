"""Seed import path: `from rhapsody.backends.constants import TasksMainStates, StateMapper`."""

from rhapsody.compat.states import BackendMainStates
from rhapsody.states import StateMapper, TasksMainStates

__all__ = ["BackendMainStates", "StateMapper", "TasksMainStates"]
