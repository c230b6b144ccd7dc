"""Recording facts on a task's history: retried on conflict, once however often heard.

TaskManager records the outcome of its own RPCs through here, and the event sink
delivers the shims' events here; both paths converge on the same guarded steps, so a fact
heard twice (or from two processes) is appended once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from domain.errors import ConflictError, NotFoundError
from domain.task import HAS_PROCESS, Task
from domain.values import Cause, Exit, Status
from shim.clock import now
from shim.ports import (
    ShimEvent,
    TaskCheckpointedEvent,
    TaskCreateEvent,
    TaskDeleteEvent,
    TaskExecAddedEvent,
    TaskExecStartedEvent,
    TaskExitEvent,
    TaskLocks,
    TaskOOMEvent,
    TaskPausedEvent,
    TaskResumedEvent,
    TaskStartEvent,
    TaskStore,
)

logger = logging.getLogger(__name__)

SAVE_ATTEMPTS = 5

# What the task's shim says its init is doing now (None: it cannot say). Paused and resumed
# events carry no sequence number, so a late one is checked against the shim before it is
# believed: pause, resume, then a delayed /tasks/paused must not make history say paused.
Probe = Callable[[Task], Awaitable[Status | None]]


class TaskRecorder:
    """Appends steps to task histories; turns shim events into those steps."""

    def __init__(self, store: TaskStore, locks: TaskLocks, probe: Probe | None = None) -> None:
        self._store = store
        self._locks = locks
        self._probe = probe

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
        """A shim's task event: record the fact once, whoever saw it first.

        Every fact the manager records from an RPC reply is recorded under the task's lock,
        and each handler below checks the fresh history under that lock too, so the reply
        and the event converge on one append in either order.
        """
        match event:
            case TaskStartEvent():
                await self.handle_start(event)
            case TaskExitEvent():
                await self.handle_exit(event)
            case TaskOOMEvent():
                await self.handle_oom(event)
            case TaskDeleteEvent():
                await self.handle_delete(event)
            case TaskExecAddedEvent() | TaskExecStartedEvent():
                await self.handle_exec(event)
            case TaskPausedEvent() | TaskResumedEvent():
                await self.handle_pause(event)
            case TaskCheckpointedEvent():
                await self.handle_checkpoint(event)
            case TaskCreateEvent():
                # Created is recorded from the Create reply, with what only the caller knows
                # (the user's bundle, the runtime); a create nobody recorded is found by
                # reconciliation, which adopts or cleans its bundle.
                logger.debug("shim created %s/%s", event.namespace, event.container_id)

    async def handle_delete(self, event: TaskDeleteEvent) -> None:
        """/tasks/delete of the init: the shim removed the container, whoever asked it to.

        The manager's own delete records Deleted under the task's lock, so this only appends
        when a delete happened without it (a command killed after the Delete RPC).
        """
        if event.exec_id:
            return  # an exec's removal is not a fact of the task's life
        task = await self._store.current(event.namespace, event.container_id)
        if task is None or not task.is_live or task.pid != event.pid:
            return
        cause = Cause(kind="shim-event", detail="/tasks/delete")
        async with self._locks.hold(task.namespace, task.task_id):
            exit_ = Exit(status=event.exit_status, exited_at=event.exited_at or now())
            await self.record_exit(task, exit_, cause)
            await self.record(
                (task.namespace, task.task_id),
                lambda t: (
                    t.delete(cause)
                    if t.incarnation == task.incarnation and t.status is Status.STOPPED
                    else None
                ),
            )

    async def handle_exec(self, event: TaskExecAddedEvent | TaskExecStartedEvent) -> None:
        task = await self._store.current(event.namespace, event.container_id)
        if task is None or not task.is_live:
            return
        topic = (
            "/tasks/exec-added" if isinstance(event, TaskExecAddedEvent) else "/tasks/exec-started"
        )
        cause = Cause(kind="shim-event", detail=topic)

        def apply(t: Task) -> None:
            if t.incarnation != task.incarnation or t.status is not Status.RUNNING:
                return
            if event.exec_id not in t.execs:
                t.add_exec(event.exec_id, cause)
            process = t.execs[event.exec_id]
            if isinstance(event, TaskExecStartedEvent) and process.pid is None:
                t.start_exec(event.exec_id, event.pid, cause)

        async with self._locks.hold(task.namespace, task.task_id):
            await self.record((task.namespace, task.task_id), apply)

    async def handle_pause(self, event: TaskPausedEvent | TaskResumedEvent) -> None:
        paused = isinstance(event, TaskPausedEvent)
        task = await self._store.current(event.namespace, event.container_id)
        if task is None or self._probe is None:
            return
        before, after = (
            (Status.RUNNING, Status.PAUSED) if paused else (Status.PAUSED, Status.RUNNING)
        )
        cause = Cause(kind="shim-event", detail="/tasks/paused" if paused else "/tasks/resumed")
        async with self._locks.hold(task.namespace, task.task_id):
            fresh = await self._store.current(task.namespace, task.task_id)
            if fresh is None or fresh.incarnation != task.incarnation or fresh.status is not before:
                return
            if await self._probe(fresh) is not after:
                return  # a late event: the shim has moved on since
            await self.record(
                (task.namespace, task.task_id),
                lambda t: (t.pause if paused else t.resume)(cause) if t.status is before else None,
            )

    async def handle_checkpoint(self, event: TaskCheckpointedEvent) -> None:
        task = await self._store.current(event.namespace, event.container_id)
        if task is None or not task.is_live:
            return
        cause = Cause(kind="shim-event", detail="/tasks/checkpointed")
        async with self._locks.hold(task.namespace, task.task_id):
            await self.record(
                (task.namespace, task.task_id),
                lambda t: (
                    t.record_checkpoint(event.image_path, False, cause)
                    if t.incarnation == task.incarnation
                    and t.status in (Status.RUNNING, Status.PAUSED)
                    and event.image_path not in t.checkpoints
                    else None
                ),
            )

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
                lambda t: (
                    t.start(event.pid, cause)
                    if t.incarnation == task.incarnation and t.status is Status.CREATED
                    else None
                ),
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
