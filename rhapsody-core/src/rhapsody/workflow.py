"""Workflow files: a list of task dicts in TOML, JSON or YAML, for `rhapsody run`.

    [workflow]              # optional
    backend = "concurrent"

    [[tasks]]
    uid = "hello"
    executable = "/bin/echo"
    arguments = ["hi"]

Tasks use the fields of the Python task dict. A `function` is given as "module:attribute"
(the workflow file's directory is importable).
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import attrs

from rhapsody.errors import TaskValidationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class WorkflowError(TaskValidationError):
    """A workflow file cannot be used; names the file, and the line, task and field if known."""


@attrs.frozen
class Workflow:
    path: Path
    tasks: list[dict[str, Any]]
    backend: str | None = None
    backend_options: dict[str, Any] = attrs.Factory(dict)

    def line_of(self, uid: str | None) -> int | None:
        """The line where task `uid` is declared, found by its uid in the file."""
        if uid is None:
            return None
        needle = json.dumps(uid)
        for number, line in enumerate(self.path.read_text().splitlines(), start=1):
            if needle in line or f"'{uid}'" in line:
                return number
        return None


def load(path: str | Path) -> Workflow:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise WorkflowError(f"{path}: cannot read: {exc.strerror}") from exc
    data = _parse(path, text)
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
        raise WorkflowError(f"{path}: expected a top-level 'tasks' list")
    settings = data.get("workflow") or {}
    if not isinstance(settings, dict):
        raise WorkflowError(f"{path}: 'workflow' must be a table/mapping")
    workflow = Workflow(
        path, [], settings.get("backend"), dict(settings.get("backend_options") or {})
    )
    for index, task in enumerate(data["tasks"]):
        if not isinstance(task, dict):
            raise WorkflowError(f"{path}: task #{index} must be a table/mapping")
        function = task.get("function")
        if isinstance(function, str):
            task["function"] = _resolve(path, function, task)
        workflow.tasks.append(task)
    return workflow


def describe(workflow: Workflow, error: TaskValidationError) -> str:
    """Prefix a validation error with the file and the task's line."""
    line = workflow.line_of(error.uid)
    where = f"{workflow.path}:{line}" if line else str(workflow.path)
    return f"{where}: {error}"


def _parse(path: Path, text: str) -> Any:
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            return tomllib.loads(text)
        if suffix == ".json":
            return json.loads(text)
        if suffix in (".yaml", ".yml"):
            try:
                import yaml  # type: ignore[import-untyped]
            except ImportError:
                raise WorkflowError(
                    f"{path}: YAML workflows need PyYAML (pip install pyyaml)"
                ) from None
            return yaml.safe_load(text)
    except WorkflowError:
        raise
    except json.JSONDecodeError as exc:
        raise WorkflowError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
    except Exception as exc:  # tomllib / yaml errors carry the line in their message
        raise WorkflowError(f"{path}: invalid {suffix[1:].upper()}: {exc}") from exc
    raise WorkflowError(f"{path}: unknown workflow format {suffix!r} (use .toml, .json or .yaml)")


def _resolve(path: Path, spec: str, task: dict[str, Any]) -> Any:
    module_name, _, attr = spec.partition(":")
    uid = task.get("uid")
    if not module_name or not attr:
        raise WorkflowError(
            f"{path}: function must look like 'module:attribute', got {spec!r}",
            uid=uid,
            field="function",
        )
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise WorkflowError(
            f"{path}: cannot import {spec!r}: {exc}", uid=uid, field="function"
        ) from exc
