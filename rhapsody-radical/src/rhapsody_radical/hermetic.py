"""Run RADICAL-Pilot self-contained on one machine: for tests, benchmarks and air-gapped laptops.

RADICAL-Pilot keeps state under `$HOME` (sandboxes, id counters, launcher scripts) and its
profilers ask an internet NTP server for the time. `hermetic_env(home)` returns the environment
that keeps all of that inside `home`; `hermetic(home)` applies it to `os.environ` for a `with`
block. (The backend itself keeps a local pilot's endpoints on loopback: `loopback`.)

The backend never does this on its own: real users keep their `$HOME` and their site's network
setup. Call it explicitly (tests and `benchmarks/bench_radical.py` do) before creating the backend,
because the pilot agent inherits the client's environment when it is launched.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# A time-stamp far in the future marks the NTP cache as fresh forever: no profiler ever looks up
# a time server (setting RADICAL_UTILS_NTPHOST to a dead host instead costs 1 s per process).
_NTP_CACHE = "9999999999.0\n9999999999.0\n"
# Where RADICAL-Utils reads that cache: the client's base, and the agent's, which is the pilot
# sandbox root on `local.localhost`.
_NTP_CACHE_DIRS = (".radical/utils", "radical.pilot.sandbox/.radical/utils")


def hermetic_env(home: str | os.PathLike[str], venv: str | None = None) -> dict[str, str]:
    """Prepare `home` and return the variables that confine RADICAL-Pilot to it.

    :param home: an empty (or earlier prepared) directory that stands in for `$HOME`.
    :param venv: the virtual environment the pilot agent must use; default the running one
        (without it the agent falls back to the system Python and cannot start).
    """
    root = Path(home).resolve()
    for sub in _NTP_CACHE_DIRS:
        cache_dir = root / sub
        cache_dir.mkdir(parents=True, exist_ok=True)
        (cache_dir / "ntp.cache").write_text(_NTP_CACHE)
    tmp = root / "tmp"
    tmp.mkdir(exist_ok=True)
    prefix = venv or sys.prefix
    path = [str(Path(prefix) / "bin"), *filter(None, [os.environ.get("PATH")])]
    return {
        "HOME": str(root),
        "VIRTUAL_ENV": prefix,
        "PATH": os.pathsep.join(path),
        "RADICAL_PILOT_BASE": str(root),  # the client's session directories
        "TMPDIR": str(tmp),  # launcher leftovers (psij node lists are never deleted)
        "RADICAL_PROFILE": "FALSE",
        "RADICAL_REPORT": "FALSE",
    }


@contextmanager
def hermetic(home: str | os.PathLike[str], venv: str | None = None) -> Iterator[dict[str, str]]:
    """Apply `hermetic_env(home, venv)` to `os.environ` inside the block, then restore it."""
    env = hermetic_env(home, venv)
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
