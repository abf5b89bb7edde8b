"""Workflow files: a list of task dicts in TOML, JSON or YAML, for `rhapsody run`.

    [workflow]              # optional
    backend = "concurrent"
    run_dir = "out"         # default: a new directory per run, runs/<name>-<time>

    [[tasks]]
    uid = "hello.{who}"
    executable = "/bin/echo"
    arguments = ["hi", "{who}"]
    matrix = {who = ["alice", "bob"]}

Tasks use the fields of the Python task dict, plus `matrix` (see `rhapsody.sweeps`). A
`function` is given as "module:attribute" (the workflow file's directory is importable).
Unknown keys are kept; one that looks like a misspelt field gets a "did you mean" hint.
"""

from __future__ import annotations

import difflib
import importlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import attrs

from rhapsody.errors import TaskValidationError
from rhapsody.sweeps import PARAMETERS, expand_indexed
from rhapsody.task import DESCRIPTION_FIELDS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: The task keys RHAPSODY knows of, for "did you mean" hints (other keys are kept, unread).
KNOWN_TASK_KEYS = frozenset(
    (
        *DESCRIPTION_FIELDS,
        "uid",
        "secret_environment",
        "matrix",
        PARAMETERS,
        "is_service",
        # results, present when a task dict is written back out
        "state",
        "stdout",
        "stderr",
        "exit_code",
        "return_value",
        "exception",
        "stdout_file",
        "stderr_file",
        "response",
        "usage",
        "served_by",
        "latency",
        "restarts",
        "backend",
    )
)
WORKFLOW_KEYS = ("backend", "backend_options", "inference_options", "run_dir")
TOP_LEVEL_KEYS = ("tasks", "workflow")
#: Where `rhapsody run` makes a new run directory by default, beside the workflow file.
RUNS_FOLDER = "runs"


class WorkflowError(TaskValidationError):
    """A workflow file cannot be used; names the file, and the line, task and field if known."""


@attrs.define
class Workflow:
    """A workflow file read by `read`: its task entries as written, and its settings.
    `expand` turns the entries into `tasks`."""

    path: Path
    entries: list[dict[str, Any]]
    backend: str | None = None
    backend_options: dict[str, Any] = attrs.Factory(dict)
    #: `[workflow] run_dir`, relative to the file's directory; None: a new one per run
    run_dir: Path | None = None
    #: "did you mean" hints for keys that look misspelt, each prefixed by file and line
    hints: list[str] = attrs.Factory(list)
    tasks: list[dict[str, Any]] = attrs.Factory(list)
    _sources: list[int] = attrs.Factory(list)
    #: `[workflow] inference_options`: keyword arguments of the `inference` backend of AI tasks
    inference_options: dict[str, Any] = attrs.Factory(dict)

    def expand(self, run_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
        """Expand the entries (sweeps, placeholders, dependency patterns) into `tasks`;
        `{run_dir}` is `run_dir` made absolute. Raises `WorkflowError` (file and line)."""
        values = {} if run_dir is None else {"run_dir": os.path.abspath(run_dir)}
        try:
            self.tasks, self._sources = expand_indexed(self.entries, values)
        except TaskValidationError as exc:
            error = WorkflowError(describe(self, exc))
            error.uid, error.field = exc.uid, exc.field  # the message names them already
            raise error from None
        return self.tasks

    def line_of(self, uid: str | None) -> int | None:
        """The line where task `uid` (or the template it was expanded from) is declared."""
        if uid is None:
            return None
        lines = self.path.read_text().splitlines()
        found = _find(lines, uid)
        if found is None and self._sources:
            for task, source in zip(self.tasks, self._sources, strict=True):
                if task.get("uid") == uid:
                    template = self.entries[source].get("uid")
                    return _find(lines, template) if isinstance(template, str) else None
        return found


def load(path: str | os.PathLike[str], run_dir: str | os.PathLike[str] | None = None) -> Workflow:
    """`read` the file and `expand` its tasks."""
    workflow = read(path)
    workflow.expand(run_dir)
    return workflow


def read(path: str | os.PathLike[str]) -> Workflow:
    """Parse a workflow file and check its shape; functions are imported."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise WorkflowError(f"{path}: cannot read: {exc.strerror}") from exc
    data = _parse(path, text)
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
        keys = [k for k in data if isinstance(k, str)] if isinstance(data, dict) else []
        close = difflib.get_close_matches("tasks", keys)
        hint = f" (found {close[0]!r}: did you mean 'tasks'?)" if close else ""
        raise WorkflowError(f"{path}: expected a top-level 'tasks' list{hint}")
    settings = data.get("workflow") or {}
    if not isinstance(settings, dict):
        raise WorkflowError(f"{path}: 'workflow' must be a table/mapping")
    run_dir = settings.get("run_dir")
    if run_dir is not None:
        if not isinstance(run_dir, str) or not run_dir:
            raise WorkflowError(f"{path}: [workflow] run_dir must be a non-empty path string")
        run_dir = path.resolve().parent / run_dir
    workflow = Workflow(
        path, [], settings.get("backend"), dict(settings.get("backend_options") or {}), run_dir
    )
    inference_options = settings.get("inference_options") or {}
    if not isinstance(inference_options, dict):
        raise WorkflowError(f"{path}: [workflow] inference_options must be a table/mapping")
    workflow.inference_options = dict(inference_options)
    lines = text.splitlines()
    workflow.hints += _hints(path, lines, data, TOP_LEVEL_KEYS, "")
    workflow.hints += _hints(path, lines, settings, WORKFLOW_KEYS, "[workflow]: ")
    for index, task in enumerate(data["tasks"]):
        if not isinstance(task, dict):
            raise WorkflowError(f"{path}: task #{index} must be a table/mapping")
        uid = task.get("uid")
        label = f"task {uid!r}" if isinstance(uid, str) else f"task #{index}"
        workflow.hints += _hints(path, lines, task, KNOWN_TASK_KEYS, f"{label}: ", uid)
        function = task.get("function")
        if isinstance(function, str):
            task["function"] = _resolve(path, function, task)
        workflow.entries.append(task)
    return workflow


def new_run_dir(workflow: Workflow) -> Path:
    """Create a new run directory, `runs/<file stem>-<local time>` beside the workflow file
    (`-2`, `-3`, ... when taken: made with an exclusive mkdir, so two runs never share one)."""
    parent = workflow.path.resolve().parent / RUNS_FOLDER
    parent.mkdir(parents=True, exist_ok=True)
    stem = f"{workflow.path.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    for number in range(1, 10_000):
        candidate = parent / (stem if number == 1 else f"{stem}-{number}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise WorkflowError(f"{parent}: no free run directory name for {stem!r}")


def describe(workflow: Workflow, error: TaskValidationError) -> str:
    """Prefix a validation error with the file and the task's line."""
    if isinstance(error, WorkflowError):
        return str(error)  # prefixed already
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


def _find(lines: list[str], uid: str) -> int | None:
    needle = json.dumps(uid)
    for number, line in enumerate(lines, start=1):
        if needle in line or f"'{uid}'" in line:
            return number
    return None


def _hints(
    path: Path,
    lines: list[str],
    table: dict[str, Any],
    known: frozenset[str] | tuple[str, ...],
    label: str,
    uid: Any = None,
) -> list[str]:
    """A "did you mean" line for each key of `table` that is unknown but close to a known one."""
    hints = []
    for key in table:
        if not isinstance(key, str) or key in known:
            continue
        close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.8)
        if close:
            start = (_find(lines, uid) or 1) if isinstance(uid, str) else 1
            line = _key_line(lines, key, start)
            where = f"{path}:{line}" if line else str(path)
            hints.append(f"{where}: {label}unknown key {key!r}: did you mean {close[0]!r}?")
    return hints


def _key_line(lines: list[str], key: str, start: int) -> int | None:
    """The first line from `start` where `key` is written as a key (TOML, JSON or YAML)."""
    pattern = re.compile(rf"""(^|[\s{{,])["']?{re.escape(key)}["']?\s*[=:]""")
    for number in range(start, len(lines) + 1):
        if pattern.search(lines[number - 1]):
            return number
    return None
