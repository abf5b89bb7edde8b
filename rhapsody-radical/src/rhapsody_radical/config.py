"""The pilot a backend asks for, from its arguments and a platform. No RADICAL-Pilot import."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rhapsody.platforms import PlatformDescription, get_platform
from rhapsody.resources import detect_cores

LOCAL_RESOURCE = "local.localhost"


def pilot_description(
    resource: str | None = None,
    *,
    platform: PlatformDescription | str | None = None,
    cores: int | None = None,
    gpus: int = 0,
    nodes: int | None = None,
    runtime: int = 60,
    queue: str | None = None,
    project: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The fields of the `rp.PilotDescription` (a plain dict).

    Explicit arguments win over the platform's values. Without a resource or a platform the
    pilot runs on this machine (`local.localhost`) with one core per CPU this process may use;
    elsewhere, without cores or nodes, it asks for one node.
    """
    if isinstance(platform, str):
        platform = get_platform(platform)
    if resource is None and platform is not None:
        resource = platform.radical_resource
        if resource is None:
            label = platform.name or "(unnamed)"
            raise ValueError(
                f"platform {label!r} has no RADICAL-Pilot resource label (radical_resource); "
                "pass resource='<site>.<resource>'"
            )
    resource = resource or LOCAL_RESOURCE
    for name, value, minimum in (
        ("cores", cores, 1),
        ("nodes", nodes, 1),
        ("gpus", gpus, 0),
        ("runtime", runtime, 1),
    ):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < minimum
        ):
            raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    if cores is None and nodes is None:
        if resource.startswith("local."):
            cores = detect_cores()
        else:
            nodes = 1
    fields: dict[str, Any] = {"resource": resource, "runtime": runtime, "gpus": gpus}
    if cores is not None:
        fields["cores"] = cores
    if nodes is not None:
        fields["nodes"] = nodes
    queue = queue if queue is not None else (platform.partition if platform else None)
    project = project if project is not None else (platform.account if platform else None)
    if queue:
        fields["queue"] = queue
    if project:
        fields["project"] = project
    fields.update(extra or {})
    # RADICAL-Pilot's default terminates the whole client process when a pilot fails.
    fields["exit_on_error"] = False
    return fields
