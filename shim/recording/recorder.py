"""The one way to change a task's history: edit it under its lock, save on the way out.

Several processes (each CLI command, and serve) record facts about the same task: the
outcome of their own RPCs, and the shims' events that reach whichever of them serves the
event sink. A fact heard twice, or by two processes, must be appended once, and a shim's
exit must never land between a Start RPC and the Started it caused. Both follow from one
rule, which this module alone enforces: every change is made inside ``editing`` (or
``creating``), which holds the task's cross-process lock for the whole block, reads the
incarnation fresh under it, and saves whatever the block appended when it ends. Callers
never take the lock or call the store's save themselves.

Inside a block, strict commands (``task.start``, ``task.pause``, ...) raise for a step
the state machine forbids; observations (``task.observe_exit``, ...) apply a fact the
shim reports only if it is news. Both are the aggregate's, with their guards written once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from domain.task import Task
from shim.ports import TaskLocks, TaskStore


@dataclass
class NewIncarnation:
    """What ``creating`` hands its block: the ID's latest incarnation, and the next one."""

    previous: Task | None
    _save: Callable[[Task], Awaitable[None]]
    task: Task | None = field(default=None)

    @property
    def number(self) -> int:
        """The incarnation number the new aggregate must have."""
        return self.previous.incarnation + 1 if self.previous is not None else 1

    def begin(self, task: Task) -> None:
        """The new incarnation's aggregate, saved when the block ends."""
        if task.incarnation != self.number:
            raise ValueError(f"incarnation {task.incarnation} given, {self.number} expected")
        self.task = task

    async def commit(self) -> None:
        """Save the new incarnation now, still under the lock: for a caller that must undo
        what it made if the store refuses it."""
        if self.task is None:
            raise ValueError("no incarnation begun")
        await self._save(self.task)


class TaskRecorder:
    """Owns the per-task lock and the saving of task aggregates."""

    def __init__(self, store: TaskStore, locks: TaskLocks) -> None:
        self._store = store
        self._locks = locks

    @asynccontextmanager
    async def editing(self, namespace: str, task_id: str) -> AsyncIterator[Task | None]:
        """The ID's latest incarnation (None if it never existed), locked for the block."""
        async with self._locks.hold(namespace, task_id):
            task = await self._store.current(namespace, task_id)
            yield task
            if task is not None:
                await self._save(task)

    @asynccontextmanager
    async def editing_incarnation(self, task: Task) -> AsyncIterator[Task]:
        """The same incarnation as ``task``, fresh from the store and locked for the block.

        Addressed by its aggregate id, so a fact about incarnation N can never be recorded
        on N+1: an observation on an incarnation already deleted is simply not news.
        """
        async with self._locks.hold(task.namespace, task.task_id):
            fresh = await self._store.incarnation(task.namespace, task.task_id, task.incarnation)
            if fresh is None:  # pragma: no cover - a task read from the store exists in it
                raise LookupError(f"incarnation {task.incarnation} of {task.task_id} vanished")
            yield fresh
            await self._save(fresh)

    @asynccontextmanager
    async def creating(self, namespace: str, task_id: str) -> AsyncIterator[NewIncarnation]:
        """A new incarnation of the ID, locked for the block; saved if the block begins one."""
        async with self._locks.hold(namespace, task_id):
            new = NewIncarnation(await self._store.current(namespace, task_id), self._save)
            yield new
            if new.task is not None:
                await self._save(new.task)

    async def _save(self, task: Task) -> None:
        # Under the lock no other writer can append to this aggregate, so a ConflictError
        # from the store means a writer that ignores the lock: it propagates, never retried.
        if task.pending_events:
            await self._store.save(task)
