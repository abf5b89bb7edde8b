"""Exports through the standard SDK: OTLP/HTTP to a receiver started here (the protobuf that
arrives is decoded), a Prometheus `/metrics` endpoint scraped by a real Prometheus server, and the
line-buffered JSONL checkpoint that `rhapsody report` reads."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="needs [telemetry]")

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from rhapsody.cli import main
from rhapsody.session import Session
from rhapsody.trace_report import load, summarize

PROMETHEUS = shutil.which("prometheus")


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP receiver: keeps every POST body by path, answers 200 (empty response)."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[bytes]] = {}
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        assert self.headers["Content-Type"] == "application/x-protobuf"
        self.server.bodies.setdefault(self.path, []).append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


TASKS = [
    {"uid": "t1", "executable": "/bin/true"},
    {"uid": "t2", "executable": "/bin/false"},
    {"uid": "t3", "function": len, "args": ["abc"], "dependencies": ["t1"]},
]


def test_otlp_http_receives_task_spans_and_metrics() -> None:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}"

    async def go() -> str:
        session = Session()
        await session.start_telemetry(otlp_endpoint=endpoint, resource_attributes={"site": "t"})
        await session.submit_tasks([dict(t) for t in TASKS])
        await session.wait_tasks()
        await session.close()  # shuts the providers down: the batch exporters flush
        return session.uid

    try:
        uid = asyncio.run(go())
    finally:
        receiver.shutdown()
        receiver.server_close()
    spans = []
    for body in receiver.bodies["/v1/traces"]:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            assert resource["service.name"] == "rhapsody"
            assert resource["session_id"] == uid
            assert resource["site"] == "t"
            for scope in resource_spans.scope_spans:
                spans.extend(scope.spans)
    root = [s for s in spans if s.name == "session"]
    assert len(root) == 1
    tasks = {}
    for span in spans:
        if span.name == "task":
            attributes = {a.key: a.value for a in span.attributes}
            tasks[attributes["task_id"].string_value] = attributes
            assert span.parent_span_id == root[0].span_id
    assert sorted(tasks) == ["t1", "t2", "t3"]
    assert tasks["t2"]["status"].string_value == "failed"
    assert tasks["t2"]["exit_code"].int_value == 1
    names = set()
    for body in receiver.bodies["/v1/metrics"]:
        metrics = ExportMetricsServiceRequest()
        metrics.ParseFromString(body)
        for resource_metrics in metrics.resource_metrics:
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    names.add(metric.name)
                    if metric.name == "tasks_completed":
                        assert sum(p.as_int for p in metric.sum.data_points) == 2
    assert {"tasks_submitted", "tasks_completed", "tasks_failed", "task_duration_seconds"} <= names


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


@pytest.mark.skipif(PROMETHEUS is None, reason="Debian package 'prometheus' is not installed")
def test_a_real_prometheus_server_scrapes_the_metrics_endpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert PROMETHEUS is not None
    metrics_port, web_port = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: rhapsody\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
    )

    async def go() -> list[Any]:
        session = Session()
        manager = await session.start_telemetry(prometheus_port=metrics_port)
        assert manager.prometheus_address == f"127.0.0.1:{metrics_port}"
        await session.submit_tasks([dict(t) for t in TASKS])
        await session.wait_tasks()
        server = await asyncio.create_subprocess_exec(
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{web_port}",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        query = urllib.parse.quote('tasks_completed_total{job="rhapsody"}')
        result: list[Any] = []
        try:
            deadline = time.monotonic() + 90  # generous: start-up and the first scrapes
            while time.monotonic() < deadline and not result:
                await asyncio.sleep(1)
                try:
                    answer = await asyncio.to_thread(
                        http_json, f"http://127.0.0.1:{web_port}/api/v1/query?query={query}"
                    )
                except OSError:
                    continue  # not listening yet
                result = answer["data"]["result"]
        finally:
            server.terminate()
            await asyncio.wait_for(server.wait(), 30)
            await session.close()
        return result

    with caplog.at_level(logging.ERROR, logger="rhapsody.telemetry"):
        result = asyncio.run(go())
    assert result, "Prometheus never scraped tasks_completed_total"
    assert "failed to shut down" not in caplog.text  # the reader's private registry
    assert sum(float(series["value"][1]) for series in result) == 2
    assert {series["metric"]["backend"] for series in result} == {"concurrent"}


def on_disk(path: Path) -> list[dict[str, Any]]:
    """The checkpoint's records now: whole lines only (each is valid JSON)."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def written(records: list[dict[str, Any]], section: str, uid: str) -> bool:
    for r in records:
        attributes = r.get("attributes") or {}
        if r["section"] == section and uid in (r.get("task_id"), attributes.get("task_id")):
            return True
    return False


def test_checkpoint_is_written_line_by_line_and_rhapsody_report_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    marker = tmp_path / "go"

    async def go() -> list[dict[str, Any]]:
        session = Session()
        await session.start_telemetry(checkpoint_path=path, checkpoint_interval=0.1)
        wait_for_marker = f"while [ ! -e {marker} ]; do sleep 0.05; done"
        futures = await session.submit_tasks(
            [
                {"uid": "first", "executable": "/bin/true"},
                {"uid": "waits", "executable": "/bin/sh", "arguments": ["-c", wait_for_marker]},
                {"uid": "last", "function": len, "args": ["ab"], "dependencies": ["first"]},
            ]
        )
        await asyncio.gather(futures[0], futures[2])
        # Events are written as they happen, spans with the next batch (checkpoint_interval).
        # Polling the file is the point: what is on disk while "waits" still runs.
        during = on_disk(path)
        while not written(during, "span", "last"):
            await asyncio.sleep(0.05)
            during = on_disk(path)
        marker.touch()
        await session.wait_tasks()
        await session.close()
        return during

    during = asyncio.run(go())
    started = {r["task_id"] for r in during if r.get("event_type") == "TaskStarted"}
    assert {"first", "waits", "last"} <= started
    assert not written(during, "span", "waits")  # it was still running
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert {r["section"] for r in records} == {"event", "span", "metric"}
    assert records[-1]["section"] == "metric"
    assert records[-1]["tasks_completed"] == 3
    summary = summarize(load(path))
    assert set(summary.task_times) == {"first", "waits", "last"}
    assert summary.critical_path[-1] in {"waits", "last"}
    assert main(["report", str(path), "--html", str(tmp_path / "r.html")]) == 0
    assert "waits" in (tmp_path / "r.html").read_text()


def test_checkpoint_path_that_is_a_directory_gets_a_session_file(tmp_path: Path) -> None:
    async def go() -> Path | None:
        session = Session()
        manager = await session.start_telemetry(checkpoint_path=tmp_path)
        await session.submit_tasks([{"uid": "a", "executable": "/bin/true"}])
        await session.wait_tasks()
        await session.close()
        return manager.checkpoint_file

    written = asyncio.run(go())
    assert written is not None and written.parent == tmp_path
    assert written.name.endswith(".telemetry.jsonl")
    assert load(written)[0].uid == "a"
