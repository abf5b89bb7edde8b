"""A workflow file with a 10,000-member sweep and a fan-in: load, expand, validate and run.

Side by side, on this machine (medians of --rounds rounds):
  1. the sweep file (one template with a 100 x 100 matrix, one task depending on "sim.*"):
     parse + hints, expand (placeholders and the pattern), validate every task (the engine's
     `TaskDescription.from_dict`), and the three together;
  2. the same 10,001 tasks written out flat (10,001 tables, as without sweeps): parse;
  3. running it through `noop` with `rhapsody run` (the whole command: load, expand, run
     directory, engine, summary) vs submitting the expanded task dicts to the `noop` backend
     directly (the engine's usual per-task cost).

    python benchmarks/bench_sweep.py                  # 100 x 100 = 10,000 members
    python benchmarks/bench_sweep.py --side 300       # 90,000 members
    python benchmarks/bench_sweep.py --rounds 9
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import io
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from rhapsody import workflow as workflows
from rhapsody.backends.execution import NoopExecutionBackend
from rhapsody.cli import main
from rhapsody.task import TaskDescription

SWEEP = """\
[workflow]
backend = "noop"

[[tasks]]
uid = "sim.{{x}}.{{y}}"
executable = "/opt/model/bin/simulate"
arguments = ["--x", "{{x}}", "--y", "{{y}}", "--out", "{{run_dir}}/sim.{{x}}.{{y}}.h5"]
environment = {{ OMP_NUM_THREADS = "1", CASE = "{{x}}-{{y}}" }}
matrix = {{ x = {{ start = 0, stop = {side} }}, y = {{ start = 0, stop = {side} }} }}

[[tasks]]
uid = "aggregate"
executable = "/opt/model/bin/aggregate"
arguments = ["{{run_dir}}"]
dependencies = ["sim.*"]
"""


def median(
    rounds: int, work: Callable[[Any], Any], prepare: Callable[[], Any] = lambda: None
) -> float:
    """The median time of `work(prepare())`, `prepare` not timed."""
    times = []
    for _ in range(rounds):
        given = prepare()
        gc.collect()  # each round starts without the garbage of the last
        start = time.perf_counter()
        work(given)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def flat_file(tasks: list[dict[str, Any]], folder: Path) -> Path:
    """The expanded tasks written out as a JSON workflow (TOML has no writer in the stdlib)."""
    path = folder / "flat.json"
    plain = [{k: v for k, v in t.items() if k != "parameters"} for t in tasks]
    path.write_text(json.dumps({"workflow": {"backend": "noop"}, "tasks": plain}))
    return path


async def noop_direct(tasks: list[dict[str, Any]]) -> None:
    backend = await NoopExecutionBackend()
    futures = await backend.submit_tasks(tasks)
    await asyncio.gather(*futures)
    await backend.shutdown()


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--side", type=int, default=100, help="matrix side (members = side^2)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    members = args.side**2
    console = Console()
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        folder = Path(tmp)
        sweep = folder / "sweep.toml"
        sweep.write_text(SWEEP.format(side=args.side))
        run_dir = folder / "run"

        read = median(args.rounds, lambda _: workflows.read(sweep))
        flow = workflows.read(sweep)
        expand = median(args.rounds, lambda _: flow.expand(run_dir))
        tasks = flow.expand(run_dir)
        assert len(tasks) == members + 1 and len(tasks[-1]["dependencies"]) == members

        def validate(_: None) -> None:
            for task in tasks:
                TaskDescription.from_dict(task, task["uid"])

        check = median(args.rounds, validate)
        def load_expand_validate(_: None) -> None:
            for task in workflows.load(sweep, run_dir).tasks:
                TaskDescription.from_dict(task, task["uid"])

        together = median(args.rounds, load_expand_validate)
        flat = flat_file(tasks, folder)
        flat_read = median(args.rounds, lambda _: workflows.read(flat))

        def cli_run(_: None) -> None:
            with contextlib.redirect_stdout(io.StringIO()) as out:  # the summary
                code = main(["run", str(sweep), "--no-progress", "--run-dir", str(run_dir)])
            assert code == 0, out.getvalue()

        cli = median(args.rounds, cli_run)
        direct = median(
            args.rounds,
            lambda fresh: asyncio.run(noop_direct(fresh)),
            lambda: workflows.load(sweep, run_dir).tasks,
        )

    table = Table(title=f"a {members:,}-member sweep + a fan-in ({members + 1:,} tasks)")
    for column in ("step", "seconds", "per task"):
        table.add_column(column, justify="right" if column != "step" else "left")

    def row(name: str, seconds: float) -> None:
        table.add_row(name, f"{seconds:.3f}", f"{seconds / (members + 1) * 1e6:.1f} µs")

    row("sweep file: parse + hints", read)
    row("sweep file: expand (placeholders, 'sim.*')", expand)
    row("sweep file: validate (TaskDescription)", check)
    row("sweep file: load + expand + validate", together)
    row("flat JSON file of the same tasks: parse", flat_read)
    row("rhapsody run --backend noop (whole command)", cli)
    row("the expanded tasks through noop, direct", direct)
    console.print(table)


if __name__ == "__main__":
    main_()
