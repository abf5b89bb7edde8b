"""Seed import path: `from rhapsody.backends.constants import TasksMainStates, StateMapper`."""

from rhapsody.states import StateMapper, TasksMainStates

__all__ = ["StateMapper", "TasksMainStates"]
