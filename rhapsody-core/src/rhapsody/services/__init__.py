"""Service tasks: long-running tasks that dependents use while they run.

A task with a `service` field is started like any task; its dependents start once it is
*ready* (its readiness probe passed), not once it ends. The engine stops it at shutdown (or
when its last dependent is final, with `lifetime: "dependents"`). See docs/services.md.
"""

from rhapsody.services.spec import ENV_PREFIX, ServiceSpec, endpoint_variable, parse_service

__all__ = ["ENV_PREFIX", "ServiceSpec", "endpoint_variable", "parse_service"]
