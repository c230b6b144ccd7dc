"""Recording facts on a task's history: retried on conflict, once however often heard.

TaskManager records the outcome of its own RPCs through here, and the event sink
delivers the shims' events here; both paths converge on the same guarded steps, so a fact
heard twice (or from two processes) is appended once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from domain.errors import ConflictError, NotFoundError
from domain.task import HAS_PROCESS, Task
from domain.values import Cause, Exit, Status
from shim.ports import (
    ShimEvent,
    TaskExitEvent,
    TaskLocks,
    TaskOOMEvent,
    TaskStartEvent,
    TaskStore,
)

SAVE_ATTEMPTS = 5


class TaskRecorder:
    """Appends steps to task histories; turns shim events into those steps."""

    def __init__(self, store: TaskStore, locks: TaskLocks) -> None:
        self._store = store
        self._locks = locks

    async def record_exit(self, task: Task, exit_: Exit, cause: Cause) -> bool:
        """Record the exit unless it already is; the caller holds the task's lock."""
        recorded = False

        def apply(t: Task) -> None:
            nonlocal recorded
            if t.incarnation == task.incarnation and t.status in HAS_PROCESS:
                t.record_exit(exit_.status, exit_.exited_at, cause)
                recorded = True

        await self.record((task.namespace, task.task_id), apply)
        return recorded

    async def record(self, key: tuple[str, str], step: Callable[[Task], None]) -> None:
        """Apply a step to fresh state and append it, retrying when another writer won."""
        for attempt in range(SAVE_ATTEMPTS):
            task = await self._store.current(*key)
            if task is None:
                raise NotFoundError(f"task {key[1]} does not exist in namespace {key[0]}")
            step(task)
            try:
                await self._store.save(task)
                return
            except ConflictError:
                if attempt == SAVE_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))

    async def handle_event(self, event: ShimEvent) -> None:
        """A shim's lifecycle event: record the fact once, whoever saw it first."""
        if isinstance(event, TaskStartEvent):
            await self.handle_start(event)
        elif isinstance(event, TaskOOMEvent):
            await self.handle_oom(event)
        else:
            await self.handle_exit(event)

    async def handle_oom(self, event: TaskOOMEvent) -> None:
        task = await self._store.current(event.namespace, event.container_id)
        if task is None or not task.is_live:
            return
        cause = Cause(kind="shim-event", detail="/tasks/oom")
        async with self._locks.hold(task.namespace, task.task_id):
            await self.record(
                (task.namespace, task.task_id),
                lambda t: t.record_oom(cause) if t.incarnation == task.incarnation else None,
            )

    async def handle_start(self, event: TaskStartEvent) -> None:
        task = await self._store.current(event.namespace, event.container_id)
        if task is None or task.pid != event.pid:
            return
        cause = Cause(kind="shim-event", detail="/tasks/start")
        async with self._locks.hold(task.namespace, task.task_id):
            await self.record(
                (task.namespace, task.task_id),
                lambda t: t.start(event.pid, cause)
                if t.incarnation == task.incarnation and t.status is Status.CREATED
                else None,
            )

    async def handle_exit(self, event: TaskExitEvent) -> None:
        """A shim's /tasks/exit: record the init's exit once, however often it arrives.

        An exec's exit is not the task's exit: it is recorded as ExecExited, if history
        knows that exec as started.
        """
        if event.exec_id not in ("", event.container_id):
            await self._record_exec_exit(event)
            return
        task = await self._store.current(event.namespace, event.container_id)
        if task is None or task.pid != event.pid:
            return
        exit_ = Exit(status=event.exit_status, exited_at=event.exited_at)
        async with self._locks.hold(task.namespace, task.task_id):
            await self.record_exit(task, exit_, Cause(kind="shim-event", detail="/tasks/exit"))

    # --- helpers ------------------------------------------------------------------------

    async def _record_exec_exit(self, event: TaskExitEvent) -> None:
        task = await self._store.current(event.namespace, event.container_id)
        if task is None or event.exec_id not in task.execs:
            return
        cause = Cause(kind="shim-event", detail="/tasks/exit")

        def apply(t: Task) -> None:
            process = t.execs.get(event.exec_id)
            if (
                t.status is not Status.DELETED
                and process is not None
                and process.pid is not None
                and process.exit is None
            ):
                t.record_exec_exit(event.exec_id, event.exit_status, event.exited_at, cause)

        async with self._locks.hold(task.namespace, task.task_id):
            await self.record((task.namespace, task.task_id), apply)
