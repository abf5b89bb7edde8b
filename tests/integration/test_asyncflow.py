"""Real AsyncFlow workflows on RHAPSODY backends, AsyncFlow used exactly as shipped (no patching).

AsyncFlow takes started backend objects, attaches them to a `WorkflowEngine`, routes each task
to a backend by its `name` and learns states through `register_callback`. See docs/asyncflow.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import rhapsody
from rhapsody.backends.execution import ConcurrentExecutionBackend
from rhapsody.errors import TaskExecutionError

asyncflow = pytest.importorskip("radical.asyncflow")
from radical.asyncflow import WorkflowEngine  # noqa: E402
from radical.asyncflow.errors import DependencyFailureError  # noqa: E402

# No workflow here may take longer than this, whatever goes wrong.
BOUND = 90.0

DASK = pytest.param("dask", id="dask")
RADICAL = pytest.param(
    "radical_pilot", id="radical_pilot", marks=[pytest.mark.slow, pytest.mark.radical]
)
ALL = ["concurrent", "noop", DASK]
RUNS_TASKS = ["concurrent", DASK]  # noop completes tasks without running them


@pytest.fixture
def backend_name(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The backend under test; skips when its plugin is not installed here."""
    name: str = request.param
    if name == "dask":
        pytest.importorskip("distributed")
    if not rhapsody.discover_backends().get(name):
        pytest.skip(f"the {name} backend is not installed")
    if name == "radical_pilot":
        # RADICAL-Pilot keeps state under $HOME and talks over the network: confine it.
        hermetic = pytest.importorskip("rhapsody_radical.hermetic").hermetic
        with hermetic(tmp_path / "rp-home"):
            yield name
        return
    yield name


def run(workflow: Callable[..., Any], *args: Any) -> Any:
    return asyncio.run(asyncio.wait_for(workflow(*args), BOUND))


@contextlib.asynccontextmanager
async def engine(*backends: Any, work_dir: Path) -> AsyncIterator[Any]:
    flow = await WorkflowEngine.create(backend=list(backends), work_dir=str(work_dir))
    try:
        yield flow
    finally:
        await flow.shutdown()  # shuts the backends down too


async def until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("backend_name", [*ALL, RADICAL], indirect=True)
def test_function_chain_with_fan_in(backend_name: str, tmp_path: Path) -> None:
    async def go() -> None:
        backend = await rhapsody.get_backend(backend_name)
        async with engine(backend, work_dir=tmp_path) as flow:
            assert backend.is_attached and backend.attached_to == [flow.uid]
            assert Path(backend._work_dir) == tmp_path / flow.uid

            @flow.function_task
            async def start() -> int:
                return 1

            @flow.function_task
            async def add(x: int, y: int = 0) -> int:
                return x + 1 + y

            @flow.function_task
            async def nothing(x: int) -> None:
                return None

            a = start()
            b = add(a)
            c = add(a)
            d = add(b, y=c)  # waits for both branches
            e = nothing(d)  # a DONE task that returns None resolves to None
            values = await asyncio.gather(a, b, c, d, e)
        if backend_name == "noop":  # completes every task without running it
            assert values == [None] * 5
        else:
            assert values == [1, 2, 2, 5, None]

    run(go)


@pytest.mark.parametrize("backend_name", [*ALL, RADICAL], indirect=True)
def test_executable_tasks_and_capture_stdio(backend_name: str, tmp_path: Path) -> None:
    async def go() -> None:
        backend = await rhapsody.get_backend(backend_name)
        async with engine(backend, work_dir=tmp_path) as flow:

            @flow.executable_task
            async def hello(who: str) -> str:
                return f"/bin/echo hello {who}"

            @flow.executable_task(capture_stdio=True)
            async def captured() -> str:
                return "/bin/sh -c 'echo out; echo err >&2'"

            @flow.executable_task
            async def one_core() -> str:
                return "/bin/true"

            greeting = await hello("world")
            out_path = await captured()
            await one_core(task_description={"cpus": 1})  # AsyncFlow's resource key
        assert Path(out_path).parent == tmp_path / flow.uid
        if backend_name == "noop":
            assert greeting is None and Path(out_path).read_text() == ""
        else:
            assert greeting == "hello world\n"
            assert Path(out_path).read_text() == "out\n"
            assert Path(out_path).with_suffix(".stderr").read_text() == "err\n"

    run(go)


def test_shell_command_lines_keep_their_operators(tmp_path: Path) -> None:
    async def go() -> None:
        backend = await rhapsody.get_backend("concurrent", cores=1)
        async with engine(backend, work_dir=tmp_path) as flow:

            @flow.executable_task
            async def pipeline() -> str:
                return "echo a | tr a b"

            assert await pipeline(task_description={"shell": True}) == "b\n"

    run(go)


@pytest.mark.parametrize("backend_name", RUNS_TASKS, indirect=True)
def test_failure_reaches_the_task_and_its_dependent(backend_name: str, tmp_path: Path) -> None:
    async def go() -> None:
        backend = await rhapsody.get_backend(backend_name)
        async with engine(backend, work_dir=tmp_path) as flow:

            @flow.function_task
            async def boom() -> int:
                raise ValueError("boom")

            @flow.function_task
            async def after(x: int) -> int:
                return x

            @flow.executable_task
            async def exits_3() -> str:
                return "/bin/sh -c 'echo oops >&2; exit 3'"

            failed, exe = boom(), exits_3()
            dependent = after(failed)
            with pytest.raises(ValueError, match="boom"):
                await failed  # the task's own exception, not a wrapper
            with pytest.raises(DependencyFailureError):
                await dependent
            with pytest.raises(TaskExecutionError, match="exit code 3") as info:
                await exe
            assert info.value.uid == exe.task["uid"]

    run(go)


@pytest.mark.parametrize("backend_name", RUNS_TASKS, indirect=True)
def test_cancel_a_running_task_cancels_its_dependent(backend_name: str, tmp_path: Path) -> None:
    async def go() -> None:
        backend = await rhapsody.get_backend(backend_name)
        states: list[tuple[str, str]] = []
        backend.register_callback(lambda task, state: states.append((task["uid"], state)))
        async with engine(backend, work_dir=tmp_path) as flow:

            @flow.function_task
            async def sleeper() -> str:
                await asyncio.sleep(60)
                return "woke"

            @flow.executable_task
            async def sleeper_exe() -> str:
                return "/bin/sleep 60"

            @flow.function_task
            async def after(x: str) -> str:
                return x

            func, exe = sleeper(), sleeper_exe()
            dependent = after(func)
            # AsyncFlow marks a future RUNNING when the backend reports it.
            await until(
                lambda: getattr(func, "state", "") == getattr(exe, "state", "") == "RUNNING"
            )
            func.cancel()  # AsyncFlow asks the backend: `await backend.cancel_task(uid)`
            exe.cancel()
            for future in (func, exe, dependent):
                with pytest.raises(asyncio.CancelledError):
                    await future
        assert (func.task["uid"], "CANCELED") in states
        assert (exe.task["uid"], "CANCELED") in states
        assert all(uid != dependent.task["uid"] for uid, _ in states)  # never submitted

    run(go)


@pytest.mark.parametrize("backend_name", ALL, indirect=True)
def test_two_backends_in_one_engine_routed_by_name(backend_name: str, tmp_path: Path) -> None:
    async def go() -> None:
        main = await rhapsody.get_backend(backend_name)
        side = await ConcurrentExecutionBackend(name="side", cores=1)
        seen: dict[str, set[str]] = {main.name: set(), side.name: set()}
        for backend in (main, side):
            backend.register_callback(lambda task, state, b=backend: seen[b.name].add(task["uid"]))
        async with engine(main, side, work_dir=tmp_path) as flow:

            @flow.function_task
            async def default_route() -> str:
                return "main"

            @flow.function_task(backend="side")
            async def side_route() -> str:
                return "side"

            on_main, on_side = default_route(), side_route()
            results = await asyncio.gather(on_main, on_side)
        assert results == [None if backend_name == "noop" else "main", "side"]
        assert seen[main.name] == {on_main.task["uid"]}
        assert seen[side.name] == {on_side.task["uid"]}

    run(go)


def test_two_default_named_instances_are_told_apart(tmp_path: Path) -> None:
    async def go() -> None:
        first = await rhapsody.get_backend("concurrent", cores=1)
        second = await rhapsody.get_backend("concurrent", cores=1)
        assert first.name != second.name  # AsyncFlow would otherwise keep only one of them
        async with engine(first, second, work_dir=tmp_path) as flow:

            @flow.function_task(backend=second.name)
            async def pid() -> int:
                return os.getpid()

            assert await pid() == os.getpid()
            assert second.is_attached and first.is_attached

    run(go)


def test_a_backend_reused_by_a_second_engine(tmp_path: Path) -> None:
    async def go() -> None:
        backend = await rhapsody.get_backend("concurrent", cores=1)
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(backend.shutdown)
            uids = []
            for _ in range(2):
                flow = await WorkflowEngine.create(backend=backend, work_dir=str(tmp_path))
                uids.append(flow.uid)

                @flow.function_task
                async def twice(x: int) -> int:
                    return 2 * x

                assert await twice(21) == 42
                await flow.shutdown(skip_execution_backend=True)
            assert backend.attached_to == uids and backend.state() == "RUNNING"

    run(go)


def test_services_find_each_other_through_the_session_registry(tmp_path: Path) -> None:
    """A service task publishes its endpoint; a dependent looks it up in the registry. The
    service's future resolves once it is ready (its endpoint: None, it has no port)."""

    async def go() -> None:
        from rhapsody import registry

        session = rhapsody.Session()
        await session.registry_start()
        backend = await rhapsody.get_backend("concurrent", cores=2)
        try:
            async with engine(backend, work_dir=tmp_path) as flow:

                @flow.function_task(service=True)
                async def echo_service() -> None:
                    async def reply(
                        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                    ) -> None:
                        writer.write(b"echo:" + await reader.readline())
                        await writer.drain()
                        writer.close()

                    server = await asyncio.start_server(reply, "127.0.0.1", 0)
                    port = server.sockets[0].getsockname()[1]
                    await registry.apublish("echo", f"127.0.0.1:{port}")
                    async with server:
                        await server.serve_forever()  # until cancelled

                @flow.function_task
                async def client() -> bytes:
                    host, port = (await registry.alookup("echo", wait=30)).split(":")
                    reader, writer = await asyncio.open_connection(host, int(port))
                    writer.write(b"ping\n")
                    answer = await reader.read()
                    writer.close()
                    return answer

                @flow.executable_task
                async def exe_client() -> str:
                    # A separate process finds the registry through RHAPSODY_REGISTRY.
                    return f"{sys.executable} -m rhapsody.registry lookup echo --wait 30"

                service = echo_service()
                assert await client() == b"echo:ping\n"
                assert (await exe_client()).startswith("127.0.0.1:")
                assert service.task["is_service"] is True
                assert await service is None  # ready: resolved, still running
                assert service.task["state"] == "EXECUTING"
        finally:
            await session.close()

    run(go)


def test_state_map_and_callback_contract() -> None:
    async def go() -> None:
        backend = await rhapsody.get_backend("concurrent", cores=1)
        states_map = backend.get_task_states_map()
        assert states_map.terminal_states == {
            states_map.DONE,
            states_map.FAILED,
            states_map.CANCELED,
        }
        seen: list[tuple[type, str]] = []
        backend.register_callback(lambda task, state: seen.append((type(state), state)))
        async with backend:
            await asyncio.gather(*await backend.submit_tasks([{"function": int}]))
        assert all(kind is str for kind, _ in seen)  # AsyncFlow's typeguard wants plain str
        assert (str, states_map.RUNNING) in seen and seen[-1] == (str, states_map.DONE)
        target = backend.link_explicit_data_deps({}, {}, file_name="x.dat")["target"]
        assert Path(target).name == "x.dat"

    run(go)
