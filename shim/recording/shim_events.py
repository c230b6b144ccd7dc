"""The shims' events, as facts on task histories: each recorded once, whoever heard it first.

Every shim publishes /tasks/start, /tasks/exit, /tasks/oom, ... to the event sink, served
by whichever process runs (a command, or serve). The same facts also come back in RPC
replies to the command that caused them. Each event here becomes one observation on the
aggregate inside the recorder's ``editing`` block, so the reply and the event converge on
one append in either order, in any process. An event is believed only from the task's
own shim (its ``sender``, the sink connection's peer pid, must be that shim's pid).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Protocol

from domain.errors import UnavailableError
from domain.task import Task
from domain.values import Status
from shim.clock import now
from shim.lifecycle.shim_manager import ShimProcess
from shim.ports import (
    ShimEvent,
    TaskCheckpointedEvent,
    TaskCreateEvent,
    TaskDeleteEvent,
    TaskExecAddedEvent,
    TaskExecStartedEvent,
    TaskExitEvent,
    TaskOOMEvent,
    TaskPausedEvent,
    TaskResumedEvent,
    TaskStartEvent,
)
from shim.recording.recorder import TaskRecorder
from shim.recovery.exec_facts import record_exec_drift, running_execs

logger = logging.getLogger(__name__)


class TaskShims(Protocol):
    """What the recorder asks of the shim that serves a task (ShimConnections)."""

    async def connect(self, task: Task) -> ShimProcess:
        """The task's own shim; UnavailableError if none answers."""
        ...

    async def probe(self, task: Task) -> Status | None:
        """What the shim says the task's init is doing now (None: it cannot say)."""
        ...

    async def shim_pid(self, task: Task) -> int | None:
        """The pid of the task's own shim (None: no shim answers for it)."""
        ...


class ShimEventRecorder:
    """Turns each decoded shim event into an observation on the task it is about."""

    def __init__(self, recorder: TaskRecorder, shims: TaskShims) -> None:
        self._recorder = recorder
        self._shims = shims

    async def _believed(self, task: Task | None, event: ShimEvent) -> bool:
        """Whether ``event`` may change ``task``'s history: the task is live and the event
        came from the task's own shim.

        The sink's socket takes any process of our user: another task's shim, a
        third-party ``--runtime``, a script. Only the shim that serves the task can speak
        for it, so the connection's peer pid must be that shim's; anything else (an
        unknown sender included) is logged and dropped, and reconciliation asks the
        shim itself if a real fact was missed.
        """
        if task is None:
            # No incarnation of this owner: the ID may be another node's (its shim reports
            # to that node's sink, never to ours), so there is nothing of ours to record.
            logger.debug("ignored %s about %s/%s: this owner has no such task",
                         type(event).__name__, event.namespace, event.container_id)  # fmt: skip
            return False
        if not task.is_live:
            return False  # nothing to record on it (a deleted task's facts are not news)
        owner = await self._shims.shim_pid(task)
        if event.sender is not None and event.sender == owner:
            return True
        logger.warning(
            "ignored %s about task %s/%s from pid %s: its shim is pid %s",
            type(event).__name__, task.namespace, task.task_id, event.sender, owner,
        )  # fmt: skip
        return False

    async def handle_event(self, event: ShimEvent) -> None:
        match event:
            case TaskStartEvent():
                await self._start(event)
            case TaskExitEvent():
                await self._exit(event)
            case TaskOOMEvent():
                await self._oom(event)
            case TaskDeleteEvent():
                await self._delete(event)
            case TaskExecAddedEvent() | TaskExecStartedEvent():
                await self._exec(event)
            case TaskPausedEvent() | TaskResumedEvent():
                await self._pause(event)
            case TaskCheckpointedEvent():
                await self._checkpoint(event)
            case TaskCreateEvent():
                # Created is recorded from the Create reply, with what only the caller knows
                # (the user's bundle, the runtime); a create nobody recorded is found by
                # reconciliation, which adopts or cleans its bundle.
                logger.debug("shim created %s/%s", event.namespace, event.container_id)

    async def _start(self, event: TaskStartEvent) -> None:
        async with self._recorder.editing(event.namespace, event.container_id) as task:
            if await self._believed(task, event) and task is not None and task.pid == event.pid:
                task.observe_start(event.pid, self._recorder.causes.shim_event("/tasks/start"))

    async def _exit(self, event: TaskExitEvent) -> None:
        """The init's exit, or an exec's (ExecExited: an exec's exit is not the task's)."""
        cause = self._recorder.causes.shim_event("/tasks/exit")
        async with self._recorder.editing(event.namespace, event.container_id) as task:
            if not await self._believed(task, event) or task is None:
                return
            if event.exec_id not in ("", event.container_id):
                task.observe_exec_exit(event.exec_id, event.exit_status, event.exited_at, cause)
            elif task.pid == event.pid:
                await self._exec_exits_first(task)
                task.observe_exit(event.exit_status, event.exited_at, cause)

    async def _exec_exits_first(self, task: Task) -> None:
        """The init's exit ends its execs too: those the shim already reports stopped are
        recorded before it, so that history tells them in order."""
        if running_execs(task):
            with contextlib.suppress(UnavailableError, OSError):
                await record_exec_drift(
                    task, (await self._shims.connect(task)).client, self._recorder.causes
                )

    async def _delete(self, event: TaskDeleteEvent) -> None:
        """/tasks/delete of the init: the shim removed the runc container; its exit, if news.

        Not Deleted: a task is deleted once its shim is stopped and its working bundle
        removed, and whoever does that records it (the delete, its retry, or reconcile
        finding the bundle gone). The shim retries an event its sink never acknowledged
        (a delete killed after its Delete RPC) 1, 3, 6 s later to whichever process
        serves the sink then: recorded from here, Deleted left the bundle and the shim
        behind and made the retried delete fail with "does not exist".
        """
        if event.exec_id:
            return  # an exec's removal is not a fact of the task's life
        cause = self._recorder.causes.shim_event("/tasks/delete")
        async with self._recorder.editing(event.namespace, event.container_id) as task:
            if task is None or task.pid != event.pid or not await self._believed(task, event):
                return
            task.observe_exit(event.exit_status, event.exited_at or now(), cause)

    async def _exec(self, event: TaskExecAddedEvent | TaskExecStartedEvent) -> None:
        async with self._recorder.editing(event.namespace, event.container_id) as task:
            if not await self._believed(task, event) or task is None:
                return
            if isinstance(event, TaskExecStartedEvent):
                cause = self._recorder.causes.shim_event("/tasks/exec-started")
                task.observe_exec_started(event.exec_id, event.pid, cause)
            else:
                cause = self._recorder.causes.shim_event("/tasks/exec-added")
                task.observe_exec_added(event.exec_id, cause)

    async def _pause(self, event: TaskPausedEvent | TaskResumedEvent) -> None:
        paused = isinstance(event, TaskPausedEvent)
        before, after = (
            (Status.RUNNING, Status.PAUSED) if paused else (Status.PAUSED, Status.RUNNING)
        )
        async with self._recorder.editing(event.namespace, event.container_id) as task:
            if task is None or task.status is not before:
                return
            if not await self._believed(task, event) or await self._shims.probe(task) is not after:
                return  # a late event: the shim has moved on since
            if paused:
                task.observe_paused(self._recorder.causes.shim_event("/tasks/paused"))
            else:
                task.observe_resumed(self._recorder.causes.shim_event("/tasks/resumed"))

    async def _checkpoint(self, event: TaskCheckpointedEvent) -> None:
        async with self._recorder.editing(event.namespace, event.container_id) as task:
            if await self._believed(task, event) and task is not None:
                task.observe_checkpoint(
                    event.image_path, False, self._recorder.causes.shim_event("/tasks/checkpointed")
                )

    async def _oom(self, event: TaskOOMEvent) -> None:
        async with self._recorder.editing(event.namespace, event.container_id) as task:
            if await self._believed(task, event) and task is not None:
                task.observe_oom(self._recorder.causes.shim_event("/tasks/oom"))
