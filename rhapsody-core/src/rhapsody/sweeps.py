"""Task templates to task dicts: matrix sweeps, `{name}` placeholders, dependency patterns.

    rhapsody.expand([
        {"uid": "sim.{x}", "executable": "./sim", "arguments": ["--x", "{x}"],
         "matrix": {"x": [1, 2, 3]}},
        {"uid": "aggregate", "function": aggregate, "dependencies": ["sim.*"]},
    ])

One job: what `rhapsody run` does to the `tasks` of a workflow file, offered to Python too, so a
file and a script say the same thing. See docs/cli.md ("Sweeps").
"""

from __future__ import annotations

import difflib
import fnmatch
import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rhapsody.errors import TaskValidationError

#: The task fields whose strings may hold `{name}` placeholders (nested lists and dict values
#: included). `dependencies` take them too, resolved with the patterns.
FILLED_FIELDS = (
    "uid",
    "executable",
    "arguments",
    "environment",
    "working_directory",
    "args",
    "kwargs",
    "prompt",
    "system_prompt",
    "messages",
)
# In these, a string that is one placeholder and nothing else takes the value itself (an
# integer stays an integer); elsewhere values are written into the string.
_RAW_FIELDS = frozenset(("args", "kwargs"))
#: The key under which each expanded task keeps its combination of matrix values.
PARAMETERS = "parameters"
#: Placeholders filled later, when the task starts (`{port}`: a service's free port): kept as
#: they are, and not usable as matrix keys.
LATE_PLACEHOLDERS = frozenset({"port"})
_MATRIX_KEYWORDS = ("include", "exclude")
_RANGE_KEYS = ("start", "stop", "step")

# `{{name}}` is a literal `{name}`, `${name}` (a shell variable) is left alone, `{name}` is a
# placeholder; braces around anything but a name (awk's `{print $1}`) are plain text.
_PLACEHOLDER = re.compile(
    r"(?P<escaped>\{\{[A-Za-z_][A-Za-z0-9_]*\}\})"
    r"|(?P<shell>\$\{[A-Za-z_][A-Za-z0-9_]*\})"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)\}"
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

Values = Mapping[str, Any]
Filler = Callable[[Values], Any]


def expand(
    tasks: Iterable[Mapping[str, Any]], values: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Expand task templates into task dicts, in order.

    A task with a `matrix` becomes one task per combination of its values, with `{name}`
    placeholders filled in the `FILLED_FIELDS` and the combination kept under `parameters`;
    `values` (e.g. `{"run_dir": ...}`) fill placeholders in every task. Dependencies may be
    patterns: `"sim.*"` (every task whose uid matches, fan-in) and `"sim.{x}"` (the task with
    this member's values, one-to-one); a pattern that matches no task is an error. A task
    without a matrix, placeholders or patterns is passed through as it is (the same object).
    Raises `TaskValidationError` naming the task, the field and the placeholder.
    """
    return expand_indexed(tasks, values)[0]


def expand_indexed(
    tasks: Iterable[Mapping[str, Any]], values: Mapping[str, Any] | None = None
) -> tuple[list[dict[str, Any]], list[int]]:
    """`expand`, with the index in `tasks` of each expanded task's template."""
    shared = dict(values or {})
    for name in shared:
        if not _NAME.match(name) or name in LATE_PLACEHOLDERS:
            raise TaskValidationError(f"value name {name!r} is not a usable placeholder name")
    expanded: list[dict[str, Any]] = []
    sources: list[int] = []
    # Per expanded task with dependencies to resolve: its index, its values, its template's
    # label and index.
    to_resolve: list[tuple[int, Values, str, int]] = []
    origin: dict[str, int] = {}  # uid -> index of its template in `tasks`
    clean: set[str] = set()  # strings with braces but no placeholder (awk programs), seen
    for entry, template in enumerate(tasks):
        if not isinstance(template, Mapping):
            kind = type(template).__name__
            raise TaskValidationError(f"task #{entry} must be a dict, got {kind}")
        name = _label(template, entry)
        matrix = template.get("matrix")
        if matrix is None:
            combos: list[dict[str, Any]] = [{}]
        else:
            combos = combinations(matrix, name)
            if not isinstance(template.get("uid"), str):
                raise TaskValidationError(
                    "a task with a matrix needs a uid with placeholders, e.g. 'sim.{x}'",
                    uid=name,
                    field="uid",
                )
            if PARAMETERS in template:
                raise TaskValidationError(
                    f"is set by the matrix: remove '{PARAMETERS}' or the matrix",
                    uid=name,
                    field=PARAMETERS,
                )
            clash = sorted(set(combos[0]) & set(shared))
            if clash:
                raise TaskValidationError(
                    f"matrix key {clash[0]!r} is reserved (it is given to every task)",
                    uid=name,
                    field="matrix",
                )
        dependencies = template.get("dependencies")
        patterned = _has_patterns(dependencies)
        if matrix is None and not patterned and _is_plain(template, clean):
            fillers = []  # the common case of a flat file: no closures to build
        else:
            names = set(shared).union(*combos[:1]) if combos else set(shared)
            fillers = _fillers(template, name, names)
        if matrix is None and not fillers and not patterned:
            expanded.append(template)  # type: ignore[arg-type]  # as given: nothing to do
            sources.append(entry)
            uid = template.get("uid")
            if isinstance(uid, str):
                _claim(origin, uid, entry)
            continue
        base = {key: value for key, value in template.items() if key != "matrix"}
        for combo in combos:
            member_values = {**shared, **combo} if combo else shared
            task = dict(base)
            for field, fill in fillers:
                task[field] = fill(member_values)
            if matrix is not None:
                task[PARAMETERS] = combo
            if patterned:
                to_resolve.append((len(expanded), member_values, name, entry))
            uid = task.get("uid")
            if isinstance(uid, str):
                _claim(origin, uid, entry)
            expanded.append(task)
            sources.append(entry)
    if to_resolve:
        _resolve_dependencies(expanded, to_resolve, origin)
    return expanded, sources


def combinations(matrix: Any, uid: str | None = None) -> list[dict[str, Any]]:
    """The combinations of a `matrix`: the product of its axes (the first key outermost),
    less those matching an `exclude` entry (entries may give only some keys), then each
    `include` entry not already there. Axes are lists of values or integer ranges (a Python
    `range`, or `{start, stop, step}` with `stop` excluded, as in Python)."""
    if not isinstance(matrix, Mapping):
        raise _bad(uid, "matrix", f"must be a table of axes, got {_kind(matrix)}")
    axes: dict[str, list[Any]] = {}
    for key, raw in matrix.items():
        if key in _MATRIX_KEYWORDS:
            continue
        if not isinstance(key, str) or not _NAME.match(key):
            raise _bad(uid, "matrix", f"axis {key!r} is not a placeholder name")
        if key in LATE_PLACEHOLDERS:
            raise _bad(uid, "matrix", f"axis {key!r} is reserved: {{{key}}} is filled at run time")
        axes[key] = _axis(raw, key, uid)
    exclude = _entries(matrix.get("exclude"), "exclude", uid)
    include = _entries(matrix.get("include"), "include", uid)
    if not axes and not include:
        raise _bad(uid, "matrix", "has no axes and no 'include' combinations")
    keys = list(axes)
    for number, entry in enumerate(exclude):
        unknown = [key for key in entry if key not in axes]
        if unknown:
            raise _bad(
                uid,
                "matrix",
                f"exclude #{number} names {unknown[0]!r}, which is not an axis"
                + _did_you_mean(unknown[0], keys),
            )
    combos: list[dict[str, Any]] = []
    matched = [False] * len(exclude)
    for values in itertools.product(*axes.values()) if axes else ():
        combo = dict(zip(keys, values, strict=True))
        dropped = False
        for number, entry in enumerate(exclude):
            if all(combo[key] == value for key, value in entry.items()):
                matched[number] = dropped = True
        if not dropped:
            combos.append(combo)
    for number, hit in enumerate(matched):
        if not hit:  # a typo in a value, most likely: say so rather than run it all
            raise _bad(uid, "matrix", f"exclude #{number} {exclude[number]!r} matches nothing")
    want = set(keys) if keys else (set(include[0]) if include else set())
    for number, entry in enumerate(include):
        if set(entry) != want:
            raise _bad(
                uid,
                "matrix",
                f"include #{number} must give exactly {', '.join(sorted(want))}, "
                f"got {', '.join(sorted(map(str, entry))) or 'nothing'}",
            )
        for key in entry:
            if not _NAME.match(key):
                raise _bad(uid, "matrix", f"include #{number}: {key!r} is not a placeholder name")
        if entry not in combos:
            combos.append(dict(entry))
    if not combos:
        raise _bad(uid, "matrix", "gives no combinations (exclude drops every one)")
    return combos


# -- placeholders ----------------------------------------------------------------------------
def _fillers(template: Mapping[str, Any], uid: str, names: set[str]) -> list[tuple[str, Filler]]:
    """(field, function of the values) for each field of `template` that has placeholders."""
    fillers = []
    for field in FILLED_FIELDS:
        value = template.get(field)
        if value is None:
            continue
        filler = _compile(value, field in _RAW_FIELDS, uid, field, names)
        if filler is not None:
            fillers.append((field, filler))
    return fillers


def _is_plain(template: Mapping[str, Any], clean: set[str]) -> bool:
    """No placeholder nor escape in any filled field (`clean`: such strings already seen)."""
    get = template.get
    for field in FILLED_FIELDS:  # hot for flat files: str and list of str inline
        value = get(field)
        if value is None:
            continue
        if type(value) is str:
            if "{" in value and not _plain(value, clean):
                return False
        elif type(value) is list:
            for item in value:
                if (type(item) is not str or "{" in item) and not _plain(item, clean):
                    return False
        elif not _plain(value, clean):
            return False
    return True


def _plain(value: Any, clean: set[str]) -> bool:
    if type(value) is str:
        if "{" not in value or value in clean:
            return True
        if _PLACEHOLDER.search(value) is None:
            clean.add(value)
            return True
        return False
    if isinstance(value, (list, tuple)):
        return all(_plain(item, clean) for item in value)
    if isinstance(value, Mapping):
        return all(_plain(item, clean) for item in value.values())
    return True


def _compile(value: Any, raw: bool, uid: str, field: str, names: set[str]) -> Filler | None:
    """A function filling the placeholders of `value`, or None if it has none. Parsed once per
    template, so that each member is a `str.format_map` per string."""
    if isinstance(value, str):
        return _compile_text(value, raw, uid, field, names)
    if isinstance(value, (list, tuple)):
        items = [_compile(item, raw, uid, field, names) for item in value]
        if all(item is None for item in items):
            return None
        parts = [(item, value[i]) for i, item in enumerate(items)]
        return lambda v: [const if fill is None else fill(v) for fill, const in parts]
    if isinstance(value, Mapping):
        entries = [(k, _compile(item, raw, uid, field, names), item) for k, item in value.items()]
        if all(fill is None for _, fill, _ in entries):
            return None
        return lambda v: {key: const if fill is None else fill(v) for key, fill, const in entries}
    return None


def _compile_text(text: str, raw: bool, uid: str, field: str, names: set[str]) -> Filler | None:
    if "{" not in text:
        return None
    pieces: list[str] = []  # a str.format template: literal braces doubled
    used: list[str] = []
    escaped = False
    end = 0
    for match in _PLACEHOLDER.finditer(text):
        pieces.append(_literal(text[end : match.start()]))
        end = match.end()
        name = match.group("name")
        if name is None or name in LATE_PLACEHOLDERS:  # `{{x}}` -> `{x}`; `${x}` as it is
            token = match.group()
            if match.group("escaped"):
                escaped = True
                token = token[1:-1]
            pieces.append(_literal(token))
            continue
        if name not in names:
            known = ", ".join(f"{{{n}}}" for n in sorted(names)) or "none"
            raise TaskValidationError(
                f"unknown placeholder {{{name}}} in {text!r} (known here: {known}; write "
                f"{{{{{name}}}}} for a literal {{{name}}})" + _did_you_mean(name, names, 0.6),
                uid=uid,
                field=field,
            )
        used.append(name)
        pieces.append(f"{{{name}}}")
    if not used and not escaped:
        return None
    pieces.append(_literal(text[end:]))
    if raw and len(used) == 1 and text == f"{{{used[0]}}}":
        key = used[0]
        return lambda v: v[key]
    template = "".join(pieces)
    if not used:
        plain = template.format()  # only escapes: the same text for every member
        return lambda v: plain
    return template.format_map


def _literal(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


# -- dependencies ----------------------------------------------------------------------------
def _has_patterns(dependencies: Any) -> bool:
    if not isinstance(dependencies, (list, tuple)):
        return False
    return any(
        isinstance(dep, str) and ("{" in dep or "*" in dep or "?" in dep) for dep in dependencies
    )


def _resolve_dependencies(
    tasks: list[dict[str, Any]],
    to_resolve: list[tuple[int, Values, str, int]],
    origin: dict[str, int],
) -> None:
    uids = list(origin)
    matches: dict[str, list[str]] = {}  # glob -> uids, each pattern searched once
    fillers: dict[tuple[int, str], Filler | None] = {}  # (template, entry) -> compiled once
    for index, values, name, entry in to_resolve:
        task = tasks[index]
        own = task.get("uid")
        label = own if isinstance(own, str) else name
        resolved: list[Any] = []
        for dep in task["dependencies"]:
            if not isinstance(dep, str):
                resolved.append(dep)  # a task dict, or an error the validation reports
                continue
            filled = dep
            if "{" in dep:
                key = (entry, dep)
                if key in fillers:
                    fill = fillers[key]
                else:
                    fill = fillers[key] = _compile_text(
                        dep, False, label, "dependencies", set(values)
                    )
                filled = dep if fill is None else fill(values)
            if "*" in filled or "?" in filled:
                found = matches.get(filled)
                if found is None:
                    match = re.compile(fnmatch.translate(filled)).match
                    found = matches[filled] = [uid for uid in uids if match(uid)]
                found = [uid for uid in found if uid != own]
                if not found:
                    raise TaskValidationError(
                        f"pattern {dep!r} matches no task", uid=label, field="dependencies"
                    )
                resolved.extend(found)
            elif filled != dep and filled not in origin:
                raise TaskValidationError(
                    f"{dep!r} gives {filled!r}, and no task has that uid"
                    + _did_you_mean(filled, uids),
                    uid=label,
                    field="dependencies",
                )
            else:
                resolved.append(filled)
        task["dependencies"] = resolved


def _claim(origin: dict[str, int], uid: str, entry: int) -> None:
    first = origin.get(uid)
    if first is not None:
        where = (
            f"two members of task #{entry} (a matrix key missing from the uid?)"
            if first == entry
            else f"task #{first} and task #{entry}"
        )
        raise TaskValidationError(f"uid is not unique: given by {where}", uid=uid, field="uid")
    origin[uid] = entry


# -- helpers ---------------------------------------------------------------------------------
def _axis(raw: Any, key: str, uid: str | None) -> list[Any]:
    if isinstance(raw, range):
        values = list(raw)
    elif isinstance(raw, Mapping):
        if any(isinstance(v, Mapping) for v in raw.values()) or not raw:
            raise _bad(uid, "matrix", f"axis {key!r} must be a list or a range table")
        unknown = [k for k in raw if k not in _RANGE_KEYS]
        if unknown or "stop" not in raw:
            bad = unknown[0] if unknown else "stop"
            raise _bad(
                uid,
                "matrix",
                f"axis {key!r}: a range is {{start, stop, step}} (stop required), "
                f"got {bad!r}" + _did_you_mean(str(bad), _RANGE_KEYS),
            )
        bounds = [raw.get("start", 0), raw["stop"], raw.get("step", 1)]
        if any(isinstance(b, bool) or not isinstance(b, int) for b in bounds) or bounds[2] == 0:
            raise _bad(
                uid, "matrix", f"axis {key!r}: start, stop and step must be integers, step not 0"
            )
        values = list(range(*bounds))
    elif isinstance(raw, (list, tuple)):
        values = list(raw)
        for value in values:
            if isinstance(value, Mapping):
                hint = _did_you_mean(key, _MATRIX_KEYWORDS)
                raise _bad(
                    uid,
                    "matrix",
                    f"axis {key!r} holds a table {value!r}: values are scalars" + hint,
                )
    else:
        raise _bad(uid, "matrix", f"axis {key!r} must be a list or a range, got {_kind(raw)}")
    if not values:
        raise _bad(uid, "matrix", f"axis {key!r} is empty: it would give no tasks")
    return values


def _entries(raw: Any, keyword: str, uid: str | None) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, (list, tuple)) or not all(isinstance(e, Mapping) for e in raw):
        raise _bad(uid, "matrix", f"'{keyword}' must be a list of tables, got {_kind(raw)}")
    return [dict(entry) for entry in raw]


def _label(template: Mapping[str, Any], entry: int) -> str:
    uid = template.get("uid")
    return uid if isinstance(uid, str) else f"#{entry}"


def _did_you_mean(word: str, candidates: Iterable[str], cutoff: float = 0.8) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _bad(uid: str | None, field: str, message: str) -> TaskValidationError:
    return TaskValidationError(message, uid=uid, field=field)


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:120]
