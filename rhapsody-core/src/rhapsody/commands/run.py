"""`rhapsody run WORKFLOW`: run a workflow file with live progress and a summary, in a run
directory; optionally on a platform of the catalog, recorded in a resumable journal, traced,
and with a JSON Lines file of results.

The tasks go through a `Session` holding the chosen backend: it runs AI tasks on an `inference`
backend it creates, links dependencies between the two, and publishes services' endpoints."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rhapsody import workflow as workflows
from rhapsody.backends.base import BaseExecutionBackend
from rhapsody.errors import BackendError, RhapsodyError, TaskValidationError
from rhapsody.inference.request import is_ai_task
from rhapsody.journal import Journal
from rhapsody.platforms import get_platform
from rhapsody.plugins import backend_class
from rhapsody.results import ResultsFile
from rhapsody.session import Session
from rhapsody.states import CANCELED, DONE, EXECUTING, FAILED, FINAL_STATES
from rhapsody.task import TaskDescription, dependency_uids
from rhapsody.trace import TraceRecorder

from . import telemetry_options

STDERR_TAIL = 300


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workflow", help="a .toml, .json or .yaml file with a 'tasks' list")
    parser.add_argument("--backend", help="backend name (default: the file's, else concurrent)")
    parser.add_argument("--no-progress", action="store_true", help="no live progress display")
    parser.add_argument(
        "--platform",
        help="a platform of the catalog, or 'auto' (the allocation this runs in), for backends "
        "that take one",
    )
    parser.add_argument(
        "--journal",
        metavar="FILE",
        help="SQLite journal of every state change; rerunning with it skips DONE tasks",
    )
    parser.add_argument(
        "--trace", metavar="FILE", help="write a Chrome trace (Perfetto, chrome://tracing)"
    )
    telemetry_options.add_arguments(parser)
    parser.add_argument(
        "--run-dir",
        metavar="DIR",
        help="where tasks run (default: the file's run_dir, else a new runs/<name>-<time>)",
    )
    parser.add_argument(
        "--results", metavar="FILE", help="write one JSON line per task as it finishes"
    )


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    # Tasks run in the run directory, and so does this process: paths given here mean here.
    for option in ("journal", "trace", "results"):
        if getattr(args, option):
            setattr(args, option, os.path.abspath(getattr(args, option)))
    journal: Journal | None = None
    created: Path | None = None
    try:
        flow = workflows.read(args.workflow)
        for hint in flow.hints:
            warning = f"[yellow]warning:[/yellow] {escape(hint)}"
            console.print(warning, highlight=False, soft_wrap=True)
        if args.journal:
            journal = Journal(args.journal)
        run_dir = _run_dir(flow, args.run_dir, journal)
        if run_dir is None:
            run_dir = created = workflows.new_run_dir(flow)
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
        flow.expand(run_dir)
        if journal is not None:
            journal.remember("run_dir", str(run_dir))
    except (RhapsodyError, OSError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        if journal is not None:
            journal.close()
        _discard(created)
        return 2
    name = args.backend or flow.backend or "concurrent"
    here = os.getcwd()
    os.chdir(run_dir)
    try:
        code = asyncio.run(_run(flow, name, args, journal, run_dir))
    except KeyboardInterrupt:
        return 130
    except _Terminated:
        return 128 + signal.SIGTERM
    finally:
        os.chdir(here)
    if code == 2:
        _discard(created)  # the workflow never started: leave no empty directory behind
    return code


def _run_dir(flow: workflows.Workflow, option: str | None, journal: Journal | None) -> Path | None:
    """The run directory asked for: --run-dir, else the file's, else the one a journal's
    earlier run used (so a resumed run finds its files); None: make a new one."""
    if option is not None:
        return Path(option).resolve()
    if flow.run_dir is not None:
        return flow.run_dir
    remembered = journal.recall("run_dir") if journal is not None else None
    return None if remembered is None else Path(remembered)


def _discard(run_dir: Path | None) -> None:
    if run_dir is not None:
        with contextlib.suppress(OSError):
            run_dir.rmdir()  # only when empty


class _Terminated(Exception):
    """SIGTERM (a batch system's `scancel`, the end of an allocation) ended the run."""


def _make_backend(name: str, options: dict[str, Any], platform: str | None) -> BaseExecutionBackend:
    cls = backend_class(name)
    if platform is not None:
        # first: an unknown name is the likelier mistake; "auto" is the backend's to resolve
        description = platform if platform == "auto" else get_platform(platform)
        if "platform" not in inspect.signature(cls).parameters:
            raise BackendError(
                f"backend {name!r} does not take a platform (its constructor has no "
                "'platform' parameter): choose a backend that does, or leave out --platform"
            )
        options = {**options, "platform": description}
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:  # backend_options that do not fit the backend
        raise BackendError(f"backend {name!r}: {exc}") from exc


def _inference_backend(options: dict[str, Any]) -> BaseExecutionBackend:
    """The backend of the AI tasks, with the workflow's `inference_options`."""
    from rhapsody.inference.backend import InferenceBackend

    try:
        return InferenceBackend(name="inference", **options)
    except (TypeError, ValueError) as exc:
        raise BackendError(f"[workflow] inference_options: {exc}") from exc


async def _run(
    flow: workflows.Workflow,
    name: str,
    args: argparse.Namespace,
    journal: Journal | None,
    run_dir: Path,
) -> int:
    console = Console()
    results: ResultsFile | None = None
    try:
        if args.results:
            results = ResultsFile(args.results)
        backend = _make_backend(name, flow.backend_options, args.platform)
        backends = [backend]
        if flow.inference_options:  # else the session makes a default one for AI tasks
            backends.append(_inference_backend(flow.inference_options))
        await backend
        session = Session(backends, journal=journal)
        telemetry = await telemetry_options.start(args, session, console)
    except (RhapsodyError, OSError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        if journal is not None:
            journal.close()
        if results is not None:
            results.close()
        return 2
    console.print(f"run directory: {run_dir}", highlight=False, soft_wrap=True)
    states: dict[str, str] = {}
    # Registered on the session: they follow the backends it creates too (inference).
    session.register_callback(lambda task, state: states.__setitem__(task["uid"], state))
    recorder = None
    if args.trace:
        trace = recorder = TraceRecorder()
        session.register_callback(
            lambda task, state: trace.record(task.get("backend") or name, task, state)
        )
    if results is not None:
        session.register_callback(results.record)
    total = len(flow.tasks)
    started = time.perf_counter()
    interrupted = False
    # SIGTERM is how batch systems stop a job (SIGKILL follows): wind down as for Ctrl-C, so no
    # task process outlives the run and the journal records what was canceled.
    main = asyncio.current_task()
    assert main is not None
    terminated = False

    def on_sigterm() -> None:
        nonlocal terminated
        terminated = True
        main.cancel()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        try:
            if any(is_ai_task(task) for task in flow.tasks):
                # Tasks for two backends: check them all before either starts any.
                for task in flow.tasks:
                    TaskDescription.from_dict(task, task.get("uid") or "?")
            futures = await session.submit_tasks(flow.tasks)
            if journal is not None:
                states.update(dict.fromkeys(journal.skipped, DONE))
                if results is not None:
                    results.resumed(t for t in flow.tasks if t["uid"] in journal.skipped)
        except TaskValidationError as exc:
            console.print(
                f"[red]error:[/red] {workflows.describe(flow, exc)}",
                highlight=False,
                soft_wrap=True,
            )
            return 2
        except BackendError as exc:  # e.g. the inference backend without httpx
            console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            return 2
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[counts]}"),
            console=console,
            disable=args.no_progress,
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
        loop.remove_signal_handler(signal.SIGTERM)
        await session.close()  # every backend (services stopped: they end DONE), the journal
        if telemetry is not None:
            telemetry.close()
        if results is not None:
            results.close()
    resumed = len(journal.skipped) if journal is not None else 0
    _summary(console, flow.tasks, states, started, interrupted, resumed)
    code = 0 if all(states.get(t["uid"]) == DONE for t in flow.tasks) else 1
    if recorder is not None:
        try:
            recorder.write(args.trace)
        except OSError as exc:
            console.print(f"[red]error:[/red] {args.trace}: cannot write the trace: {exc}")
            code = 2
    if interrupted:
        raise _Terminated if terminated else KeyboardInterrupt
    return code


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
    resumed: int,
) -> None:
    count = Counter(states.get(t["uid"], "NEW") for t in tasks)
    elapsed = time.perf_counter() - started
    headline = ", ".join(f"{n} {s.lower()}" for s, n in sorted(count.items()))
    console.print(
        f"{len(tasks)} tasks in {elapsed:.2f} s: {headline}"
        + (f" ({resumed} resumed from the journal)" if resumed else "")
        + (" (interrupted: unfinished tasks were canceled)" if interrupted else "")
    )
    # The workflow's results: what its final tasks (those nothing depends on) printed, or for
    # a function, what it returned, or for an AI task, its response.
    needed = {dep for t in tasks for dep in dependency_uids(t)}
    for task in tasks:
        output = task.get("stdout") or task.get("return_value") or task.get("response")
        output = "" if output is None else str(output).strip()
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
