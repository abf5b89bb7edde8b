"""Old names and import paths of rhapsody-py 0.6.0, kept at the edge (the engine never
imports this package). See docs/migrating.md for what differs on purpose."""

from rhapsody.compat.logs import enable_logging, logger
from rhapsody.compat.registry import BackendRegistry
from rhapsody.compat.states import BackendMainStates
from rhapsody.compat.task_state_manager import TaskStateManager

__all__ = ["BackendMainStates", "BackendRegistry", "TaskStateManager", "enable_logging", "logger"]
