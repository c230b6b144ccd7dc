"""An extra process in a running task: the shim's exec operations, each recorded once.

containerd hands out a Process for an exec with its own start, wait, kill, state, delete,
close_io and resize_pty; so does shimledger. The task's history records ExecAdded,
ExecStarted and ExecExited; an exec's exit is never the task's exit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from domain.task import Task
from domain.values import Cause, Exit
from shim.clock import now
from shim.crash_points import crash_point
from shim.lifecycle.shim_manager import bounded_cleanup
from shim.ports import ProcessState, ShimClient
from shim.recording.recorder import TaskRecorder


class ExecHandle:
    """One exec of one task incarnation, registered with the shim and recorded as ExecAdded."""

    def __init__(
        self,
        *,
        task: Task,
        exec_id: str,
        client: ShimClient,
        recorder: TaskRecorder,
        cause: Callable[[], Cause],
    ) -> None:
        self.namespace = task.namespace
        self.task_id = task.task_id
        self.id = exec_id
        self.pid: int | None = None
        self._task = task
        self._client = client
        self._recorder = recorder
        self._cause = cause

    def __repr__(self) -> str:
        return f"<ExecHandle {self.namespace}/{self.task_id}/{self.id} pid={self.pid}>"

    async def start(self) -> int:
        """Run the process; history records ExecStarted with its pid, or, when the shim
        cannot start it, its end (255, the reason in the cause) before the error is raised."""
        failure: Exception | None = None
        async with self._recorder.editing_incarnation(self._task) as task:
            try:
                pid = await self._client.start(self.task_id, self.id)
            except BaseException as exc:
                await bounded_cleanup(self._client.delete(self.task_id, self.id))
                if not isinstance(exc, Exception):
                    raise  # cancelled: the caller's cleanup (or reconciliation) tells the rest
                failure = exc
                # The command's own cause (the Start RPC's reply), with why it failed.
                cause = dataclasses.replace(self._cause(), detail=f"did not start: {exc}")
                task.observe_exec_not_started(self.id, now(), cause)
            else:
                task.observe_exec_started(self.id, pid, self._cause())
        if failure is not None:
            raise failure
        crash_point("exec.started")
        self.pid = pid
        return pid

    async def run(self) -> Exit:
        """Start the process and wait for it; it is removed from the shim whatever happens."""
        try:
            await self.start()
            return await self.wait()
        finally:
            await self.delete()

    async def wait(self) -> Exit:
        """Block until the process exits; history records ExecExited once (the shim's
        /tasks/exit says the same, and whichever comes second is not news)."""
        exit_ = await self._client.wait(self.task_id, self.id)
        if self.pid is not None:
            async with self._recorder.editing_incarnation(self._task) as task:
                task.observe_exec_exit(
                    self.id, exit_.status, exit_.exited_at,
                    self._recorder.causes.shim_event("/tasks/exit"),
                )  # fmt: skip
        return exit_

    async def kill(self, signal: int) -> None:
        await self._client.kill(self.task_id, signal, exec_id=self.id)

    async def state(self) -> ProcessState:
        return await self._client.state(self.task_id, self.id)

    async def close_io(self) -> None:
        """Close the process's stdin, so that it reads EOF."""
        await self._client.close_io(self.task_id, self.id)

    async def resize_pty(self, width: int, height: int) -> None:
        await self._client.resize_pty(self.task_id, width, height, self.id)

    async def delete(self) -> Exit | None:
        """Remove the exited process from the shim (bounded: it is a cleanup step)."""
        return await bounded_cleanup(self._client.delete(self.task_id, self.id))
