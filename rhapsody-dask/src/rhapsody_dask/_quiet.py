"""Silencing dask.distributed's loggers while a cluster closes.

Closing a cluster makes dask log failed heartbeats and undeliverable messages, some of them at
CRITICAL, although nothing is wrong; the backend silences them for the close only.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

_SILENT = logging.CRITICAL + 1


def silence() -> list[tuple[logging.Logger, int]]:
    """Silence every `distributed` logger; returns their previous levels."""
    names = [
        "distributed",
        *(n for n in logging.root.manager.loggerDict if n.startswith("distributed.")),
    ]
    saved = [(logger, logger.level) for logger in map(logging.getLogger, names)]
    for logger, _ in saved:
        logger.setLevel(_SILENT)
    return saved


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    saved = silence()
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)
