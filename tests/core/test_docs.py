"""Every hook is documented with its signature (in the style of datasette's test_docs)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from rhapsody import hookspecs

DOCS = Path(__file__).resolve().parents[2] / "docs"
HOOKS = [
    name
    for name, obj in vars(hookspecs).items()
    if name.startswith("rhapsody_") and inspect.isfunction(obj)
]


def test_there_are_hooks() -> None:
    assert len(HOOKS) == 3


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_with_its_signature(hook: str) -> None:
    params = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert f"## {hook}({params})" in (DOCS / "hooks.md").read_text()


@pytest.mark.parametrize(
    ("page", "keys"),
    [
        ("services.md", "rhapsody.services.spec:KEYS"),
        ("inference.md", "rhapsody.inference.request:FIELDS"),
    ],
)
def test_every_service_key_and_ai_task_field_is_documented(page: str, keys: str) -> None:
    import importlib

    module, name = keys.split(":")
    text = (DOCS / page).read_text()
    missing = [key for key in getattr(importlib.import_module(module), name)
               if f"`{key}`" not in text]
    assert not missing, f"docs/{page} does not document {missing}"
