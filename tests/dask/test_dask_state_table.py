"""The state table of docs/backends/dask.md says what the dask plugin registers: every native
state, each mapped to the lifecycle state the backend reports for it."""

from __future__ import annotations

import re
from pathlib import Path

from rhapsody_dask.states import TASK_STATES

PAGE = Path(__file__).resolve().parents[2] / "docs" / "backends" / "dask.md"


def test_the_pages_state_table_is_the_plugins() -> None:
    text = PAGE.read_text()
    table = text[text.index("| dask state | lifecycle |") :].split("\n\n", 1)[0]
    documented: dict[str, str] = {}
    for row in table.splitlines()[2:]:
        states, lifecycle = row.strip("|").split("|")
        [main] = re.findall(r"`([A-Z_]+)`", lifecycle)
        for native in re.findall(r"`([a-z-]+)`", states):
            documented[native] = main
    assert documented == dict(TASK_STATES)
