"""rhapsody-py 0.6.0's Session: work_dir, wait_tasks, the task's `cwd` / `env`, noop
(issue 16, items 4, 6 and 11)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import rhapsody
from rhapsody import ComputeTask, Session
from rhapsody.backends.constants import TasksMainStates


def test_work_dir_holds_one_directory_per_session(tmp_path: Path) -> None:
    async def main(session: Session) -> ComputeTask:
        session.add_backend(await rhapsody.get_backend("concurrent"))
        task = ComputeTask(executable="/bin/echo", arguments=["hi"], capture_stdio=True)
        async with session:
            await session.submit_tasks([task])
            await session.wait_tasks([task])
        return task

    first, second = Session(work_dir=tmp_path), Session(work_dir=tmp_path)
    assert first.work_dir == tmp_path
    a, b = asyncio.run(main(first)), asyncio.run(main(second))
    dirs = sorted(p.parent for p in (Path(a.stdout), Path(b.stdout)))
    assert dirs[0] != dirs[1] and all(d.parent == tmp_path for d in dirs)
    assert Path(a.stdout).read_text() == "hi\n"
    assert Session().work_dir == Path.cwd()


def test_wait_tasks_returns_every_task_whatever_its_state() -> None:
    async def main() -> tuple[list[Any], list[ComputeTask]]:
        async with Session([await rhapsody.get_backend("concurrent")]) as session:
            ok = ComputeTask(executable="/bin/true")
            bad = ComputeTask(executable="/bin/false")
            after_bad = ComputeTask(executable="/bin/true", dependencies=[bad.uid])
            slow = ComputeTask(executable="/bin/sleep", arguments=["30"])
            tasks = [ok, bad, after_bad, slow]
            await session.submit_tasks(tasks)
            await asyncio.sleep(0)
            backend = next(iter(session.backends.values()))
            await backend.cancel_task(slow.uid)
            return await session.wait_tasks(tasks), tasks

    got, given = asyncio.run(main())
    assert got == given and all(a is b for a, b in zip(got, given, strict=True))
    assert [t.state for t in got] == ["DONE", "FAILED", "FAILED", "CANCELED"]


def test_backend_specific_cwd_and_env_are_honoured(tmp_path: Path) -> None:
    script = ["-c", "echo $RHAPSODY_T; pwd"]
    plain = ComputeTask(
        executable="/bin/sh",
        arguments=script,
        task_backend_specific_kwargs={"cwd": str(tmp_path), "env": {"RHAPSODY_T": "env"}},
    )
    both = ComputeTask(  # the top-level fields win
        executable="/bin/sh",
        arguments=script,
        environment={"RHAPSODY_T": "top"},
        working_directory="/",
        task_backend_specific_kwargs={"cwd": str(tmp_path), "env": {"RHAPSODY_T": "env"}},
    )

    async def main() -> None:
        async with Session([await rhapsody.get_backend("concurrent")]) as session:
            await session.submit_tasks([plain, both])
            await session.wait_tasks()

    asyncio.run(main())
    assert plain.stdout == f"env\n{os.path.realpath(tmp_path)}\n"
    assert both.stdout == "top\n/\n"


def test_noop_finishes_after_submit_so_late_callbacks_see_every_state() -> None:
    seen: dict[str, list[str]] = {}

    def record(task: dict[str, Any], state: str) -> None:
        seen.setdefault(task["uid"], []).append(state)

    async def main() -> None:
        backend = await rhapsody.get_backend("noop")
        tasks = [ComputeTask(executable="/bin/true") for _ in range(5)]
        tasks.append(ComputeTask(executable="/bin/true", dependencies=[tasks[0].uid]))
        await backend.submit_tasks(tasks)
        backend.register_callback(record)
        await asyncio.gather(*tasks)
        await backend.shutdown()

    asyncio.run(main())
    assert len(seen) == 6
    assert all(states[-1] == TasksMainStates.DONE for states in seen.values())


def test_wait_tasks_with_plain_dicts_without_uids() -> None:
    async def main() -> list[Any]:
        async with Session() as session:
            await session.submit_tasks([{"executable": "/bin/true"}, {"executable": "/bin/false"}])
            return await session.wait_tasks()

    ok, failed = asyncio.run(main())
    assert (ok["state"], failed["state"]) == ("DONE", "FAILED")
    assert ok["backend"] == failed["backend"] == "concurrent"
