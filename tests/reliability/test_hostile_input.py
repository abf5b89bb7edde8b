"""Hostile task dicts, on every installed backend: each one is rejected with a
`TaskValidationError` naming the task and the field, or runs correctly; either way the backend
keeps serving (a normal task submitted after every example must run). One backend serves a
whole module per backend name (a pilot takes half a minute to start), so every uid is fresh."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from reliability_support import WAIT, installed_backends, started

from rhapsody.errors import ResourceError, TaskExecutionError, TaskValidationError
from rhapsody.states import DONE, FINAL_STATES
from rhapsody.task import DESCRIPTION_FIELDS

EXAMPLES = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SHELL_TRICKS = [
    "; rm -f canary",
    "$(rm -f canary)",
    "`rm -f canary`",
    "&& rm -f canary",
    "| rm -f canary",
    "$HOME",
    "'\"",
    "*",
    "\\",
    "\n",
    "-",
    "--help",
]


class Serving:
    """One started backend on one event loop, shared by the module's tests and examples."""

    def __init__(self, name: str, work_dir: Path) -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        self.work_dir = work_dir
        work_dir.mkdir(parents=True)
        self._stack = contextlib.AsyncExitStack()
        self.backend = self.run(self._stack.enter_async_context(started(name, work_dir)))
        self.count = 0

    def uid(self, prefix: str) -> str:
        """A uid no earlier test of the module used."""
        self.count += 1
        return f"{prefix}.{self.count}"

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(awaitable, WAIT))

    def submit(self, *tasks: dict[str, Any]) -> list[Any]:
        """Submit and wait: the results, or the submission's error."""

        async def go() -> list[Any]:
            futures = await self.backend.submit_tasks(list(tasks))
            results = list(await asyncio.gather(*futures, return_exceptions=True))
            # A service's future resolves once it is ready (`service={}` is one too): wait
            # for it to end (every accepted task here runs /bin/true, which ends at once).
            while any("service" in t and t.get("state") not in FINAL_STATES for t in tasks):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            return results

        result: list[Any] = self.run(go())
        return result

    def still_serves(self) -> None:
        [task] = self.submit({"uid": self.uid("sentinel"), "executable": "/bin/true"})
        assert task["state"] == DONE

    def close(self) -> None:
        self.run(self._stack.aclose())
        self.loop.close()


@pytest.fixture(scope="module", params=installed_backends())
def serving(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Serving]:
    serving = Serving(request.param, tmp_path_factory.mktemp(request.param) / "work")
    yield serving
    serving.close()


@pytest.fixture
def running(serving: Serving) -> Serving:
    """`serving`, for the tests that read what a program printed."""
    if serving.name == "noop":
        pytest.skip("noop runs no program")
    return serving


# -- wrong types -------------------------------------------------------------------------------

# Values of the wrong type for every field (none of them strings, so nothing here can name a
# real program or create a directory).
WRONG = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.binary(max_size=20),
    st.lists(st.one_of(st.integers(), st.none(), st.binary(max_size=4)), max_size=4),
    st.dictionaries(st.integers(), st.integers(), max_size=3),
    st.sets(st.integers(), max_size=3),
    st.just(object()),
)
# Every description field but the function ones: these tasks run executables.
FIELDS = [f for f in DESCRIPTION_FIELDS if f not in ("function", "args", "kwargs")]


@settings(EXAMPLES)
@given(field=st.sampled_from(FIELDS), value=WRONG)
def test_wrong_types_are_rejected_or_run(serving: Serving, field: str, value: Any) -> None:
    uid = serving.uid("wrong")
    task = {"uid": uid, "executable": "/bin/true", field: value}
    try:
        [result] = serving.submit(task)
    except TaskValidationError as exc:
        assert exc.uid == uid and uid in str(exc)
        assert exc.field is not None and exc.field in str(exc)
    except ResourceError as exc:  # a valid count, but more cores or GPUs than there are
        assert field in ("cores", "gpus", "ranks", "cores_per_rank", "gpus_per_rank"), field
        assert uid in str(exc), (field, str(exc))
    else:  # accepted (e.g. cores=1.0, a tiny timeout): it ran to an end
        assert task["state"] in FINAL_STATES
        assert isinstance(result, (dict, TaskExecutionError)), result
    serving.still_serves()


@pytest.mark.parametrize(
    "environment",
    [{"A": 1}, {"A": None}, {"A": b"x"}, {1: "x"}, {"": "x"}, {"A=B": "x"}, {"A": "x\x00y"}],
    ids=repr,
)
def test_environment_values_must_be_strings(serving: Serving, environment: Any) -> None:
    uid = serving.uid("env")
    with pytest.raises(TaskValidationError, match=rf"task '{uid}', field 'environment'"):
        serving.submit({"uid": uid, "executable": "/bin/true", "environment": environment})
    serving.still_serves()


# -- arguments reach the program verbatim ---------------------------------------------------------

PRINT_ARGV = ["/usr/bin/printf", "%s\\000"]  # each argument, NUL-terminated; %s expands nothing
ARGUMENT = st.one_of(st.sampled_from(SHELL_TRICKS), st.text(max_size=30))


@settings(EXAMPLES)
@given(arguments=st.lists(ARGUMENT, min_size=1, max_size=6))
@example(arguments=["\r", "a\r\nb"])  # RADICAL-Pilot's own copy of stdout reads '\r' as '\n'
def test_arguments_are_passed_verbatim_never_interpreted(
    running: Serving, arguments: list[str]
) -> None:
    serving = running
    canary = serving.work_dir / "canary"
    canary.touch()
    uid = serving.uid("argv")
    task = {
        "uid": uid,
        "executable": PRINT_ARGV[0],
        "arguments": [PRINT_ARGV[1], *arguments],
        "working_directory": str(serving.work_dir),
    }
    if any("\x00" in a for a in arguments):  # no program can receive a NUL byte
        with pytest.raises(TaskValidationError, match=rf"task '{uid}', field 'arguments'"):
            serving.submit(task)
    else:
        [result] = serving.submit(task)
        assert result["stdout"].split("\x00")[:-1] == arguments
    assert canary.exists()
    serving.still_serves()


@pytest.mark.parametrize("trick", SHELL_TRICKS[:5])
def test_with_shell_arguments_are_quoted_and_the_command_line_is_interpreted(
    running: Serving, trick: str
) -> None:
    serving = running
    canary = serving.work_dir / "canary"
    canary.touch()
    [result] = serving.submit(
        {
            "uid": serving.uid("shell"),
            "executable": "echo $((6 * 7))",
            "arguments": [trick],
            "shell": True,
            "working_directory": str(serving.work_dir),
        }
    )
    assert result["stdout"] == f"42 {trick}\n"
    assert canary.exists()
    serving.still_serves()


def test_huge_and_strange_strings(running: Serving) -> None:
    serving = running
    unicode = ["ünïcødé", "日本語", "🙂", "\u200b", "\r\n\t", "a" * 100_000]
    [ok] = serving.submit(
        {
            "uid": serving.uid("日本語 " * 1000),
            "executable": PRINT_ARGV[0],
            "arguments": [PRINT_ARGV[1], *unicode],
        }
    )
    assert ok["stdout"].split("\x00")[:-1] == unicode
    # one argument over the kernel's limit (128 KiB): the launch fails, and says why
    [too_big] = serving.submit(
        {"uid": serving.uid("too-big"), "executable": "/bin/true", "arguments": ["x" * (1 << 20)]}
    )
    assert isinstance(too_big, TaskExecutionError)
    assert "cannot start '/bin/true': Argument list too long" in str(too_big)
    with pytest.raises(TaskValidationError, match="field 'executable'"):
        serving.submit({"uid": serving.uid("nul"), "executable": "/bin/true\x00; rm -rf /"})
    with pytest.raises(TaskValidationError, match="field 'arguments'"):
        serving.submit(
            {"uid": serving.uid("surrogate"), "executable": "/bin/true", "arguments": ["\ud800"]}
        )
    serving.still_serves()


# -- uids and dependencies across batches ---------------------------------------------------------


def test_uid_collisions_across_batches_reject_the_whole_batch(serving: Serving) -> None:
    taken, fresh = serving.uid("taken"), serving.uid("fresh")
    [first] = serving.submit({"uid": taken, "executable": "/bin/true"})
    assert first["state"] == DONE
    for batch in (
        [{"uid": fresh, "executable": "/bin/true"}, {"uid": taken, "executable": "/bin/true"}],
        [{"uid": fresh, "executable": "/bin/true"}, {"uid": fresh, "executable": "/bin/true"}],
    ):
        with pytest.raises(TaskValidationError, match=rf"task '({taken}|{fresh})', field 'uid'"):
            serving.submit(*batch)
        assert serving.backend.task_state(fresh) is None  # all or nothing
    serving.still_serves()


def test_dependency_cycles_and_forward_references_are_rejected(serving: Serving) -> None:
    a, b = serving.uid("a"), serving.uid("b")
    # A cycle across batches would need a dependency on a task not yet submitted: rejected.
    with pytest.raises(TaskValidationError, match=rf"task '{a}', field 'dependencies'.*'{b}'"):
        serving.submit({"uid": a, "executable": "/bin/true", "dependencies": [b]})
    with pytest.raises(TaskValidationError, match="dependency cycle"):
        serving.submit(
            {"uid": a, "executable": "/bin/true", "dependencies": [b]},
            {"uid": b, "executable": "/bin/true", "dependencies": [a]},
        )
    with pytest.raises(TaskValidationError, match="cannot depend on itself"):
        serving.submit({"uid": a, "executable": "/bin/true", "dependencies": [a]})
    # none of those left a trace: both uids are still free
    first, second = serving.submit(
        {"uid": a, "executable": "/bin/true"},
        {"uid": b, "executable": "/bin/true", "dependencies": [a]},
    )
    assert first["state"] == second["state"] == DONE
    serving.still_serves()


# -- hostile callbacks ---------------------------------------------------------------------------


def test_callbacks_that_raise_or_block_are_survived(
    serving: Serving, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []
    hostile = [True]  # the backend outlives this test, and so do its callbacks: disarm them

    def raises(task: dict[str, Any], state: str) -> None:
        if hostile[0]:
            raise RuntimeError("hostile callback")

    def blocks(task: dict[str, Any], state: str) -> None:
        if hostile[0]:
            time.sleep(0.005)  # briefly: it holds the event loop

    serving.backend.register_callback(raises)
    serving.backend.register_callback(blocks)
    serving.backend.register_callback(lambda task, state: seen.append(state))
    try:
        with caplog.at_level(logging.ERROR, logger="rhapsody"):
            results = serving.submit(*({"executable": "/bin/true"} for _ in range(20)))
        assert all(r["state"] == DONE for r in results)
        assert seen.count(DONE) == 20  # the callbacks after the raising one still ran
        assert "hostile callback" in caplog.text and "ignored" in caplog.text
        serving.still_serves()
    finally:
        hostile[0] = False
