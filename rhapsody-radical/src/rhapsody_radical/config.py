"""The pilot a backend asks for, from its arguments and a platform. No RADICAL-Pilot import."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from rhapsody.platforms import (
    LaunchMethod,
    PlatformDescription,
    ResourceManager,
    detect,
    get_platform,
)
from rhapsody.resources import detect_cores
from rhapsody_radical import slurm

LOCAL_RESOURCE = "local.localhost"
#: `platform="auto"`: the allocation this process runs in (this machine outside of one)
AUTO = "auto"


@dataclasses.dataclass(frozen=True)
class Pilot:
    """What a backend submits: the `rp.PilotDescription` fields and, where the backend writes
    the resource configuration itself, that configuration (for the label in `fields`)."""

    fields: dict[str, Any]
    resource_config: dict[str, Any] | None = None


def pilot(
    resource: str | None = None,
    *,
    platform: PlatformDescription | str | None = None,
    cores: int | None = None,
    gpus: int = 0,
    nodes: int | None = None,
    runtime: int = 60,
    queue: str | None = None,
    project: str | None = None,
    launch_method: LaunchMethod | str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Pilot:
    """The pilot of a backend.

    Explicit arguments win over the platform's values. Without a resource or a platform the
    pilot runs on this machine (`local.localhost`) with one core per CPU this process may use;
    elsewhere, without cores or nodes, it asks for one node. A SLURM platform without a
    RADICAL-Pilot label gets a configuration written from its description (`slurm.submitted`,
    with `launch_method` overriding the platform's); `platform="auto"` is the allocation this
    process runs in (`slurm.in_allocation`, all its nodes), or this machine outside of one.
    """
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
    resource_config = None
    if platform == AUTO:
        platform = None
        allocation = detect()
        if resource is None and allocation.resource_manager is not ResourceManager.LOCAL:
            resource_config = slurm.in_allocation(allocation, launch_method=launch_method)
            resource = f"{slurm.SITE}.{slurm.ALLOCATION}"
            if cores is None and nodes is None:
                nodes = len(allocation.nodes)
    elif isinstance(platform, str):
        platform = get_platform(platform)
    if resource is None and platform is not None:
        resource = platform.radical_resource
        if resource is None:
            label = platform.name or "(unnamed)"
            if platform.resource_manager is not ResourceManager.SLURM:
                raise ValueError(
                    f"platform {label!r} has no RADICAL-Pilot resource label (radical_resource)"
                    " and a configuration is written for SLURM platforms only; pass "
                    "resource='<site>.<resource>'"
                )
            resource_config = slurm.submitted(platform, launch_method=launch_method)
            resource = slurm.label(platform)
    if launch_method is not None and resource_config is None:
        raise ValueError(
            f"launch_method applies to a configuration the backend writes (a SLURM platform "
            f"without radical_resource, or platform='auto' in a SLURM job), not to "
            f"{resource or LOCAL_RESOURCE!r}, whose configuration names its own"
        )
    resource = resource or LOCAL_RESOURCE
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
    return Pilot(fields, resource_config)


def pilot_description(resource: str | None = None, **options: Any) -> dict[str, Any]:
    """The fields of the `rp.PilotDescription` of `pilot(resource, **options)` (a plain dict)."""
    return pilot(resource, **options).fields
