"""rhapsody-py's `BackendMainStates` and its `StateMapper` registration calls."""

from __future__ import annotations

import enum
from typing import Any

from rhapsody.states import CANCELED, DONE, EXECUTING, FAILED, backend_key, canonical


class BackendMainStates(str, enum.Enum):
    """What `backend.state()` returns (our backends return these strings)."""

    INITIALIZED = "INITIALIZED"
    RUNNING = "RUNNING"
    SHUTDOWN = "SHUTDOWN"

    def __str__(self) -> str:
        return str(self.value)


def register_backend_tasks_states(
    backend: Any,
    done_state: Any,
    failed_state: Any,
    canceled_state: Any,
    running_state: Any,
    **additional_states: Any,
) -> None:
    """Register a backend's native names of the four main states (and more: `name=native`,
    where `name` is a lifecycle state such as `executing_pending`). Registering again replaces
    the table."""
    table = {
        str(done_state): DONE,
        str(failed_state): FAILED,
        str(canceled_state): CANCELED,
        str(running_state): EXECUTING,
    }
    for name, native in additional_states.items():
        table[str(native)] = canonical(name.upper())
    _register(backend_key(backend), table)


def register_backend_tasks_states_with_defaults(backend: Any) -> None:
    """Register a backend whose native names are the main states' own."""
    register_backend_tasks_states(backend, DONE, FAILED, CANCELED, "RUNNING")


def _register(name: str, table: dict[str, str]) -> None:
    from rhapsody.plugins import get_plugin_manager

    registry = get_plugin_manager().state_mappers
    # rhapsody-py's calls replace an earlier table; a plugin's duplicate name stays an error.
    registry._items.pop(name, None)
    registry.add(name, table)
