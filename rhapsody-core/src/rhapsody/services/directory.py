"""`ServiceDirectory`: where each ready service answers, and the token it wants.

A `Session` keeps one, filled as its service tasks become ready (again after a restart), and
hands it to the inference backend it creates, which reads each AI task's replicas from it.
Unlike the registry it lives in this process and holds the services' API keys, which never go
on the wire.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs


@attrs.frozen
class ServiceEndpoint:
    url: str  # e.g. http://127.0.0.1:41233
    token: str | None = attrs.field(default=None, repr=False)  # bearer token, never shown


class ServiceDirectory:
    """uid -> `ServiceEndpoint` of the services that are ready now."""

    def __init__(self) -> None:
        self._entries: dict[str, ServiceEndpoint] = {}

    def get(self, uid: str) -> ServiceEndpoint | None:
        return self._entries.get(uid)

    def set(self, uid: str, url: str, token: str | None = None) -> None:
        if "//" not in url:
            url = f"http://{url}"
        self._entries[uid] = ServiceEndpoint(url, token)

    def urls(self) -> dict[str, str]:
        return {uid: entry.url for uid, entry in self._entries.items()}

    def remove(self, uid: str) -> None:
        self._entries.pop(uid, None)

    def on_ready(self, task: Mapping[str, Any], endpoint: str | None) -> None:
        """A backend's service callback: record `task`'s endpoint and its probe's token."""
        if endpoint is None:
            return
        token = None
        service = task.get("service")
        if isinstance(service, Mapping) and isinstance(service.get("auth"), str):
            token = (task.get("secret_environment") or {}).get(service["auth"])
        self.set(task["uid"], endpoint, token)
