"""Let RADICAL-Pilot read a resource configuration the backend wrote, without touching `$HOME`.

RADICAL-Pilot reads resource configurations when a session is created: its own, and the user's
in `$RADICAL_CONFIG_USER_DIR/.radical/pilot/configs/resource_<site>.json` (default `$HOME`).
`installed()` points that variable at a temporary copy of the user's configurations plus the
written one for the duration of the block, then removes the copy: the session keeps what it
read. No RADICAL-Pilot import.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

VARIABLE = "RADICAL_CONFIG_USER_DIR"
_CONFIGS = Path(".radical", "pilot", "configs")


@contextmanager
def installed(label: str, config: Mapping[str, Any]) -> Iterator[Path]:
    """Inside the block, RADICAL-Pilot finds `config` as the resource `label`
    (`<site>.<resource>`), beside every configuration of the user's own; yields the file."""
    site, _, resource = label.partition(".")
    if not site or not resource:
        raise ValueError(f"a resource label is '<site>.<resource>', got {label!r}")
    saved = os.environ.get(VARIABLE)
    user = Path(saved or os.environ.get("HOME") or Path.home()) / _CONFIGS
    root = Path(tempfile.mkdtemp(prefix="rhapsody-rp-config-"))
    try:
        target = root / _CONFIGS
        if user.is_dir():
            shutil.copytree(user, target)
        target.mkdir(parents=True, exist_ok=True)
        path = target / f"resource_{site}.json"
        # the user's own resources of that site stay
        try:
            resources = json.loads(path.read_text()) if path.exists() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"{user / path.name}: not plain JSON ({exc})") from None
        resources[resource] = dict(config)
        path.write_text(json.dumps(resources, indent=2))
        os.environ[VARIABLE] = str(root)
        yield path
    finally:
        if saved is None:
            os.environ.pop(VARIABLE, None)
        else:
            os.environ[VARIABLE] = saved
        shutil.rmtree(root, ignore_errors=True)
