"""rhapsody-py 0.6.0's task objects, used as its users use them (issue 16, items 1 and 3)."""

from __future__ import annotations

import asyncio
import pickle

import pytest

import rhapsody
from rhapsody import ComputeTask
from rhapsody.api import TaskValidationError


def test_quick_start_gathers_the_tasks_themselves() -> None:
    async def main() -> list[ComputeTask]:
        session = rhapsody.Session([await rhapsody.get_backend("concurrent")])
        tasks = [ComputeTask(executable="/bin/echo", arguments=[str(i)]) for i in range(3)]
        async with session:
            await session.submit_tasks(tasks)
            return list(await asyncio.gather(*tasks))

    done = asyncio.run(main())
    assert [t.stdout for t in done] == ["0\n", "1\n", "2\n"]
    assert {t.state for t in done} == {"DONE"}
    assert {t.backend for t in done} == {"concurrent"}  # stamped with where it was routed


def test_tasks_are_hashable_and_equal_only_to_themselves() -> None:
    a = ComputeTask(executable="/bin/echo", arguments=["x"])
    b = ComputeTask(executable="/bin/echo", arguments=["x"])
    assert a != b and len({a, b}) == 2 and {a: 1}[a] == 1
    assert a == a and a != dict(a)  # content equality with a plain dict is not identity
    same_uid = ComputeTask(executable="/bin/true", uid="t")
    assert same_uid == ComputeTask(executable="/bin/true", uid="t")
    assert hash(same_uid) == hash(ComputeTask(executable="/bin/true", uid="t"))
    clone = pickle.loads(pickle.dumps(a))
    assert clone == a and hash(clone) == hash(a)
    a["state"] = "DONE"  # results change; the hash does not
    assert {a: 1}[a] == 1


def test_unset_fields_read_none() -> None:
    task = ComputeTask(executable="/bin/echo")
    for field in ("state", "stdout", "stderr", "exit_code", "return_value", "response",
                  "exception", "backend", "function"):
        assert task[field] is None and getattr(task, field) is None
    assert task.args == () and isinstance(task.args, tuple) and task.kwargs == {}
    function = ComputeTask(function=abs, args=[-1])
    assert function["executable"] is None and function.args == (-1,)
    with pytest.raises(KeyError):
        task["no_such_field"]
    with pytest.raises(AttributeError):
        task.no_such_field  # noqa: B018


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"executable": 5}, "executable", "non-empty path string"),
        ({"function": 5}, "function", "callable"),
        ({"executable": "/bin/echo", "arguments": "x"}, "arguments", "list of strings"),
        ({"executable": "/bin/echo", "cores": -1}, "cores", ">= 1"),
        ({"executable": "/bin/echo", "task_backend_specific_kwargs": {"cwd": 7}},
         "task_backend_specific_kwargs", "'cwd'"),
    ],
)
def test_a_task_is_validated_when_built(fields: dict, field: str, words: str) -> None:
    with pytest.raises(TaskValidationError, match=words) as info:
        ComputeTask(**fields)
    assert info.value.field == field and info.value.uid.startswith("task.")


def test_from_dict_and_validate() -> None:
    task = ComputeTask(executable="/bin/echo", arguments=["x"], extra=1)
    again = ComputeTask.from_dict(dict(task))
    assert again == task and again.arguments == ["x"] and again["extra"] == 1
    with pytest.raises(TaskValidationError, match="executable"):
        ComputeTask.from_dict({"executable": 5})
    task.validate()
    task.executable = 5
    with pytest.raises(TaskValidationError, match="executable"):
        task.validate()
