"""Keep radical.utils' ZMQ publishers to one sending thread at a time.

`radical.utils.zmq.Publisher.put` sends on its ZMQ socket without a lock, and RADICAL-Pilot
1.103 publishes on one publisher from several threads of a component: the pilot manager's
heartbeat thread sends on the control channel every second while `submit_pilots` and
`cancel_pilots` send on it from the caller's thread (and in a pilot's agent, the executor's
work thread and its watcher thread both publish task states). A ZMQ socket is not thread-safe:
two sends at once abort the whole process inside libzmq (``Assertion failed: check ()
(src/msg.cpp:387)``; two threads putting on one publisher abort it within a second,
`tests/radical/test_publisher_lock.py`). The backend calls `install()` in its process before it
creates a session; the processes of a local pilot get `lock()` from the ``.pth`` hook of
`rhapsody_radical.loopback` as radical.utils loads. Remote pilots' processes are not patched.

Imports nothing but the standard library at load (the hook runs in every Python process of a
local pilot).
"""

from __future__ import annotations

import threading
import types
import warnings
from typing import Any

_send = threading.Lock()  # publishes take microseconds and never block: one lock for all
_install = threading.Lock()


def install() -> None:
    """Make every `radical.utils.zmq.Publisher.put` of this process hold one lock (idempotent)."""
    from radical.utils.zmq import pubsub  # type: ignore[import-untyped]

    lock(pubsub)


def lock(pubsub: types.ModuleType) -> None:
    """Make `pubsub.Publisher.put` (of radical.utils.zmq.pubsub) hold one lock (idempotent);
    warn, leaving it as it is, where radical.utils has no such method any more."""
    with _install:
        original = getattr(getattr(pubsub, "Publisher", None), "put", None)
        if original is None:
            warnings.warn(
                f"rhapsody_radical.publisher_lock: {pubsub.__name__} has changed (no "
                "Publisher.put); its publishers may abort the process",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        if getattr(original, "_rhapsody_locked", False):
            return

        def put(self: Any, topic: str, msg: Any) -> None:
            with _send:
                original(self, topic, msg)

        put._rhapsody_locked = True  # type: ignore[attr-defined]
        pubsub.Publisher.put = put
