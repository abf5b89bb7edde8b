"""`rhapsody_radical.publisher_lock`: radical.utils publishers shared between threads (no pilot
needed). Each case runs in a fresh interpreter: without the lock, the run below aborts the
interpreter inside libzmq (SIGABRT or SIGSEGV; 6 runs of 6 here, in under a second each)."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "radical.utils", reason="radical.utils is not installed: pip install rhapsody-radical"
)

import os
import subprocess
import sys
import types
from pathlib import Path

from rhapsody_radical import publisher_lock
from rhapsody_radical.loopback import ENV

# Two threads publish on one radical.utils Publisher at once, as RADICAL-Pilot's pilot manager
# does (its heartbeat thread beside submit_pilots / cancel_pilots), to a subscriber that reads.
# The client installs the lock itself (twice here: a second backend in the process gets the same
# lock); a local pilot's processes get it from the `.pth` hook, as radical.utils loads.
BY_THE_CLIENT = """
from radical.utils.zmq import pubsub
from rhapsody_radical import publisher_lock
publisher_lock.install()
locked = pubsub.Publisher.put
publisher_lock.install()
assert pubsub.Publisher.put is locked
"""
SHARED_PUBLISHER = """
import sys, threading, zmq
import radical.utils as ru
ctx = zmq.Context.instance()
for _ in range(5):
    sub = ctx.socket(zmq.SUB)
    port = sub.bind_to_random_port("tcp://127.0.0.1")
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    pub = ru.zmq.Publisher("control_pubsub", url=f"tcp://127.0.0.1:{port}", path=".")
    done = threading.Event()
    received = 0
    def read():
        global received
        while not done.is_set():
            if sub.poll(timeout=5):
                sub.recv()
                received += 1
    reader = threading.Thread(target=read)
    reader.start()
    def publish():
        for _ in range(20000):
            pub.put("control_pubsub", {"cmd": "heartbeat"})
    senders = [threading.Thread(target=publish) for _ in range(2)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    done.set()
    reader.join()
    sub.close(linger=0)
    assert received > 0
print("published", flush=True)
"""


@pytest.mark.parametrize("locked_by", ["client", "hook"])
def test_two_threads_publishing_on_one_publisher_do_not_crash_the_process(
    tmp_path: Path, locked_by: str
) -> None:
    client = locked_by == "client"
    env = {k: v for k, v in os.environ.items() if k != ENV}
    done = subprocess.run(
        [sys.executable, "-c", (BY_THE_CLIENT if client else "") + SHARED_PUBLISHER],
        cwd=tmp_path,
        env=env if client else {**env, ENV: "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip() == "published"


def test_a_radical_utils_without_publisher_put_is_left_alone_with_a_warning() -> None:
    changed = types.ModuleType("radical.utils.zmq.pubsub")
    with pytest.warns(RuntimeWarning, match="has changed .no Publisher.put."):
        publisher_lock.lock(changed)
    assert not hasattr(changed, "Publisher")
