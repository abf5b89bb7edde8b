"""Function tasks for the RADICAL-Pilot tests, in a module the raptor workers import by name."""

from __future__ import annotations

import asyncio
import os
import sys
import time


class TaskError(Exception):
    """A user-defined exception: it must come back as itself."""


def double(x: int) -> int:
    return x * 2


def echo(*args: object, **kwargs: object) -> tuple[tuple[object, ...], dict[str, object]]:
    return args, kwargs


async def async_value(value: object) -> object:
    await asyncio.sleep(0.01)
    return value


def fail(message: str) -> None:
    raise TaskError(message)


def chatty() -> str:
    print("to stdout")
    print("to stderr", file=sys.stderr)
    return "said"


def where() -> tuple[str, str | None]:
    return os.getcwd(), os.environ.get("RHAPSODY_TEST_VAR")


def nap_noting_pid(path: str, seconds: float) -> int:
    """Write this process's pid to `path`, then sleep: a test can see the call stopped."""
    with open(path, "w") as file:
        file.write(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()
