"""A hypothesis state machine that drives a live backend with random task graphs.

It submits random batches (random dependencies on earlier tasks, random kinds: succeeding,
failing, slow; optionally random `retries` and `timeout`), cancels random tasks, lets time pass,
and checks the invariants after every step. Batches depending on tasks still in flight also
exercise early dispatch on backends that chain dependencies (`chains_dependencies`). It runs
in a worker thread; `call` runs a coroutine function on the backend's event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from rhapsody.backends.base import BaseExecutionBackend
from rhapsody.states import CANCELED, DONE, FAILED
from rhapsody.testing.invariants import InvariantRecorder

T = TypeVar("T")
TaskMaker = Callable[[str], "dict[str, Any] | None"]

KINDS = ("ok", "fail", "slow")
logger = logging.getLogger("rhapsody.testing")
_runs = itertools.count()


async def _wait_all(futures: list[asyncio.Future[Any]], timeout: float) -> int:
    if not futures:
        return 0
    _, pending = await asyncio.wait(futures, timeout=timeout)
    return len(pending)


def run_state_machine(
    backend: BaseExecutionBackend,
    make_task: TaskMaker,
    call: Callable[..., Any],
    *,
    max_examples: int = 200,
    steps: int = 12,
    settle_timeout: float = 60.0,
    retries: int = 0,
    timeouts: Sequence[float] = (),
    check: Callable[[], None] | None = None,
) -> InvariantRecorder:
    """Run the machine against `backend`; raises on the first violated invariant.

    `retries`: each task draws its `retries` from 0 to this; `timeouts`: each task draws its
    `timeout` from these or none. `check` is called once every task of an example is final,
    for what only the test knows (what its backend really ran); it raises on a violation."""
    kinds = [k for k in KINDS if make_task(k) is not None]
    if not kinds:
        raise ValueError("make_task must support at least the 'ok' kind")
    recorder = InvariantRecorder(backend, uid_prefix=f"sm{next(_runs)}.")
    example_ids = itertools.count()
    checked = [False]  # whether the last example ended with its checks passed

    class BackendMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.prefix = f"{recorder.prefix}{next(example_ids)}."
            # Examples are independent (hypothesis replays them): start clean. What was
            # recorded after the last example's checks passed (a late callback) is its own
            # violation, reported here rather than dropped.
            late = list(recorder.violations) if checked[0] else []
            recorder.violations.clear()
            checked[0] = False
            assert not late, "invariant violations after the example ended:\n" + "\n".join(
                late[:20]
            )
            self.uids: list[str] = []
            self.futures: dict[str, asyncio.Future[Any]] = {}
            self.cancelled: set[str] = set()

        @rule(data=st.data(), size=st.integers(min_value=1, max_value=4))
        def submit(self, data: st.DataObject, size: int) -> None:
            tasks: list[dict[str, Any]] = []
            for _ in range(size):
                task = make_task(data.draw(st.sampled_from(kinds), label="kind"))
                assert task is not None
                uid = f"{self.prefix}{len(self.uids) + len(tasks)}"
                candidates = self.uids + [t["uid"] for t in tasks]
                deps = (
                    data.draw(
                        st.lists(st.sampled_from(candidates), max_size=3, unique=True), label="deps"
                    )
                    if candidates
                    else []
                )
                task.update(uid=uid, dependencies=deps)
                if retries:
                    task["retries"] = data.draw(st.integers(0, retries), label="retries")
                if timeouts:
                    timeout = data.draw(st.sampled_from([None, *timeouts]), label="timeout")
                    if timeout is not None:
                        task["timeout"] = timeout
                pool = backend.resources
                if pool is not None:  # random shapes exercise slot accounting (invariant 4)
                    task["cores"] = data.draw(st.integers(1, pool.total_cores), label="cores")
                    task["gpus"] = data.draw(st.integers(0, pool.total_gpus), label="gpus")
                tasks.append(task)
            recorder.track(tasks)
            futures = call(backend.submit_tasks, tasks)
            for task in tasks:
                self.futures[task["uid"]] = futures[task["uid"]]
                self.uids.append(task["uid"])

        @precondition(lambda self: bool(self.uids))
        @rule(data=st.data())
        def cancel(self, data: st.DataObject) -> None:
            uid = data.draw(st.sampled_from(self.uids), label="cancel")
            self.cancelled.add(uid)
            call(backend.cancel_task, uid)

        @rule(delay=st.sampled_from([0, 0.001, 0.01]))
        def let_time_pass(self, delay: float) -> None:
            call(asyncio.sleep, delay)

        @invariant()
        def invariants_hold(self) -> None:
            recorder.assert_ok()

        def teardown(self) -> None:
            pending = call(_wait_all, list(self.futures.values()), settle_timeout)
            if pending:
                states = {u: backend.task_state(u) for u, f in self.futures.items() if not f.done()}
                # Logged at once too: hypothesis then replays the example while shrinking it, and
                # with tasks that never finish each replay waits `settle_timeout` again, so a
                # test timeout may come before the final report.
                logger.error("state machine: %d task(s) never finished: %s", pending, states)
                raise AssertionError(f"{pending} task(s) never finished: {states}")
            recorder.check_final(self.futures)
            self.check_dependents()
            recorder.assert_ok()
            if check is not None:
                check()
            checked[0] = True

        def check_dependents(self) -> None:
            """(3): a task with a dependency that did not end DONE ended FAILED, naming a
            dependency (CANCELED only if it was cancelled itself)."""
            for uid, future in self.futures.items():
                deps = recorder.deps[uid]
                if all(recorder.last_state(dep) == DONE for dep in deps):
                    continue
                final = recorder.last_state(uid)
                if final == CANCELED and uid in self.cancelled:
                    continue
                error = future.exception() if future.done() and not future.cancelled() else None
                if final != FAILED or "dependency" not in str(error):
                    states = {dep: recorder.last_state(dep) for dep in deps}
                    recorder.violations.append(
                        f"{uid} ended {final} ({error}) while its dependencies ended {states}"
                    )

    run_state_machine_as_test(
        BackendMachine,
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
    recorder.assert_ok()  # what came after the last example's checks
    return recorder


def loop_caller(loop: asyncio.AbstractEventLoop) -> Callable[..., Any]:
    """A `call` for a private loop driven from this thread."""

    def call(func: Callable[..., Awaitable[T]], *args: Any) -> T:
        return loop.run_until_complete(func(*args))

    return call
