"""Reconciliation: compare a task's record with its shim, and record what really happened.

A process that exited while no command listened is recorded with the shim's own status
and time; a shim that is gone is cleaned up with its ``delete`` action and recorded as
ShimLost and Exited(255), as containerd does; a working bundle no history knows (a create
killed half-way) is removed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from domain.errors import NotFoundError, UnavailableError
from domain.task import HAS_PROCESS, Task
from domain.values import Bundle, Cause, Exit, Status
from shim import DEFAULT_RUNTIME
from shim.bundle import load_bundle, remove_bundle, working_bundle
from shim.ports import TaskLocks, TaskStore
from shim.recorder import TaskRecorder
from shim.shim_manager import ShimManager, ShimProcess, bounded_cleanup

logger = logging.getLogger(__name__)

UNKNOWN_EXIT_STATUS = 255  # containerd's status for an exit nobody saw (cleanupAfterDeadShim)


class Reconciler:
    """Brings task histories in line with the shims (and their absence)."""

    def __init__(
        self,
        shims: ShimManager,
        recorder: TaskRecorder,
        locks: TaskLocks,
        store: TaskStore,
        *,
        connect: Callable[[Task], Awaitable[ShimProcess]],
        forget: Callable[[Task], None],
    ) -> None:
        self._shims = shims
        self._recorder = recorder
        self._locks = locks
        self._store = store
        self._connect = connect
        self._forget = forget

    async def reconcile(self, task: Task) -> bool:
        """Record an exit that happened while nobody listened; True if anything was recorded."""
        if task.status not in HAS_PROCESS:
            return False
        async with self._locks.hold(task.namespace, task.task_id):
            return await self._reconcile(task)

    async def _reconcile(self, task: Task) -> bool:
        bundle = working_bundle(self._shims.config.state, task.namespace, task.task_id)
        try:
            shim = await self._connect(task)
            process = await shim.client.state(task.task_id)
        except (UnavailableError, NotFoundError) as exc:
            logger.info("shim of task %s is gone (%s): cleaning up", task.task_id, exc)
            self._forget(task)
            await self.cleanup_dead(task, bundle)
            return True
        if process.status is Status.STOPPED:
            exit_ = Exit(status=process.exit_status, exited_at=process.exited_at or _now())
            return await self._recorder.record_exit(
                task, exit_, Cause(kind="reconciliation", detail="shim reports stopped")
            )
        return False

    async def cleanup_dead(self, task: Task, bundle: Bundle) -> None:
        """The shim is gone: its own cleanup, then ShimLost and Exited(255) in history."""
        await self._shims.cleanup_after_dead_shim(bundle, task.runtime)
        lost = Cause(kind="reconciliation", detail="shim lost")
        await self._recorder.record(
            (task.namespace, task.task_id),
            lambda t: t.record_shim_lost(lost)
            if t.incarnation == task.incarnation and t.status in HAS_PROCESS
            else None,
        )
        await self._recorder.record_exit(
            task,
            Exit(status=UNKNOWN_EXIT_STATUS, exited_at=_now()),
            Cause(kind="reconciliation", detail="shim lost; exit status unknown"),
        )

    async def remove_leftovers(self, namespace: str, task_id: str) -> bool:
        """Clean a working bundle that no history knows; True if there was one."""
        async with self._locks.hold(namespace, task_id):
            bundle = load_bundle(self._shims.config.state, namespace, task_id)
            task = await self._store.current(namespace, task_id)
            if bundle is None or (task is not None and task.is_live):
                return False
            logger.warning("task %s has no history: removing what a failed create left", task_id)
            try:
                shim = await self._shims.get(bundle, DEFAULT_RUNTIME)
            except (UnavailableError, NotFoundError, OSError):
                await self._shims.cleanup_after_dead_shim(bundle, DEFAULT_RUNTIME)
            else:
                await self.discard_shim(shim)
            remove_bundle(bundle)
            return True

    async def discard_shim(self, shim: ShimProcess) -> None:
        """Undo a half-made task: remove what runc made, then stop the shim."""
        await bounded_cleanup(shim.client.delete(shim.id))
        await self._shims.delete(shim)
        await self._shims.cleanup_after_dead_shim(shim.bundle, shim.runtime)


def _now() -> datetime:
    return datetime.now().astimezone()
