"""The hook reference's example of dask's state table says what the dask plugin registers."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from rhapsody_dask.states import TASK_STATES

HOOKS = Path(__file__).resolve().parents[2] / "docs" / "hooks.md"


def test_the_documented_dask_states_are_the_plugins() -> None:
    found = re.search(r'registry\.add\("dask", (\{[^}]*\})\)', HOOKS.read_text())
    assert found, "docs/hooks.md no longer shows dask's state table"
    documented = ast.literal_eval(found[1])
    assert documented == {name: TASK_STATES[name] for name in documented}
    # The entry the page explains: assigned to a worker is not running there yet.
    assert documented.get("processing") == "EXECUTING_PENDING", documented
    assert {"executing", "memory", "erred"} <= documented.keys(), documented
