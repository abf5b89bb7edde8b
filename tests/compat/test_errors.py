"""rhapsody-py 0.6.0's errors: positional constructors, attributes, what failed tasks raise
(issue 16, item 5)."""

from __future__ import annotations

import asyncio

import pytest

import rhapsody
from rhapsody import ComputeTask
from rhapsody.api import (
    BackendError,
    ResourceError,
    RhapsodyError,
    TaskExecutionError,
    TaskValidationError,
)


def test_the_originals_positional_forms() -> None:
    error = BackendError("dask", "boom")
    assert str(error) == "Backend 'dask' failed: boom" and error.backend_name == "dask"
    error = TaskValidationError("t1", "bad")
    assert error.task_uid == "t1" and error.message == "Task 't1' validation failed: bad"
    error = TaskExecutionError("t1", "bad", 3)
    assert (error.task_uid, error.exit_code) == ("t1", 3)
    assert error.message == "Task 't1' failed with exit code 3: bad"
    assert TaskExecutionError("t1", "bad").exit_code is None
    error = ResourceError("t1", "gpu", "none left")
    assert (error.task_uid, error.resource_type) == ("t1", "gpu")
    assert str(error) == "Task 't1' resource error (gpu): none left"
    assert all(isinstance(e, RhapsodyError) for e in (error, BackendError("x")))


def test_our_keyword_forms_still_work() -> None:
    error = TaskValidationError("must be a dict", uid="a", field="kwargs")
    assert (error.uid, error.field) == ("a", "kwargs") and "field 'kwargs'" in str(error)
    assert TaskExecutionError("went wrong", uid="a").task_uid == "a"


def _run(*tasks: ComputeTask) -> None:
    async def main() -> None:
        async with rhapsody.Session([await rhapsody.get_backend("concurrent")]) as session:
            await session.submit_tasks(list(tasks))
            await session.wait_tasks(list(tasks))

    asyncio.run(main())


def _await(task: ComputeTask) -> None:
    async def main() -> None:
        async with rhapsody.Session([await rhapsody.get_backend("concurrent")]) as session:
            await session.submit_tasks([task])
            await task

    asyncio.run(main())


def test_a_failed_function_raises_its_own_exception_with_the_task() -> None:
    def boom() -> None:
        raise KeyError("k")

    task = ComputeTask(function=boom)
    with pytest.raises(KeyError) as info:
        _await(task)
    assert info.value.task is task  # type: ignore[attr-defined]
    assert (task.state, task.exit_code, task.stdout, task.stderr) == ("FAILED", 1, "", "'k'")


def test_a_failed_executable_raises_task_execution_error() -> None:
    task = ComputeTask(executable="/bin/sh", arguments=["-c", "echo oops >&2; exit 3"])
    with pytest.raises(TaskExecutionError) as info:
        _await(task)
    error = info.value
    assert (error.task_uid, error.exit_code, error.stderr) == (task.uid, 3, "oops\n")
    assert error.task is task


def test_function_tasks_record_exit_code_and_stdout() -> None:
    task = ComputeTask(function=lambda: {"a": 1})
    _run(task)
    assert (task.exit_code, task.stdout, task.return_value) == (0, "{'a': 1}", {"a": 1})
