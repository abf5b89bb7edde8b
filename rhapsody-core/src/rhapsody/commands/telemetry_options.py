"""The telemetry options of `rhapsody run`: a live dashboard, a JSONL checkpoint, OTLP and
Prometheus exports (they need `rhapsody-core[telemetry]`)."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from rhapsody.session import Session
    from rhapsody.telemetry import TelemetryManager


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("telemetry (needs rhapsody-core[telemetry])")
    group.add_argument(
        "--dashboard",
        action="store_true",
        help="serve a live dashboard on 127.0.0.1 (its URL, with its token, is printed)",
    )
    group.add_argument(
        "--dashboard-port", type=int, default=0, metavar="PORT", help="its port (default: any)"
    )
    group.add_argument(
        "--telemetry",
        metavar="FILE",
        type=os.path.abspath,  # the run changes directory: the path means where it was given
        help="write the telemetry JSONL checkpoint (events, spans, metrics) to FILE",
    )
    group.add_argument(
        "--otlp-endpoint", metavar="URL", help="export spans and metrics over OTLP/HTTP to URL"
    )
    group.add_argument(
        "--prometheus-port", type=int, metavar="PORT", help="serve /metrics on 127.0.0.1:PORT"
    )


async def start(
    args: argparse.Namespace, session: Session, console: Console
) -> TelemetryManager | None:
    """The telemetry the options ask for, following every backend of `session` (the run's, and
    those it creates later); None when none is asked."""
    if not (args.dashboard or args.telemetry or args.otlp_endpoint) and (
        args.prometheus_port is None
    ):
        return None
    from rhapsody.telemetry import TelemetryError, TelemetryManager

    manager = None
    name = next(iter(session.backends))  # the run's backend
    try:
        manager = TelemetryManager(
            f"run.{name}",
            checkpoint_path=args.telemetry,
            otlp_endpoint=args.otlp_endpoint,
            prometheus_port=args.prometheus_port,
            default_backend=lambda: name,
        )
        await manager.start()
        manager.attach(session)
        if args.dashboard:
            url = await manager.start_dashboard(port=args.dashboard_port)
            console.print(f"dashboard: {url}", highlight=False, soft_wrap=True)
    except (TelemetryError, OSError, ValueError) as exc:
        # The run reports this as a start-up error: nothing of it may stay behind.
        if manager is not None:
            manager.close()
        await session.close()
        raise TelemetryError(f"telemetry: {exc}") from exc
    if manager.prometheus_address is not None:
        console.print(f"metrics: http://{manager.prometheus_address}/metrics", highlight=False)
    return manager
