"""Ship rhapsody_radical_loopback.pth at the root of every wheel, editable ones included (see
rhapsody_radical.loopback): a .pth file runs only from site-packages itself."""

from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PTH = "rhapsody_radical_loopback.pth"


class LoopbackPthHook(BuildHookInterface):  # type: ignore[misc]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        key = "force_include_editable" if version == "editable" else "force_include"
        build_data[key][f"src/{PTH}"] = PTH
