"""`rhapsody run WORKFLOW`: run a workflow file with live progress and a summary."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rhapsody import workflow as workflows
from rhapsody.errors import RhapsodyError, TaskValidationError
from rhapsody.plugins import get_backend
from rhapsody.states import CANCELED, DONE, EXECUTING, FAILED, FINAL_STATES

STDERR_TAIL = 300


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workflow", help="a .toml, .json or .yaml file with a 'tasks' list")
    parser.add_argument("--backend", help="backend name (default: the file's, else concurrent)")
    parser.add_argument("--no-progress", action="store_true", help="no live progress display")


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    try:
        flow = workflows.load(args.workflow)
    except RhapsodyError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return 2
    name = args.backend or flow.backend or "concurrent"
    try:
        return asyncio.run(_run(flow, name, not args.no_progress))
    except KeyboardInterrupt:
        return 130


async def _run(flow: workflows.Workflow, name: str, live: bool) -> int:
    console = Console()
    try:
        backend = get_backend(name, **flow.backend_options)
        await backend
    except RhapsodyError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return 2
    states: dict[str, str] = {}
    backend.register_callback(lambda task, state: states.__setitem__(task["uid"], state))
    total = len(flow.tasks)
    started = time.perf_counter()
    interrupted = False
    try:
        try:
            futures = await backend.submit_tasks(flow.tasks)
        except TaskValidationError as exc:
            console.print(
                f"[red]error:[/red] {workflows.describe(flow, exc)}",
                highlight=False,
                soft_wrap=True,
            )
            return 2
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[counts]}"),
            console=console,
            disable=not live,
            transient=False,
        ) as progress:
            bar = progress.add_task(flow.path.name, total=total, counts="")
            pending = set(futures)
            while pending:
                _, pending = await asyncio.wait(pending, timeout=0.2)
                progress.update(
                    bar, completed=total - len(pending), counts=_counts(states, total, started)
                )
    except asyncio.CancelledError:
        interrupted = True  # Ctrl-C: asyncio.run cancels us; shut down cleanly below
    finally:
        await backend.shutdown()
    _summary(console, flow.tasks, states, started, interrupted)
    if interrupted:
        raise KeyboardInterrupt
    return 0 if all(states.get(t["uid"]) == DONE for t in flow.tasks) else 1


def _counts(states: dict[str, str], total: int, started: float) -> str:
    count = Counter(states.values())
    finished = sum(count[s] for s in FINAL_STATES)
    rate = finished / max(time.perf_counter() - started, 1e-9)
    return (
        f"done {count[DONE]}  failed {count[FAILED]}  canceled {count[CANCELED]}  "
        f"running {count[EXECUTING]}  pending {total - finished - count[EXECUTING]}  "
        f"{rate:,.1f} tasks/s"
    )


def _summary(
    console: Console,
    tasks: list[dict[str, Any]],
    states: dict[str, str],
    started: float,
    interrupted: bool,
) -> None:
    count = Counter(states.get(t["uid"], "NEW") for t in tasks)
    elapsed = time.perf_counter() - started
    headline = ", ".join(f"{n} {s.lower()}" for s, n in sorted(count.items()))
    console.print(
        f"{len(tasks)} tasks in {elapsed:.2f} s: {headline}"
        + (" (interrupted: unfinished tasks were canceled)" if interrupted else "")
    )
    # The workflow's results: what its final tasks (those nothing depends on) printed.
    needed = {dep for t in tasks for dep in t.get("dependencies") or ()}
    for task in tasks:
        output = (task.get("stdout") or "").strip()
        if task["uid"] not in needed and states.get(task["uid"]) == DONE and output:
            console.print(f"[bold]{task['uid']}[/bold]: {output[-STDERR_TAIL:]}", highlight=False)
    unhappy = [t for t in tasks if states.get(t["uid"]) != DONE]
    if not unhappy:
        return
    table = Table(title="tasks not DONE")
    for column in ("task", "state", "reason", "stderr (tail)"):
        table.add_column(column, overflow="fold")
    for task in unhappy:
        reason = task.get("exception")
        stderr = (task.get("stderr") or "")[-STDERR_TAIL:].strip()
        table.add_row(
            task["uid"],
            states.get(task["uid"], "NEW"),
            "" if reason is None else str(reason),
            stderr,
        )
    console.print(table)
