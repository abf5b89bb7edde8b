"""RADICAL-Pilot's task states and the lifecycle state each one means. Import-light (strings).

RADICAL-Pilot only sees a task once RHAPSODY has found it ready (its dependencies are done), so
everything before the agent starts it is EXECUTING_PENDING; the output-staging states that
follow the run still belong to EXECUTING, because the results are not back yet.
"""

from __future__ import annotations

from typing import Final

AGENT_EXECUTING: Final = "AGENT_EXECUTING"
DONE: Final = "DONE"
FAILED: Final = "FAILED"
CANCELED: Final = "CANCELED"
FINAL: Final = frozenset({DONE, FAILED, CANCELED})

_WAITING = (
    "NEW",
    "TMGR_SCHEDULING_PENDING",
    "TMGR_SCHEDULING",
    "TMGR_STAGING_INPUT_PENDING",
    "TMGR_STAGING_INPUT",
    "AGENT_STAGING_INPUT_PENDING",
    "AGENT_STAGING_INPUT",
    "AGENT_SCHEDULING_PENDING",
    "AGENT_SCHEDULING",
    "AGENT_EXECUTING_PENDING",
)
_RUNNING = (
    AGENT_EXECUTING,
    "AGENT_STAGING_OUTPUT_PENDING",
    "AGENT_STAGING_OUTPUT",
    "TMGR_STAGING_OUTPUT_PENDING",
    "TMGR_STAGING_OUTPUT",
)

#: native task state -> lifecycle state, registered through `rhapsody_register_state_mappers`
TASK_STATES: Final[dict[str, str]] = {
    **dict.fromkeys(_WAITING, "EXECUTING_PENDING"),
    **dict.fromkeys(_RUNNING, "EXECUTING"),
    DONE: "DONE",
    FAILED: "FAILED",
    CANCELED: "CANCELED",
}
