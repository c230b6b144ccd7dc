"""The one way to change a task's history: edit it under its lock, save on the way out.

Several processes (each CLI command, and serve) record facts about the same task: the
outcome of their own RPCs, and the shims' events that reach whichever of them serves the
event sink. A fact heard twice, or by two processes, must be appended once, and a shim's
exit must never land between a Start RPC and the Started it caused. Both follow from one
rule, which this module alone enforces: every change is made inside ``editing`` (or
``creating``), which holds the task's cross-process lock for the whole block, reads the
incarnation fresh under it, and saves whatever the block appended when it ends. Callers
never take the lock or call the store's save themselves.

Every block acts on this recorder's owner's tasks only (domain.values.Owner: a node and
its state dir). Incarnation numbers are fleet-wide per ID, so ``editing`` yields the
latest incarnation this owner owns, not the ID's latest, and ``creating`` numbers the new
one after the latest of any owner. Another node creating the same ID at the same moment
(the lock is per state dir) makes the save conflict: the new incarnation is renumbered
and saved again, a bounded number of times.

Inside a block, strict commands (``task.start``, ``task.pause``, ...) raise for a step
the state machine forbids; observations (``task.observe_exit``, ...) apply a fact the
shim reports only if it is news. Both are the aggregate's, with their guards written once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from domain.errors import ConflictError, NotFoundError, OwnedElsewhereError
from domain.task import Task
from domain.values import Owner
from shim.ports import TaskLocks, TaskStore
from shim.recording.causes import Causes

# How often a new incarnation is renumbered when other owners keep taking its number:
# each conflict means another node's Created landed, so this bounds a burst, not a loop.
CREATE_ATTEMPTS = 16


@dataclass
class NewIncarnation:
    """What ``creating`` hands its block: this owner's latest incarnation, and the next number.

    ``previous`` is this owner's latest incarnation (None: it has none); ``latest`` is the
    ID's latest incarnation number of any owner, so the new one is ``latest + 1``.
    """

    previous: Task | None
    latest: int
    _save: Callable[[Task], Awaitable[None]]
    _renumber: Callable[[], Awaitable[int]]
    task: Task | None = field(default=None)
    recorded: tuple[str, ...] = field(default=())
    _make: Callable[[int], Task] | None = field(default=None)

    @property
    def previous_number(self) -> int | None:
        return self.previous.incarnation if self.previous is not None else None

    @property
    def number(self) -> int:
        """The incarnation number the new aggregate gets (if no other owner takes it first)."""
        return self.latest + 1

    def begin(self, make: Callable[[int], Task]) -> None:
        """How to build the new incarnation's aggregate for a number: saved when the block
        ends (or at ``commit``), built again with the next number if that one is taken."""
        self._make = make

    @property
    def begun(self) -> bool:
        return self._make is not None

    async def commit(self) -> Task:
        """Save the new incarnation now, still under the lock: for a caller that must undo
        what it made if the store refuses it. Another owner that saved the same number
        first makes it conflict: renumbered after the new latest, and saved again."""
        if self._make is None:
            raise ValueError("no incarnation begun")
        for _ in range(CREATE_ATTEMPTS):
            task = self._make(self.number)
            if task.incarnation != self.number:
                raise ValueError(f"incarnation {task.incarnation} built, {self.number} expected")
            recorded = tuple(type(e).__name__ for e in task.pending_events)
            try:
                await self._save(task)
            except ConflictError:
                self.latest = max(self.latest + 1, await self._renumber())
                continue
            self.task, self.recorded = task, recorded
            return task
        raise ConflictError(
            f"task {task.task_id}: other nodes took {CREATE_ATTEMPTS} incarnation numbers "
            "in a row while this one was created; retry"
        )


class TaskRecorder:
    """Owns the per-task lock and the saving of task aggregates, for one owner's tasks."""

    def __init__(self, store: TaskStore, locks: TaskLocks, owner: Owner) -> None:
        self._store = store
        self._locks = locks
        self.owner = owner
        self.causes = Causes(owner.node)

    @asynccontextmanager
    async def editing(self, namespace: str, task_id: str) -> AsyncIterator[Task | None]:
        """This owner's latest incarnation of the ID (None if it has none), locked for the
        block. Other owners' incarnations are never handed out: they are not ours to edit."""
        async with self._locks.hold(namespace, task_id):
            _, task = await self._store.latest_owned(namespace, task_id, self.owner)
            yield task
            if task is not None:
                await self._save(task)

    @asynccontextmanager
    async def editing_incarnation(self, task: Task) -> AsyncIterator[Task]:
        """The same incarnation as ``task``, fresh from the store and locked for the block.

        Addressed by its aggregate id, so a fact about incarnation N can never be recorded
        on N+1: an observation on an incarnation already deleted is simply not news.
        Another owner's incarnation is refused (OwnedElsewhereError), whoever found it.
        """
        if not task.owned_by(self.owner):
            raise self._elsewhere(task.task_id, Owner(task.node, task.state_dir))
        async with self._locks.hold(task.namespace, task.task_id):
            fresh = await self._store.incarnation(task.namespace, task.task_id, task.incarnation)
            if fresh is None:  # pragma: no cover - a task read from the store exists in it
                raise LookupError(f"incarnation {task.incarnation} of {task.task_id} vanished")
            yield fresh
            await self._save(fresh)

    @asynccontextmanager
    async def creating(self, namespace: str, task_id: str) -> AsyncIterator[NewIncarnation]:
        """A new incarnation of the ID, locked for the block; saved if the block begins one.

        ``previous`` is this owner's latest incarnation: another owner's live one does not
        keep this owner from creating the ID (the new one is numbered after it).
        """
        async with self._locks.hold(namespace, task_id):
            latest, previous = await self._store.latest_owned(namespace, task_id, self.owner)

            async def renumber() -> int:
                return (await self._store.latest_owned(namespace, task_id, self.owner))[0]

            new = NewIncarnation(previous, latest, self._save, renumber)
            yield new
            if new.begun and new.task is None:
                await new.commit()

    async def missing(self, namespace: str, task_id: str) -> NotFoundError:
        """Why this owner has no live task ``task_id``: OwnedElsewhereError naming the
        owner of another's live incarnation, or a plain NotFoundError."""
        theirs = await self._store.live_elsewhere(namespace, task_id, self.owner)
        if theirs is not None:
            return self._elsewhere(task_id, theirs)
        return NotFoundError(f"task {task_id} does not exist in namespace {namespace}")

    def _elsewhere(self, task_id: str, theirs: Owner) -> OwnedElsewhereError:
        here = f"node {self.owner.node}"
        if theirs.node == self.owner.node:
            here = f"state dir {self.owner.state_dir} of {here}"
        return OwnedElsewhereError(
            f"task {task_id} runs on node {theirs.node} (state dir {theirs.state_dir}); "
            f"this is {here}"
        )

    async def _save(self, task: Task) -> None:
        # Under the lock no other writer of this owner can append to this aggregate; a
        # ConflictError on an existing incarnation means a writer that ignores the lock:
        # it propagates, never retried (only a new incarnation's number is retried).
        if task.pending_events:
            await self._store.save(task)
