"""Every invalid task dict is rejected at submit, naming the task and the field; all or nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rhapsody.backends.execution import NoopExecutionBackend
from rhapsody.errors import RhapsodyError, TaskValidationError
from rhapsody.task import DESCRIPTION_FIELDS, TaskDescription

BAD = [
    ({"uid": "t"}, "executable", "either 'executable' or 'function'"),
    ({"uid": "t", "executable": "/bin/true", "function": print}, "function", "not both"),
    ({"uid": "t", "executable": "/bin/true", "arguments": "-l"}, "arguments", "list of strings"),
    ({"uid": "t", "executable": "/bin/true", "arguments": [1, None]}, "arguments", "item 1"),
    ({"uid": "t", "executable": "/bin/true", "arguments": ["a\x00b"]}, "arguments", "NUL"),
    (
        {"uid": "t", "executable": "/bin/true", "environment": {"A": 1}},
        "environment",
        "'A' must be a string",
    ),
    ({"uid": "t", "executable": "/bin/true", "environment": ["A=1"]}, "environment", "dict"),
    (
        {"uid": "t", "executable": "/bin/true", "environment": {"A=B": "1"}},
        "environment",
        "not a valid name",
    ),
    ({"uid": "t", "executable": "/bin/true", "cores": -1}, "cores", ">= 1"),
    ({"uid": "t", "executable": "/bin/true", "cores": "2"}, "cores", "whole number"),
    ({"uid": "t", "executable": "/bin/true", "gpus": -2}, "gpus", ">= 0"),
    ({"uid": "t", "executable": "/bin/true", "gpus": True}, "gpus", "whole number"),
    ({"uid": "t", "executable": "/bin/true", "timeout": 0}, "timeout", "positive"),
    ({"uid": "t", "executable": "/bin/true", "timeout": "1"}, "timeout", "seconds"),
    ({"uid": "t", "executable": "/bin/true", "retries": -1}, "retries", ">= 0"),
    ({"uid": "t", "executable": "/bin/true", "shell": "yes"}, "shell", "True or False"),
    ({"uid": "t", "function": "print"}, "function", "callable"),
    ({"uid": "t", "function": print, "args": 3}, "args", "list or tuple"),
    ({"uid": "t", "function": print, "kwargs": [1]}, "kwargs", "dict"),
    ({"uid": "t", "function": print, "shell": True}, "shell", "only executable"),
    ({"uid": "t", "executable": ""}, "executable", "non-empty"),
    (
        {"uid": "t", "executable": "/bin/true", "dependencies": "a"},
        "dependencies",
        "list of task uids",
    ),
    ({"uid": "t", "executable": "/bin/true", "dependencies": ["t"]}, "dependencies", "itself"),
    ({"uid": "t", "executable": "/bin/true", "isolation": "vm"}, "isolation", "one of"),
    (
        {"uid": "t", "executable": "/bin/true", "task_backend_specific_kwargs": 1},
        "task_backend_specific_kwargs",
        "dict",
    ),
]


@pytest.mark.parametrize(("task", "field", "message"), BAD)
def test_bad_field_is_named(task: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(TaskValidationError) as info:
        TaskDescription.from_dict(task, task["uid"])
    assert info.value.uid == "t" and info.value.field == field
    assert "task 't'" in str(info.value) and f"field {field!r}" in str(info.value)
    assert message in str(info.value)


def test_asyncflow_backend_kwargs_are_understood() -> None:
    desc = TaskDescription.from_dict(
        {"executable": "echo hi", "task_backend_specific_kwargs": {"shell": True, "cpus": 2}}, "t"
    )
    assert desc.shell is True and desc.cores == 2


def submit(tasks: Any) -> Any:
    async def go() -> Any:
        backend = NoopExecutionBackend()
        try:
            return await backend.submit_tasks(tasks), backend
        finally:
            await backend.shutdown()

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        ([{"uid": "a", "executable": "x"}, {"uid": "a", "executable": "x"}], "twice"),
        ([{"uid": "a", "executable": "x", "dependencies": ["ghost"]}], "unknown task 'ghost'"),
        (
            [
                {"uid": "a", "executable": "x", "dependencies": ["b"]},
                {"uid": "b", "executable": "x", "dependencies": ["c"]},
                {"uid": "c", "executable": "x", "dependencies": ["a"]},
            ],
            "cycle",
        ),
        ([{"uid": 3, "executable": "x"}], "uid must be a non-empty string"),
        (["not a dict"], "must be a dict"),
        ({"uid": "a", "executable": "x"}, "list of task dicts"),
    ],
)
def test_batch_level_errors(tasks: Any, message: str) -> None:
    with pytest.raises(TaskValidationError, match=message):
        submit(tasks)


def test_rejected_batch_leaves_nothing_behind() -> None:
    async def go() -> None:
        backend = NoopExecutionBackend()
        good = {"uid": "good", "executable": "x"}
        auto = {"executable": "x"}
        with pytest.raises(TaskValidationError):
            await backend.submit_tasks([good, auto, {"uid": "bad", "executable": "x", "cores": 0}])
        assert backend.task_state("good") is None and "uid" not in auto and "state" not in good
        futures = await backend.submit_tasks([good, auto])
        assert [t["state"] for t in await asyncio.gather(*futures)] == ["DONE", "DONE"]
        with pytest.raises(TaskValidationError, match="already used"):
            await backend.submit_tasks([{"uid": "good", "executable": "x"}])
        await backend.shutdown()

    asyncio.run(go())


# Hostile input: anything a user could put in a task dict gets a clean result or a clear error.
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(),
    st.binary(),
    st.lists(st.text(), max_size=3),
    st.dictionaries(st.text(), st.text(), max_size=3),
)
fields = st.sampled_from([*DESCRIPTION_FIELDS, "uid"])


@given(st.dictionaries(fields, values, max_size=6))
def test_arbitrary_dicts_are_accepted_or_rejected_cleanly(task: dict[str, Any]) -> None:
    try:
        futures, _ = submit([task])
    except RhapsodyError as exc:
        assert isinstance(exc, TaskValidationError)
        return
    assert futures[0].result()["state"] == "DONE"
