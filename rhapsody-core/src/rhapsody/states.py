"""The task lifecycle shared by every backend, and the mapping of backend-native state names.

    NEW -> SCHEDULING_PENDING -> EXECUTING_PENDING -> EXECUTING -> DONE | FAILED | CANCELED

Any non-final state may go to FAILED or CANCELED. EXECUTING may go back to EXECUTING_PENDING
when a failed attempt is retried. Final states are absorbing.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

NEW: Final = "NEW"
SCHEDULING_PENDING: Final = "SCHEDULING_PENDING"  # waiting for dependencies
EXECUTING_PENDING: Final = "EXECUTING_PENDING"  # ready, waiting for resources / the engine
EXECUTING: Final = "EXECUTING"
DONE: Final = "DONE"
FAILED: Final = "FAILED"
CANCELED: Final = "CANCELED"

LIFECYCLE: Final = (NEW, SCHEDULING_PENDING, EXECUTING_PENDING, EXECUTING, DONE, FAILED, CANCELED)
FINAL_STATES: Final = frozenset({DONE, FAILED, CANCELED})

ALIASES: Final[Mapping[str, str]] = {"CANCELLED": CANCELED, "RUNNING": EXECUTING}

TRANSITIONS: Final[Mapping[str, frozenset[str]]] = {
    NEW: frozenset({SCHEDULING_PENDING, FAILED, CANCELED}),
    SCHEDULING_PENDING: frozenset({EXECUTING_PENDING, FAILED, CANCELED}),
    EXECUTING_PENDING: frozenset({EXECUTING, FAILED, CANCELED}),
    EXECUTING: frozenset({DONE, FAILED, CANCELED, EXECUTING_PENDING}),
    DONE: frozenset(),
    FAILED: frozenset(),
    CANCELED: frozenset(),
}


class IllegalTransitionError(RuntimeError):
    """An engine tried to move a task along a transition the lifecycle forbids (a bug)."""


def canonical(state: str) -> str:
    """Return the lifecycle name of `state`, accepting the aliases (`CANCELLED`, `RUNNING`)."""
    state = ALIASES.get(state, state)
    if state not in TRANSITIONS:
        raise ValueError(f"unknown task state {state!r}; known: {', '.join(LIFECYCLE)}")
    return state


def is_legal(old: str, new: str) -> bool:
    """True when the lifecycle allows moving from `old` to `new`."""
    return new in TRANSITIONS[old]


class TasksMainStates(str, enum.Enum):
    """The coarse view clients use. Values are the lifecycle names callbacks receive."""

    DONE = DONE
    FAILED = FAILED
    CANCELED = CANCELED
    RUNNING = EXECUTING

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def _missing_(cls, value: object) -> TasksMainStates | None:
        # TasksMainStates("RUNNING") / ("CANCELLED"): the aliases name members too.
        alias = ALIASES.get(value) if isinstance(value, str) else None
        return cls(alias) if alias is not None else None


def backend_key(backend: object) -> str:
    """The name a state table is registered under: a name as given; for a backend class or
    instance (as rhapsody-py accepted), its `backend_name`, else its class name."""
    if isinstance(backend, str):
        return backend
    name = getattr(backend, "backend_name", None)
    if isinstance(name, str):
        return name
    cls = backend if isinstance(backend, type) else type(backend)
    return cls.__name__


class StateMapper:
    """Maps a backend's native state names onto the lifecycle.

    `StateMapper(backend="dask")` uses the table the dask plugin registered through the
    `rhapsody_register_state_mappers` hook. Attributes `DONE`, `FAILED`, `CANCELED`, `RUNNING`
    are the state strings the backend's callbacks report, and `terminal_states` the final ones.
    """

    def __init__(self, backend: object = "concurrent", native: Mapping[str, str] | None = None):
        backend = backend_key(backend)
        if native is None:
            from rhapsody.plugins import OFFICIAL_BACKENDS, get_plugin_manager, state_mapper_table

            native = state_mapper_table(backend)
            known = get_plugin_manager().backends.names()
            if not native and backend not in known and backend not in OFFICIAL_BACKENDS:
                raise ValueError(
                    f"no backend or state table named {backend!r} "
                    f"(known: {', '.join(sorted({*known, *OFFICIAL_BACKENDS}))})"
                )
        self.backend = backend
        self._native = {name: canonical(state) for name, state in native.items()}

    DONE: Final = DONE
    FAILED: Final = FAILED
    CANCELED: Final = CANCELED
    RUNNING: Final = EXECUTING
    terminal_states: Final = FINAL_STATES

    @staticmethod
    def register_backend_tasks_states(
        backend: object,
        done_state: object,
        failed_state: object,
        canceled_state: object,
        running_state: object,
        **additional_states: object,
    ) -> None:
        """rhapsody-py's run-time registration of a backend's native state names."""
        from rhapsody.compat.states import register_backend_tasks_states

        register_backend_tasks_states(
            backend, done_state, failed_state, canceled_state, running_state, **additional_states
        )

    @staticmethod
    def register_backend_tasks_states_with_defaults(backend: object) -> None:
        """As `register_backend_tasks_states`, with the main states' own names."""
        from rhapsody.compat.states import register_backend_tasks_states_with_defaults

        register_backend_tasks_states_with_defaults(backend)

    def to_main_state(self, native_state: str) -> str:
        """Lifecycle state for a backend-native (or lifecycle) state name."""
        if native_state in self._native:
            return self._native[native_state]
        try:
            return canonical(native_state)
        except ValueError:
            known = ", ".join(sorted(self._native)) or "none registered"
            raise ValueError(
                f"backend {self.backend!r} has no state named {native_state!r} (known: {known})"
            ) from None

    def native_states(self, main_state: str) -> list[str]:
        """Backend-native names that map to `main_state`."""
        target = canonical(main_state)
        return [name for name, state in self._native.items() if state == target]

    def __repr__(self) -> str:
        return f"StateMapper(backend={self.backend!r})"
