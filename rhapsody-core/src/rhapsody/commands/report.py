"""`rhapsody report TRACE`: utilization, critical path and slowest tasks of a trace file."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rhapsody import report_html
from rhapsody.trace_report import TraceFileError, load, summarize


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("trace", help="a trace file written by 'rhapsody run --trace'")
    parser.add_argument("--top", type=int, default=10, help="how many slowest tasks to list")
    parser.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page")


def run(args: argparse.Namespace) -> int:
    console = Console()
    if args.top < 1:
        Console(stderr=True).print(f"[red]error:[/red] --top must be >= 1, got {args.top}")
        return 2
    try:
        summary = summarize(load(args.trace))
    except TraceFileError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        return 2
    figures = Table(title=f"trace {escape(args.trace)}", show_header=False)
    figures.add_row("tasks", str(len(summary.task_times)))
    figures.add_row("attempts", str(len(summary.spans)))
    figures.add_row("lanes", str(len(summary.lanes)))
    figures.add_row("makespan", f"{summary.makespan:.3f} s")
    figures.add_row(
        "utilization",
        f"{summary.utilization:.1%} ({summary.busy:.3f} busy lane-seconds / "
        f"{len(summary.lanes)} lanes x {summary.makespan:.3f} s)",
    )
    figures.add_row(
        "critical path",
        f"{summary.critical_length:.3f} s over {len(summary.critical_path)} task(s)",
    )
    console.print(figures)
    console.print(
        "critical path: " + " -> ".join(escape(uid) for uid in summary.critical_path),
        soft_wrap=True,
    )
    slowest = Table(title=f"{args.top} slowest tasks")
    slowest.add_column("task", overflow="fold")
    slowest.add_column("run time (s)", justify="right")
    for uid, seconds in summary.slowest(args.top):
        slowest.add_row(escape(uid), f"{seconds:.3f}")
    console.print(slowest)
    if args.html:
        page = report_html.render(summary, Path(args.trace).name, args.top)
        Path(args.html).write_text(page, encoding="utf-8")
        console.print(f"wrote {escape(args.html)}")
    return 0
