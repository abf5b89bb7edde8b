"""The engine's invariants under random graphs, delays, failures, retries, timeouts,
cancellations and resources.

A fault-injecting backend (no processes, so hypothesis can run hundreds of examples) exercises
the same engine every real backend uses; a second one opts into early dispatch
(`chains_dependencies`) as dask does, and checks what it really ran.
"""

from __future__ import annotations

import asyncio
import traceback
from typing import Any

from rhapsody.backends.base import BaseExecutionBackend, ExecutionContext, Outcome
from rhapsody.resources import ResourcePool
from rhapsody.states import DONE, SCHEDULING_PENDING
from rhapsody.task import TaskDescription
from rhapsody.testing import BackendConformance
from rhapsody.testing.machine import loop_caller, run_state_machine


class FlakyBackend(BaseExecutionBackend):
    """Sleeps `delay`, fails its first `fail` attempts (`task_backend_specific_kwargs`)."""

    backend_name = "flaky"

    def __init__(self) -> None:
        super().__init__(resources=ResourcePool(3, ["0", "1"]))

    async def _execute(self, task: TaskDescription, ctx: ExecutionContext) -> Outcome:
        options = task.backend_kwargs
        await asyncio.sleep(options.get("queue_delay", 0))
        ctx.started()
        await asyncio.sleep(options.get("delay", 0))
        if ctx.attempt <= options.get("fail", 0):
            return Outcome.failure("injected failure", exit_code=1)
        return Outcome(True, return_value=ctx.gpu_ids)


def flaky_task(kind: str) -> dict[str, Any] | None:
    options = {
        "ok": {"delay": 0.0},
        "fail": {"delay": 0.001, "fail": 1},  # succeeds on a retry
        "slow": {"delay": 0.02, "queue_delay": 0.005, "report_delay": 0.03},
        "long": {"delay": 10.0},  # the kit's task to cancel while it runs
    }.get(kind)
    if options is None:
        return None
    return {"function": print, "task_backend_specific_kwargs": options}


def test_engine_invariants_hold_for_random_graphs() -> None:
    loop = asyncio.new_event_loop()
    call = loop_caller(loop)
    backend = FlakyBackend()
    try:
        call(backend._ensure_started)
        recorder = run_state_machine(
            backend, flaky_task, call, max_examples=300, steps=15, retries=1, timeouts=(0.01, 1)
        )
        # The run really exercised contention, failures and the GPU pool.
        assert recorder.peak_cores == 3
        assert recorder.peak_gpus >= 1
        finals = [h[-1] for h in recorder.states.values()]
        assert {"DONE", "FAILED", "CANCELED"} <= set(finals)
    finally:
        call(backend.shutdown)
        loop.close()


class ChainingBackend(BaseExecutionBackend):
    """Opts into early dispatch as dask does: its own "engine" holds a task handed over behind
    its dependencies' attempts (`ctx.upstream`, the futures it gave with `ctx.submitted`) and
    starts it only once each ended successfully. An attempt's end reaches the engine a while
    after it happened (`report_delay`, longer for the "slow" kind: a large result fetched from
    a worker), so starts and outcomes often come before the dependencies are DONE, and a
    `cancel_task` can land in the race window (`_upstream_of`). It records what it really ran
    and what the engine did."""

    backend_name = "chaining"
    chains_dependencies = True
    queues_tasks = True  # timeouts count from the reported start

    def __init__(self) -> None:
        super().__init__()
        self.ran: dict[str, tuple[str, ...]] = {}  # uid -> its dependencies, once really started
        self.unmet: dict[str, tuple[str, ...]] = {}  # likewise, once not started behind them
        # dependencies cancelled after they succeeded here, before the engine heard of it
        self.raced: set[str] = set()
        self.handed_over = 0  # attempts handed over behind attempts in flight
        self.held_starts = 0  # starts reported while the dependencies were not DONE yet
        self.held_outcomes = 0  # outcomes likewise

    async def _execute(self, task: TaskDescription, ctx: ExecutionContext) -> Outcome:
        ended: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        ctx.submitted(ended)
        try:
            if ctx.upstream:
                self.handed_over += 1
                await asyncio.wait(ctx.upstream)
                if any(up.cancelled() or not up.result().ok for up in ctx.upstream):
                    self.unmet[task.uid] = task.dependencies
                    outcome = Outcome.failure("not started: a dependency did not succeed")
                    ended.set_result(outcome)
                    return outcome
            options = task.backend_kwargs
            await asyncio.sleep(options.get("queue_delay", 0))
            self.ran[task.uid] = task.dependencies
            if self.task_state(task.uid) == SCHEDULING_PENDING:
                self.held_starts += 1
            ctx.started()
            await asyncio.sleep(options.get("delay", 0))
            if ctx.attempt <= options.get("fail", 0):
                outcome = Outcome.failure("injected failure", exit_code=1)
            else:
                outcome = Outcome(True, return_value=task.uid)
            ended.set_result(outcome)
        except asyncio.CancelledError:
            ended.cancel()
            raise
        try:
            await asyncio.sleep(options.get("report_delay", 0.003))
        except asyncio.CancelledError:
            # (Not for a timeout: the engine hands no task over behind one that has one.)
            if outcome.ok and task.timeout is None:
                self.raced.add(task.uid)
            raise
        if self.task_state(task.uid) == SCHEDULING_PENDING:
            self.held_outcomes += 1
        return outcome

    def check(self) -> None:
        """Nothing really ran behind a dependency that did not end DONE, but in the race; and
        a task was handed over only behind attempts that were its dependencies' last: one that
        was not started behind them has a dependency that did not end DONE."""
        for uid, deps in self.ran.items():
            for dep in deps:
                state = self.task_state(dep)
                assert state == DONE or dep in self.raced, (
                    f"{uid} really ran, but its dependency {dep} ended {state}"
                )
        for uid, deps in self.unmet.items():
            states = {dep: self.task_state(dep) for dep in deps}
            assert set(states.values()) != {DONE}, (
                f"{uid} was not started behind attempts that did not succeed, but its "
                f"dependencies ended DONE: {states}"
            )


def test_engine_invariants_hold_with_early_dispatch() -> None:
    loop = asyncio.new_event_loop()
    call = loop_caller(loop)
    backend = ChainingBackend()
    try:
        call(backend._ensure_started)
        finals: set[str] = set()
        # Without retries and timeouts most dependents in flight are handed over early; with
        # them, the rule of which are is exercised too.
        for retries, timeouts in ((0, ()), (1, (0.01, 1))):
            recorder = run_state_machine(
                *(backend, flaky_task, call),
                max_examples=200,
                steps=15,
                retries=retries,
                timeouts=timeouts,
                check=backend.check,
            )
            finals.update(h[-1] for h in recorder.states.values())
        # Early dispatch really happened, starts and outcomes were held and replayed, the race
        # was met, and tasks ended every way.
        assert backend.handed_over > 0
        assert backend.held_starts > 0
        assert backend.held_outcomes > 0
        assert backend.raced
        assert {"DONE", "FAILED", "CANCELED"} <= finals
    finally:
        call(backend.shutdown)
        loop.close()


class TestFlakyConformance(BackendConformance):
    """The fault-injecting backend is also a conforming backend."""

    # It only pretends to run tasks: the checks of what tasks do are skipped.
    runs_executables = False
    runs_functions = False

    def make_backend(self) -> FlakyBackend:
        return FlakyBackend()

    def make_task(self, kind: str) -> dict[str, Any] | None:
        return flaky_task(kind)


class TestChainingConformance(BackendConformance):
    """So is the one that chains dependencies."""

    runs_executables = False
    runs_functions = False

    def make_backend(self) -> ChainingBackend:
        return ChainingBackend()

    def make_task(self, kind: str) -> dict[str, Any] | None:
        return flaky_task(kind)


class OversubscribingBackend(FlakyBackend):
    """Claims one core while scheduling into three: the invariant check must notice."""

    @property
    def resources(self) -> ResourcePool:
        return ResourcePool(1, ["0", "1"])


def test_state_machine_detects_a_broken_backend() -> None:
    loop = asyncio.new_event_loop()
    call = loop_caller(loop)
    backend = OversubscribingBackend()
    try:
        call(backend._ensure_started)
        try:
            run_state_machine(backend, flaky_task, call, max_examples=50)
        except Exception as exc:  # AssertionError, or a group of them after shrinking
            assert "oversubscribed" in "".join(traceback.format_exception(exc))
        else:
            raise AssertionError("the state machine did not detect oversubscription")
    finally:
        call(backend.shutdown)
        loop.close()


def test_bookkeeping_of_finished_tasks_is_pruned() -> None:
    from rhapsody.backends.execution import NoopExecutionBackend

    async def go() -> None:
        backend = await NoopExecutionBackend()
        for batch in range(20):
            tasks = [
                {
                    "uid": f"p{batch}.{i}",
                    "executable": "x",
                    "dependencies": [f"p{batch - 1}.{i}"] if batch else [],
                }
                for i in range(500)
            ]
            futures = await backend.submit_tasks(tasks)
            await asyncio.gather(*futures)
        graph = backend._graph
        assert not graph.live and not backend._queues
        assert len(graph.finished) == 10_000
        assert set(graph.finished.values()) == {"DONE"}
        await backend.shutdown()

    asyncio.run(go())
