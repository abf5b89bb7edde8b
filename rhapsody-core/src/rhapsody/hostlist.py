"""Slurm-style hostlists: `nid[001-003,010],gpu[1-2]` <-> the host names they stand for.

The same syntax is used by Slurm (`SLURM_JOB_NODELIST`), Flux (`flux getattr hostlist`) and
`scontrol show hostnames`. A range keeps the width of its lower bound, so `nid[008-010]` is
nid008, nid009, nid010 while `n[8-10]` is n8, n9, n10. An item may carry several bracket groups
(`r[1-2]n[1-2]` is r1n1, r1n2, r2n1, r2n2: the leftmost group varies slowest).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable

from rhapsody.errors import RhapsodyError

_BRACKET_GROUP = re.compile(r"\[([^\[\]]*)\]")
_LAST_NUMBER = re.compile(r"^(.*?)([0-9]+)([^0-9]*)$")
# ASCII only: str.isdigit() also accepts digits such as "²" that int() rejects.
_DIGITS = re.compile(r"[0-9]+")
_FORBIDDEN_IN_NAME = re.compile(r"[\[\],\s]")


class HostlistError(RhapsodyError, ValueError):
    """A hostlist (or a host name given to `compress`) that cannot be read."""


def _malformed(hostlist: str, reason: str) -> HostlistError:
    return HostlistError(f"malformed hostlist {hostlist!r}: {reason}")


def expand(hostlist: str) -> list[str]:
    """Every host name in `hostlist`, in the order written (duplicates kept, as Slurm does)."""
    if not hostlist.strip():
        return []
    hosts: list[str] = []
    for item in _split_items(hostlist):
        hosts.extend(_expand_item(item, hostlist))
    return hosts


def _split_items(hostlist: str) -> list[str]:
    # Commas separate hosts only outside brackets: `n[1,3],m2` is two items, not three.
    items: list[str] = []
    current: list[str] = []
    depth = 0
    for char in hostlist.strip():
        if char == "[":
            if depth:
                raise _malformed(hostlist, "nested '['")
            depth = 1
        elif char == "]":
            if not depth:
                raise _malformed(hostlist, "unmatched ']'")
            depth = 0
        elif char == "," and not depth:
            items.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    if depth:
        raise _malformed(hostlist, "unclosed bracket")
    items.append("".join(current).strip())
    if "" in items:
        raise _malformed(hostlist, "empty host name")
    return items


def _expand_item(item: str, hostlist: str) -> list[str]:
    if re.search(r"\s", item):
        raise _malformed(hostlist, f"whitespace in host name {item!r}")
    # Alternate literal text and bracket groups, then take their cartesian product.
    parts: list[list[str]] = []
    position = 0
    for match in _BRACKET_GROUP.finditer(item):
        parts.append([item[position : match.start()]])
        parts.append(_expand_ranges(match.group(1), hostlist))
        position = match.end()
    parts.append([item[position:]])
    return ["".join(combination) for combination in itertools.product(*parts)]


def _expand_ranges(body: str, hostlist: str) -> list[str]:
    if not body.strip():
        raise _malformed(hostlist, "empty brackets")
    numbers: list[str] = []
    for piece in body.split(","):
        piece = piece.strip()
        low, dash, high = piece.partition("-")
        if not _DIGITS.fullmatch(low) or (dash and not _DIGITS.fullmatch(high)):
            raise _malformed(hostlist, f"{piece!r} is not a number or a range like 001-004")
        if not dash:
            numbers.append(low)
            continue
        if int(high) < int(low):
            raise _malformed(hostlist, f"range {piece!r} runs backwards")
        numbers.extend(str(value).zfill(len(low)) for value in range(int(low), int(high) + 1))
    return numbers


def _split_name(host: str) -> tuple[str, str, str]:
    """(text before the last number, the number's digits, text after); digits "" if none."""
    match = _LAST_NUMBER.match(host)
    if match is None:
        return (host, "", "")
    prefix, digits, suffix = match.groups()
    return (prefix, digits, suffix)


def natural_key(host: str) -> tuple[str, str, int, int]:
    """Sort key that orders hosts the way `compress` lists them: by the text around the last
    number, then by that number's value (so n2 comes before n10), then by its width."""
    prefix, digits, suffix = _split_name(host)
    if not digits:
        return (host, "", -1, 0)
    return (prefix, suffix, int(digits), len(digits))


def compress(hosts: Iterable[str]) -> str:
    """The short form of a hostlist naming each distinct host once, ordered by `natural_key`.

    Only the last number in a name is folded into brackets; `expand(compress(h))` gives back
    `sorted(set(h), key=natural_key)`.
    """
    unique = sorted(set(hosts), key=natural_key)
    for host in unique:
        if not host or _FORBIDDEN_IN_NAME.search(host):
            raise HostlistError(
                f"cannot compress host name {host!r}: it is empty or contains a bracket, "
                "comma or whitespace"
            )
    items: list[str] = []
    for (prefix, suffix, numbered), group in itertools.groupby(unique, key=_group_key):
        names = list(group)
        if not numbered or len(names) == 1:
            items.extend(names)
            continue
        ranges = _fold([_split_name(name)[1] for name in names])
        items.append(f"{prefix}[{','.join(ranges)}]{suffix}")
    return ",".join(items)


def _group_key(host: str) -> tuple[str, str, bool]:
    prefix, digits, suffix = _split_name(host)
    return (prefix, suffix, bool(digits))


def _fold(digits: list[str]) -> list[str]:
    """Fold ascending number strings into ranges that expand back to exactly those strings."""
    ranges: list[str] = []
    start = previous = digits[0]
    for current in digits[1:]:
        width = len(start)
        # `current` continues the range only if the range's padding reproduces it verbatim.
        if int(current) == int(previous) + 1 and current == str(int(current)).zfill(width):
            previous = current
            continue
        ranges.append(start if start == previous else f"{start}-{previous}")
        start = previous = current
    ranges.append(start if start == previous else f"{start}-{previous}")
    return ranges
