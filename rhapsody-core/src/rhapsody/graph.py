"""The dynamic dependency graph: tasks may depend on tasks of this or any earlier submission.

Finished tasks are pruned to a `uid -> final state` entry, so memory per finished task is one
dict slot while later submissions can still depend on it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from rhapsody.errors import TaskValidationError
from rhapsody.task import TaskDescription

_uid_counter = itertools.count(1)


def next_uid() -> str:
    """A process-wide unique task uid in the original's style (`task.000001`)."""
    return f"task.{next(_uid_counter):06d}"


class Node:
    """The engine's live record of one unfinished task (never exposed to the user)."""

    __slots__ = (
        "alloc",
        "attempt",
        "cancel_requested",
        "dependents",
        "desc",
        "early",
        "external",
        "future",
        "handle",
        "ref",
        "seq",
        "service",
        "service_env",
        "state",
        "task",
        "timed_out",
        "timer",
        "uid",
        "waiting",
    )

    def __init__(self, uid: str, task: dict[str, Any], desc: TaskDescription, seq: int) -> None:
        self.uid = uid
        self.task = task
        self.desc = desc
        self.seq = seq
        self.state = "NEW"
        self.future: Any = None
        self.waiting = 0  # dependencies not yet DONE
        self.dependents: list[Node] | None = None  # created for the first dependent
        self.alloc: Any = None
        self.attempt = 0
        self.handle: Any = None
        self.timer: Any = None  # the attempt's timeout, armed when it starts
        self.cancel_requested = False
        self.timed_out = False
        self.external = False  # stands for a task of another backend (see `expect`)
        self.service: Any = None  # a `ServiceRun` while a service task runs
        self.service_env: dict[str, str] | None = None  # endpoints of the services it uses
        # Early dispatch (see `BaseExecutionBackend.chains_dependencies`): the record of an
        # attempt handed over before the dependencies were DONE, and the reference the backend
        # gave the attempt in flight (`ExecutionContext.submitted`).
        self.early: EarlyAttempt | None = None
        self.ref: object = None


class EarlyAttempt:
    """An attempt handed to a chaining backend while its task's dependencies were in flight.
    What it reports before they are DONE is held here, and replayed once they are."""

    __slots__ = ("outcome", "started", "upstream")

    def __init__(self, upstream: tuple[object, ...]) -> None:
        self.upstream = upstream  # the dependencies' attempts it runs behind (their refs)
        self.started = False  # the backend reported its start
        self.outcome: Any = None  # the `Outcome` it ended with


class TaskGraph:
    """Admits batches atomically and tracks who waits on whom."""

    def __init__(self) -> None:
        self.live: dict[str, Node] = {}
        self.finished: dict[str, str] = {}
        self._seq = itertools.count()

    def state_of(self, uid: str) -> str | None:
        node = self.live.get(uid)
        if node is not None:
            return None if node.external else node.state
        return self.finished.get(uid)

    def admit(
        self,
        tasks: Sequence[Mapping[str, Any]],
        check: Callable[[TaskDescription], None] | None = None,
        make_future: Callable[[], Any] | None = None,
    ) -> list[Node]:
        """Validate a whole batch; raise before changing anything if any task is invalid.

        Checks each dict, uid uniqueness (within the batch and against every earlier task),
        that dependencies name known uids, and that the batch has no dependency cycle.
        `check` is the backend's own test of each task (e.g. that its resources fit the node);
        `make_future` gives each admitted node its future.
        """
        if isinstance(tasks, Mapping) or not isinstance(tasks, Sequence):
            raise TaskValidationError(
                f"submit_tasks takes a list of task dicts, got {type(tasks).__name__}"
            )
        live, finished = self.live, self.finished
        batch: dict[str, TaskDescription] = {}
        from_dict = TaskDescription.from_dict
        # (task, uid, dependency) for each dependency not known when its task was read: a later
        # task of the batch (then a cycle is possible and is checked) or an unknown uid.
        unresolved: list[tuple[str, str]] = []
        for index, task in enumerate(tasks):
            if not isinstance(task, dict):
                raise TaskValidationError(
                    f"task #{index} must be a dict, got {type(task).__name__}", field="task"
                )
            uid = task.get("uid")
            if uid is None:
                uid = next_uid()
                while uid in live or uid in finished or uid in batch:
                    uid = next_uid()
            elif not isinstance(uid, str) or not uid:
                raise TaskValidationError(
                    f"task #{index}: uid must be a non-empty string, got {uid!r}", field="uid"
                )
            if uid in batch:
                raise TaskValidationError(
                    "uid appears twice in this submission", uid=uid, field="uid"
                )
            if uid in live or uid in finished:
                raise TaskValidationError(
                    "uid was already used by an earlier submission", uid=uid, field="uid"
                )
            desc = from_dict(task, uid)
            if check is not None:
                check(desc)
            for dep in desc.dependencies:
                # Most likely first: earlier in this batch, then finished, then still live.
                if dep not in batch and dep not in finished and dep not in live:
                    unresolved.append((uid, dep))
            batch[uid] = desc
        if unresolved:
            for uid, dep in unresolved:
                if dep not in batch:
                    raise TaskValidationError(
                        f"depends on unknown task {dep!r} (not in this or an earlier submission)",
                        uid=uid,
                        field="dependencies",
                    )
            # Only a dependency on a later task of the batch can close a cycle.
            _reject_cycles(batch)
        nodes = []
        seq = self._seq
        for task, (uid, desc) in zip(tasks, batch.items(), strict=True):
            task = cast("dict[str, Any]", task)  # checked above: every task is a dict
            if "uid" not in task or task["uid"] is None:
                task["uid"] = uid
            node = Node(uid, task, desc, next(seq))
            if make_future is not None:
                node.future = make_future()
            live[uid] = node
            nodes.append(node)
        return nodes

    def retire(self, node: Node) -> None:
        """Forget a finished node, keeping only its final state."""
        del self.live[node.uid]
        self.finished[node.uid] = node.state
        node.dependents = None


def _reject_cycles(batch: Mapping[str, TaskDescription]) -> None:
    # Earlier submissions cannot depend on this batch, so a cycle lies inside the batch.
    indegree = {uid: 0 for uid in batch}
    children: dict[str, list[str]] = {}
    for uid, desc in batch.items():
        for dep in desc.dependencies:
            if dep in batch:
                indegree[uid] += 1
                children.setdefault(dep, []).append(uid)
    stack = [uid for uid, n in indegree.items() if n == 0]
    seen = 0
    while stack:
        uid = stack.pop()
        seen += 1
        for child in children.get(uid, ()):
            indegree[child] -= 1
            if indegree[child] == 0:
                stack.append(child)
    if seen < len(batch):
        cyclic = sorted(uid for uid, n in indegree.items() if n > 0)
        shown = ", ".join(repr(u) for u in cyclic[:10]) + (" ..." if len(cyclic) > 10 else "")
        raise TaskValidationError(
            f"dependency cycle among tasks {shown}", uid=cyclic[0], field="dependencies"
        )
