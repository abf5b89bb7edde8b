"""Shared by the session's loopback services (registry, proxy)."""

from __future__ import annotations

import asyncio
from typing import Any


async def close_server(server: asyncio.AbstractServer, connections: set[asyncio.Task[Any]]) -> None:
    """Stop listening, cut every open connection (bounded wait), then wait for the close."""
    server.close()
    for connection in list(connections):
        connection.cancel()
    if connections:
        await asyncio.wait(connections, timeout=5.0)
    await server.wait_closed()
