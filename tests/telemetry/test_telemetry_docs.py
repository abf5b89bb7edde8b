"""docs/telemetry.md names every public name, option, metric and event field of telemetry."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest

from rhapsody import telemetry
from rhapsody.telemetry import events
from rhapsody.telemetry.manager import TelemetryManager
from rhapsody.telemetry.otel import COUNTERS, RESOURCE_COUNTERS, RESOURCE_GAUGES

DOC = (Path(__file__).resolve().parents[2] / "docs" / "telemetry.md").read_text()
OTHER_METRICS = [
    "tasks_running",
    "inference_tokens",
    "task_duration_seconds",
    "task_queue_wait_seconds",
]
INTERNAL_OPTIONS = {"session_id", "default_backend"}  # given by the Session, not by users


@pytest.mark.parametrize("name", [n for n in telemetry.__all__ if n != "TASK_EVENTS"])
def test_public_name_is_documented(name: str) -> None:
    assert f"`{name}" in DOC


@pytest.mark.parametrize(
    "option",
    [p for p in inspect.signature(TelemetryManager).parameters if p not in INTERNAL_OPTIONS],
)
def test_option_is_documented(option: str) -> None:
    assert f"`{option}`" in DOC


@pytest.mark.parametrize(
    "metric", [*COUNTERS, *RESOURCE_GAUGES, *RESOURCE_COUNTERS, *OTHER_METRICS]
)
def test_metric_is_documented(metric: str) -> None:
    assert f"`{metric}`" in DOC


@pytest.mark.parametrize(
    "field",
    sorted(
        {
            f.name
            for cls in (
                events.BaseEvent,
                *events.TASK_EVENTS,
                events.ResourceUpdate,
                events.ServiceReady,
                events.SessionEnded,
            )
            for f in dataclasses.fields(cls)
        }
    ),
)
def test_event_field_is_documented(field: str) -> None:
    assert f"`{field}`" in DOC


@pytest.mark.parametrize("option", ["--dir", "--interval"])
def test_the_node_sampler_command_line_is_documented(option: str) -> None:
    from rhapsody.telemetry import node_sampler

    assert "python -m rhapsody.telemetry.node_sampler" in DOC and "`SampleFiles(DIR)" in DOC
    assert f" {option} " in DOC
    assert option in inspect.getsource(node_sampler.main)  # still an option of the program
