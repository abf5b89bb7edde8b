"""`ServiceSpec`: the validated meaning of a task's `service` field.

Spelling (one probe at most; no probe means "ready once started"):

    service=True                       # the defaults (AsyncFlow's `is_service: True` too)
    service={"http": "/v1/models"}     # ready when a GET of that path answers 2xx
    service={"tcp": True}              # ready when the port accepts a connection
    service={"log": "listening on"}    # ready when a line of stdout/stderr matches the regex
    service={"publish": True}          # ready when it publishes itself in the session registry
    # plus: "timeout" (start-up seconds), "restarts", "lifetime" ("session" | "dependents"),
    #       "port" (a fixed port instead of a free one), "auth" (the name of a variable of
    #       the task's `secret_environment` holding a bearer token the http probe sends)
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Any

import attrs

from rhapsody.errors import TaskValidationError

PROBES = ("http", "tcp", "log", "publish")
LIFETIMES = ("session", "dependents")
KEYS = (*PROBES, "timeout", "restarts", "lifetime", "port", "auth")
#: seconds a service may take to become ready unless its `timeout` says otherwise
DEFAULT_TIMEOUT = 120.0
#: prefix of the environment variable that gives a dependent each service's endpoint
ENV_PREFIX = "RHAPSODY_SERVICE_"
#: the placeholder replaced by the service's port in its arguments and environment values
PORT_PLACEHOLDER = "{port}"
#: ... and by the address it should listen on (the backend's `service_host`)
HOST_PLACEHOLDER = "{host}"


@attrs.frozen
class ServiceSpec:
    """How a service task is started, judged ready, kept alive and stopped."""

    probe: str | None = None  # one of PROBES, or None: ready once started
    path: str = "/"  # the http probe's path
    pattern: re.Pattern[str] | None = None  # the log probe's regex
    timeout: float = DEFAULT_TIMEOUT
    restarts: int = 0
    lifetime: str = "session"
    port: int | None = None  # fixed port; None: a free one where the service runs
    auth: str | None = None  # secret_environment variable with the http probe's bearer token

    @property
    def needs_port(self) -> bool:
        return self.probe in ("http", "tcp")


DEFAULT = ServiceSpec()


def parse_service(raw: Any, uid: str) -> ServiceSpec | None:
    """The `ServiceSpec` of a task's `service` value (None/False: not a service)."""
    if raw is None or raw is False:
        return None
    if raw is True:
        return DEFAULT
    if not isinstance(raw, dict):
        raise _bad(uid, f"must be True or a dict (e.g. {{'http': '/health'}}), got {raw!r}")
    for key in raw:
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _bad(uid, f"unknown key {key!r}{hint}; known: {', '.join(KEYS)}")
    probes = [p for p in PROBES if raw.get(p) not in (None, False)]
    if len(probes) > 1:
        raise _bad(uid, f"give one readiness probe, got {' and '.join(probes)}")
    fields: dict[str, Any] = {}
    if probes:
        probe = fields["probe"] = probes[0]
        value = raw[probe]
        if probe == "http":
            if not isinstance(value, str) or not value.startswith("/"):
                raise _bad(uid, f"'http' must be a path starting with '/', got {value!r}")
            fields["path"] = value
        elif probe == "log":
            if not isinstance(value, str) or not value:
                raise _bad(uid, f"'log' must be a regular expression string, got {value!r}")
            try:
                fields["pattern"] = re.compile(value)
            except re.error as exc:
                raise _bad(uid, f"'log' is not a valid regular expression: {exc}") from None
        elif value is not True:
            raise _bad(uid, f"{probe!r} must be True, got {value!r}")
    if "timeout" in raw:
        timeout = raw["timeout"]
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not timeout > 0
            or math.isinf(timeout)
        ):
            raise _bad(uid, f"'timeout' must be a positive number of seconds, got {timeout!r}")
        fields["timeout"] = float(timeout)
    if "restarts" in raw:
        restarts = raw["restarts"]
        if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 0:
            raise _bad(uid, f"'restarts' must be a whole number >= 0, got {restarts!r}")
        fields["restarts"] = restarts
    if "lifetime" in raw:
        lifetime = raw["lifetime"]
        if lifetime not in LIFETIMES:
            raise _bad(uid, f"'lifetime' must be one of {', '.join(LIFETIMES)}, got {lifetime!r}")
        fields["lifetime"] = lifetime
    if "port" in raw:
        port = raw["port"]
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise _bad(uid, f"'port' must be a port number (1-65535), got {port!r}")
        fields["port"] = port
    if "auth" in raw:
        auth = raw["auth"]
        if not isinstance(auth, str) or not auth:
            raise _bad(uid, f"'auth' must name a secret_environment variable, got {auth!r}")
        fields["auth"] = auth
    return ServiceSpec(**fields) if fields else DEFAULT


def endpoint_variable(uid: str) -> str:
    """`RHAPSODY_SERVICE_<UID>`: the uid upper-cased, every other character than A-Z, 0-9 as _."""
    return ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", uid.upper())


def _bad(uid: str, message: str) -> TaskValidationError:
    return TaskValidationError(message, uid=uid, field="service")
