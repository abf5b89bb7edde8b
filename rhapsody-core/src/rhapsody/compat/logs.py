"""`rhapsody.enable_logging(...)` and `rhapsody.logger`, as in rhapsody-py."""

from __future__ import annotations

import logging
from typing import IO, Any

#: the logger every part of RHAPSODY logs to
logger = logging.getLogger("rhapsody")

_DEFAULT_FORMAT = "%(asctime)s | %(levelname)-8s | [%(name)s] | %(message)s"
_handler: logging.Handler | None = None


def enable_logging(
    level: int = logging.INFO,
    format_string: str | None = _DEFAULT_FORMAT,
    stream: IO[Any] | None = None,
    force: bool = True,
) -> None:
    """Send RHAPSODY's log records at `level` and above to `stream` (default: stderr).

    Only the `rhapsody` logger is configured (the root logger is left alone). With `force`, a
    handler added by an earlier call is replaced; without it, an earlier call is kept.
    """
    global _handler
    if _handler is not None:
        if not force:
            return
        logger.removeHandler(_handler)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(format_string or _DEFAULT_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level)
    _handler = handler
