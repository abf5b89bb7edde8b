"""The OpenTelemetry side of a `TelemetryManager`: providers, instruments, exporters, and the
conversion of finished attempts into spans and histogram points.

The engine's callback only appends to the manager's plain Python records; this module turns
them into OpenTelemetry data in batches (`flush`): counters and the running-tasks gauge are
observable instruments read at collection time, spans and histogram points are made from the
attempts that finished since the last flush. That keeps per-task cost on the event loop to a few
microseconds (benchmarks/bench_telemetry.py); the SDK's own cost (about 50-100 µs per span) is
paid only where spans are exported or read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

from rhapsody.telemetry import attempts as at

if TYPE_CHECKING:
    from rhapsody.telemetry.manager import TelemetryManager

logger = logging.getLogger("rhapsody.telemetry")

SPAN_NAME = "task"  # rhapsody-py's name for a task span
SESSION_SPAN = "session"

# name -> index in a backend's counters (TelemetryManager.per_backend)
COUNTERS = {
    "tasks_submitted": (at.SUBMITTED, "Total tasks submitted"),
    "tasks_started": (at.STARTED, "Task attempts started"),
    "tasks_completed": (at.COMPLETED, "Total tasks completed"),
    "tasks_failed": (at.FAILED, "Total tasks failed"),
    "tasks_canceled": (at.CANCELED, "Total tasks canceled"),
}
RESOURCE_GAUGES = {
    "node_cpu_utilization": ("cpu_percent", "Node CPU utilization percent"),
    "node_memory_utilization": ("memory_percent", "Node memory utilization percent"),
    "gpu_utilization": ("gpu_percent", "GPU utilization percent (NVML)"),
    "gpu_memory_utilization": ("gpu_memory_percent", "GPU memory used, percent of total (NVML)"),
}
RESOURCE_COUNTERS = {
    "node_disk_read_bytes": ("disk_read_bytes", "Bytes read from the node's disks"),
    "node_disk_write_bytes": ("disk_write_bytes", "Bytes written to the node's disks"),
    "node_network_sent_bytes": ("net_sent_bytes", "Bytes the node sent"),
    "node_network_received_bytes": ("net_recv_bytes", "Bytes the node received"),
}


class Otel:
    """Providers, instruments and the session span of one manager."""

    def __init__(self, manager: TelemetryManager) -> None:
        from rhapsody.telemetry.manager import TelemetryError

        try:
            from opentelemetry import metrics, trace
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import InMemoryMetricReader
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor
            from opentelemetry.trace import Status, StatusCode
        except ImportError as exc:
            raise TelemetryError(
                "telemetry needs the OpenTelemetry SDK: pip install 'rhapsody-core[telemetry]'"
                f" ({exc})"
            ) from exc
        self._manager = manager
        self._observation = metrics.Observation
        self._status = Status
        self._error = StatusCode.ERROR
        self.session_id = manager.session_id
        resource = Resource.create(
            {
                "service.name": "rhapsody",
                "session_id": manager.session_id,
                "host.name": manager.node_id,
                **manager.resource_attributes,
            }
        )
        if manager.resource is not None:
            resource = resource.merge(manager.resource)
        processors = list(manager.span_processors)
        readers: list[Any] = list(manager.metric_readers)
        self.reader = InMemoryMetricReader()
        self._http_server: Any = None
        if manager.otlp_endpoint is not None:
            processors.append(_otlp_span_processor(manager.otlp_endpoint))
            readers.append(_otlp_metric_reader(manager.otlp_endpoint))
        if manager.prometheus is not None:
            reader, server, address = _prometheus_reader(*manager.prometheus)
            readers.append(reader)
            self._http_server = server
            manager.prometheus_address = address
        #: True when something outside this process consumes spans or metrics: then `flush`
        #: runs periodically; otherwise only when they are read (read_traces, read_metrics).
        self.exporting = bool(processors or readers)
        #: True when spans leave the process: only then are they made at every flush (a
        #: metrics-only export, Prometheus, needs the histogram points, not the spans).
        self.exporting_spans = bool(processors)
        self.readers = bool(readers)  # metrics leave the process
        # Exit flushes only what leaves the process; in-memory providers are left to the
        # garbage collector (an exit hook would keep every session's records alive).
        self.buffer = SpanBuffer()
        self.tracer_provider = TracerProvider(
            resource=resource, shutdown_on_exit=self.exporting_spans
        )
        # SpanBuffer has the SpanExporter interface without importing OpenTelemetry at import.
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(cast(Any, self.buffer)))
        for processor in processors:
            self.tracer_provider.add_span_processor(processor)
        self.meter_provider = MeterProvider(
            resource=resource,
            metric_readers=[*readers, self.reader],
            shutdown_on_exit=self.readers,
        )
        tracer = self.tracer_provider.get_tracer("rhapsody")
        self.tracer = tracer
        self.session_span = tracer.start_span(
            SESSION_SPAN,
            attributes={"session_id": manager.session_id},
            start_time=int(manager.started_at * 1e9),
        )
        self.session_context = trace.set_span_in_context(self.session_span)
        self.session_span_id = f"0x{self.session_span.get_span_context().span_id:016x}"
        meter = self.meter_provider.get_meter("rhapsody")
        for name, (index, text) in COUNTERS.items():
            meter.create_observable_counter(
                name, callbacks=[self._counter_reader(index)], description=text
            )
        meter.create_observable_up_down_counter(
            "tasks_running",
            callbacks=[self._counter_reader(at.RUNNING)],
            description="Tasks currently running",
        )
        meter.create_observable_counter(
            "inference_tokens",
            callbacks=[self._read_tokens],
            description="Tokens of AI tasks (token_type: prompt, completion)",
        )
        for name, (field, text) in RESOURCE_GAUGES.items():
            meter.create_observable_gauge(
                name, callbacks=[self._resource_reader(field, False)], unit="%", description=text
            )
        for name, (field, text) in RESOURCE_COUNTERS.items():
            meter.create_observable_counter(
                name, callbacks=[self._resource_reader(field, True)], unit="By", description=text
            )
        self.duration = meter.create_histogram(
            "task_duration_seconds", unit="s", description="Run time of each task attempt"
        )
        self.queue_wait = meter.create_histogram(
            "task_queue_wait_seconds",
            unit="s",
            description="Time from ready to run (dependencies DONE) until the attempt started",
        )
        self._attrs: dict[str, dict[str, str]] = {}
        self.measured = 0  # attempts already turned into histogram points
        self.spanned = 0  # attempts already turned into spans

    # -- observable instruments (called by the SDK at collection, possibly on its thread) -------
    # They read the manager's counters as they are (not its properties, which catch up with the
    # engine's log and may run on the event loop only): up to date as of the last flush.
    def _counter_reader(self, index: int) -> Callable[[Any], Iterable[Any]]:
        def read(options: Any) -> list[Any]:
            return [
                self._observation(counts[index], self.attrs(backend))
                for backend, counts in list(self._manager._per_backend.items())
            ]

        return read

    def _read_tokens(self, options: Any) -> list[Any]:
        return [
            self._observation(count, {**self.attrs(backend), "token_type": kind})
            for (backend, kind), count in list(self._manager._tokens.items())
        ]

    def _resource_reader(self, field: str, total: bool) -> Callable[[Any], Iterable[Any]]:
        def read(options: Any) -> list[Any]:
            rows = self._manager.resource_totals if total else self._manager.resource_latest
            found = []
            for (node, gpu), row in list(rows.items()):
                value = row.get(field)
                if value is None:
                    continue
                attrs = {"session_id": self.session_id, "node_id": node}
                if gpu is not None:
                    attrs["gpu_id"] = str(gpu)
                found.append(self._observation(value, attrs))
            return found

        return read

    def attrs(self, backend: str) -> dict[str, str]:
        found = self._attrs.get(backend)
        if found is None:
            found = self._attrs[backend] = {"session_id": self.session_id, "backend": backend}
        return found

    # -- batches ------------------------------------------------------------------------------
    def flush(self, records: Sequence[tuple[Any, ...]], *, spans: bool = True) -> list[Any]:
        """Histogram points for the attempts after the last flush and, with `spans`, the spans
        of those not made yet; returns the new spans (in the order of `records`)."""
        for record in records[self.measured :]:
            attrs = self.attrs(record[at.BACKEND])
            self.duration.record(record[at.END] - record[at.START], attrs)
            if record[at.WAIT] is not None:
                self.queue_wait.record(record[at.WAIT], attrs)
        self.measured = len(records)
        if not spans:
            return []
        made = [self._span(record) for record in records[self.spanned :]]
        self.spanned = len(records)
        return made

    def _span(self, record: tuple[Any, ...]) -> Any:
        fields = at.as_dict(record)
        attributes: dict[str, Any] = {
            "session_id": self.session_id,
            "task_id": fields["task_id"],
            "backend": fields["backend"],
            "status": fields["status"],
            "state": fields["state"],
            "attempt": fields["attempt"],
            "node": fields["node_id"],
            "slot": fields["slot"],
            "cores": fields["cores"],
            "gpus": fields["gpus"],
            "task_type": fields["task_type"],
        }
        if fields["exit_code"] is not None:
            attributes["exit_code"] = int(fields["exit_code"])
        if fields["task_type"] == "ai":
            attributes.update(at.ai_attributes(record))
        span = self.tracer.start_span(
            SPAN_NAME,
            context=self.session_context,
            attributes=attributes,
            start_time=int(fields["start"] * 1e9),
        )
        if fields["status"] == "failed":
            span.set_status(self._status(self._error, fields["reason"]))
        span.end(end_time=int(fields["end"] * 1e9))
        return span

    def metric_snapshot(self, now: float) -> dict[str, Any]:
        """Every metric summed over its data points (histograms: count and sum)."""
        snapshot: dict[str, Any] = {"checkpoint_time": now}
        data = self.reader.get_metrics_data()
        for resource_metrics in data.resource_metrics if data else ():
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    points: list[Any] = list(metric.data.data_points)
                    if points and hasattr(points[0], "bucket_counts"):
                        snapshot[f"{metric.name}_count"] = sum(p.count for p in points)
                        snapshot[f"{metric.name}_sum"] = sum(p.sum for p in points)
                    elif points:
                        snapshot[metric.name] = sum(p.value for p in points)
        return snapshot

    def shutdown(self, now: float) -> None:
        """End the session span; flush and stop the exporters. A provider without exporters
        stays usable, so that spans (made when read) and metrics can be read after the end."""
        self.session_span.end(end_time=int(now * 1e9))
        exporting: list[tuple[Any, bool]] = [
            (self.tracer_provider, self.exporting_spans),
            (self.meter_provider, self.readers),
        ]
        for provider, exports in exporting:
            if not exports:
                continue
            try:
                provider.shutdown()
            except Exception:
                logger.exception("telemetry: an exporter failed to shut down")
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()


class SpanBuffer:
    """An in-memory span exporter: `read_traces()` reads what it holds."""

    def __init__(self) -> None:
        self.spans: list[Any] = []

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _otlp_span_processor(endpoint: str) -> Any:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    return BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces"))


def _otlp_metric_reader(endpoint: str) -> Any:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    exporter = OTLPMetricExporter(endpoint=endpoint.rstrip("/") + "/v1/metrics")
    return PeriodicExportingMetricReader(exporter)


def _prometheus_reader(host: str, port: int) -> tuple[Any, Any, str]:
    from rhapsody.telemetry.manager import TelemetryError

    try:
        import prometheus_client
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
    except ImportError as exc:
        raise TelemetryError(
            "prometheus_port needs opentelemetry-exporter-prometheus: "
            f"pip install 'rhapsody-core[telemetry]' ({exc})"
        ) from exc
    # A private registry, so that two sessions of one process do not publish each other's series.
    registry = prometheus_client.CollectorRegistry()
    try:
        reader = PrometheusMetricReader(registry=registry)
    except TypeError:  # older: it registers with the global registry (its shutdown then logs)
        reader = PrometheusMetricReader()
        prometheus_client.REGISTRY.unregister(reader._collector)
        registry.register(reader._collector)
    server, _thread = prometheus_client.start_http_server(port, addr=host, registry=registry)
    return reader, server, f"{host}:{server.server_port}"
