"""TaskManager wraps the shims' Task services with the task histories and their read model.

Every operation is a complete step: talk to the shim, then append what happened to the
task's history; reads go through the projection after reconciling it with reality, so a
task whose process exited while nobody listened is never shown as running.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from domain.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    InvalidTransitionError,
    NotFoundError,
    UnavailableError,
)
from domain.identifiers import validate_identifier
from domain.task import HAS_PROCESS, Task
from domain.values import Cause, Exit, State, Status
from shim import DEFAULT_RUNTIME
from shim.bundle import new_bundle, remove_bundle
from shim.crash_points import crash_point
from shim.exec_handle import ExecHandle
from shim.ports import (
    RuncOptions,
    Stdio,
    TaskStats,
)
from shim.process_spec import exec_process
from shim.task_access import TaskAccess
from shim.task_handle import TaskHandle

logger = logging.getLogger(__name__)


class TaskManager(TaskAccess):
    """Creates, starts, kills, waits for and deletes tasks; serves their states."""

    def task(self, task_id: str) -> TaskHandle:
        """A handle on one task: every Task operation without repeating its ID."""
        return TaskHandle(self, validate_identifier("task ID", task_id))

    # --- lifecycle ----------------------------------------------------------------------

    async def create(
        self,
        task_id: str,
        user_bundle: Path,
        *,
        runtime: str = DEFAULT_RUNTIME,
        stdio: Stdio | None = None,
    ) -> State:
        """Make the working bundle, start a shim, create the task in it, record Created."""
        validate_identifier("task ID", task_id)
        key = (self.namespace, task_id)
        async with self._locks.hold(*key):
            previous = await self._store.current(*key)
            if previous is not None and previous.is_live:
                raise AlreadyExistsError(
                    f"task {task_id} already exists in namespace {self.namespace} "
                    f"({previous.status.value})"
                )
            incarnation = previous.incarnation + 1 if previous else 1
            if stdio is None:
                stdio = self._log_stdio(task_id, incarnation)
            bundle = new_bundle(
                self._state_dir, self.namespace, task_id, user_bundle,
                self._shims.config.cgroup_parent,
            )  # fmt: skip
            crash_point("create.bundle-made")
            async with AsyncExitStack() as undo:
                undo.callback(remove_bundle, bundle)
                shim = await self._shims.start(bundle, runtime)
                crash_point("create.shim-started")
                undo.push_async_callback(self._reconciler.discard_shim, shim)
                config = self._shims.config
                options = RuncOptions(root=str(config.runc_root), binary_name=config.runc_binary)
                pid = await shim.client.create(task_id, bundle.path, stdio, options)
                crash_point("create.task-created")
                task = Task(
                    namespace=self.namespace,
                    task_id=task_id,
                    incarnation=incarnation,
                    bundle=str(user_bundle.resolve()),
                    pid=pid,
                    runtime=runtime,
                    cause=self._cause(),
                )
                await self._store.save(task)
                undo.pop_all()
                crash_point("create.recorded")
            self._live[key] = shim
        return await self.get(task_id, reconcile=False)

    async def start(self, task_id: str) -> State:
        key = (self.namespace, task_id)
        async with self._locks.hold(*key):
            task = await self._live_task(task_id)
            if task.status is not Status.CREATED:
                raise InvalidTransitionError(
                    f"task {task_id} is {task.status.value}: only a created task can be started"
                )
            shim = await self._shim(task)
            crash_point("start.before-rpc")
            pid = await shim.client.start(task_id)
            crash_point("start.rpc-done")
            await self._recorder.record(key, lambda t: t.start(pid, self._cause()))
        return await self.get(task_id, reconcile=False)

    async def kill(self, task_id: str, signal: int, *, all: bool = False) -> None:
        """Signal the task's init (or, with ``all``, every process); record who did."""
        key = (self.namespace, task_id)
        async with self._locks.hold(*key):  # so that Killed comes before the Exited it causes
            task = await self._live_task(task_id)
            if task.status not in HAS_PROCESS:
                raise FailedPreconditionError(
                    f"task {task_id} is {task.status.value}: nothing to kill"
                )
            shim = await self._shim(task)
            try:
                await shim.client.kill(task_id, signal, all)
            except NotFoundError:
                raise FailedPreconditionError(f"task {task_id} is not running") from None
            crash_point("kill.rpc-done")
            cause = self._cause()
            await self._recorder.record(
                key,
                lambda t: t.record_kill(signal, all, cause) if t.status in HAS_PROCESS else None,
            )

    async def pids(self, task_id: str) -> list[tuple[int, str]]:
        """The task's processes: (pid, exec id or "" for the init's tree)."""
        task = await self._live_task(task_id)
        if task.status not in HAS_PROCESS:
            raise FailedPreconditionError(f"task {task_id} is {task.status.value}: no processes")
        return await (await self._shim(task)).client.pids(task_id)

    async def pause(self, task_id: str) -> State:
        """Freeze every process of a running task (runc's freezer cgroup)."""
        return await self._pause_or_resume(task_id, pause=True)

    async def resume(self, task_id: str) -> State:
        return await self._pause_or_resume(task_id, pause=False)

    async def _pause_or_resume(self, task_id: str, *, pause: bool) -> State:
        key = (self.namespace, task_id)
        async with self._locks.hold(*key):
            task = await self._live_task(task_id)
            cause = self._cause()
            (task.pause if pause else task.resume)(cause)  # the guard, before touching the shim
            shim = await self._shim(task)
            await (shim.client.pause(task_id) if pause else shim.client.resume(task_id))
            wanted = Status.RUNNING if pause else Status.PAUSED
            await self._recorder.record(
                key,
                lambda t: (t.pause if pause else t.resume)(cause) if t.status is wanted else None,
            )
        return await self.get(task_id, reconcile=False)

    async def wait(self, task_id: str) -> Exit:
        """Block until the task's process exits; record and return its exit."""
        task = await self._live_task(task_id)
        if task.exit is not None:
            return task.exit
        shim = await self._shim(task)
        try:
            exit_ = await shim.client.wait(task_id)
        except UnavailableError:
            # The shim died under us: reconciliation cleans up after it and records
            # ShimLost and Exited(255); the caller gets that exit, not a dropped connection.
            await self.reconcile(task)
            fresh = await self._store.current(self.namespace, task_id)
            if fresh is not None and fresh.incarnation == task.incarnation and fresh.exit:
                return fresh.exit
            raise
        async with self._locks.hold(self.namespace, task_id):
            await self._recorder.record_exit(task, exit_, Cause(kind="shim", detail="Wait"))
        return exit_

    async def add_exec(
        self,
        task_id: str,
        args: list[str],
        *,
        env: list[str] | None = None,
        cwd: str | None = None,
        stdio: Stdio | None = None,
        exec_id: str | None = None,
    ) -> ExecHandle:
        """Register another process in a running task (ExecAdded); start it with the handle.

        The process starts from the task's own (user, env, cwd, capabilities) in its
        config.json, with ``args``, extra ``env`` entries and ``cwd`` on top.
        """
        if not args:
            raise InvalidArgumentError("exec needs a command to run")
        exec_id = validate_identifier("exec ID", exec_id or f"exec-{secrets.token_hex(4)}")
        key = (self.namespace, task_id)
        await self.reconcile(await self._live_task(task_id))  # it may have exited unheard
        async with self._locks.hold(*key):
            task = await self._live_task(task_id)
            cause = self._cause()
            task.add_exec(exec_id, cause)  # the guard: only a running task runs an exec
            process = exec_process(self._bundle(task), args, env or [], cwd)
            shim = await self._shim(task)
            await shim.client.exec(task_id, exec_id, process, stdio or Stdio())
            await self._recorder.record(
                key, lambda t: t.add_exec(exec_id, cause) if exec_id not in t.execs else None
            )
        return ExecHandle(
            namespace=self.namespace,
            task_id=task_id,
            exec_id=exec_id,
            client=shim.client,
            recorder=self._recorder,
            locks=self._locks,
            cause=self._cause,
        )

    async def exec(
        self,
        task_id: str,
        args: list[str],
        *,
        env: list[str] | None = None,
        cwd: str | None = None,
        stdio: Stdio | None = None,
    ) -> Exit:
        """Run another process in a running task and wait for it; history records its steps."""
        process = await self.add_exec(task_id, args, env=env, cwd=cwd, stdio=stdio)
        try:
            await process.start()
            return await process.wait()
        finally:
            await process.delete()

    # --- resources and images -----------------------------------------------------------

    async def stats(self, task_id: str) -> TaskStats:
        """The task's cgroup counters: pids, CPU time, memory."""
        task = await self._live_task(task_id)
        if task.status not in HAS_PROCESS:
            raise FailedPreconditionError(f"task {task_id} is {task.status.value}: no stats")
        return await (await self._shim(task)).client.stats(task_id)

    async def update(self, task_id: str, resources: dict[str, Any]) -> None:
        """Apply new cgroup limits (OCI LinuxResources) to a task; history records them."""
        if not isinstance(resources, dict):
            raise InvalidArgumentError("resources must be a JSON object (OCI LinuxResources)")
        key = (self.namespace, task_id)
        async with self._locks.hold(*key):
            task = await self._live_task(task_id)
            cause = self._cause()
            task.record_update(resources, cause)  # the guard
            await (await self._shim(task)).client.update(task_id, resources)
            await self._recorder.record(
                key,
                lambda t: t.record_update(resources, cause) if t.status in HAS_PROCESS else None,
            )

    async def checkpoint(self, task_id: str, image_path: Path, *, exit: bool = False) -> None:
        """Dump the task with CRIU (runc checkpoint) into ``image_path``; history records it.

        With ``exit`` the task stops afterwards, as `runc checkpoint` does by default; its
        exit is recorded like any other.
        """
        key = (self.namespace, task_id)
        image = image_path.absolute()
        async with self._locks.hold(*key):
            task = await self._live_task(task_id)
            cause = self._cause()
            task.record_checkpoint(str(image), exit, cause)  # the guard
            image.mkdir(mode=0o700, parents=True, exist_ok=True)
            work = Path(self._bundle(task).path) / "criu-work"
            await (await self._shim(task)).client.checkpoint(
                task_id, str(image), exit=exit, work_path=str(work)
            )
            await self._recorder.record(
                key,
                lambda t: (
                    t.record_checkpoint(str(image), exit, cause)
                    if t.status in (Status.RUNNING, Status.PAUSED)
                    and str(image) not in t.checkpoints
                    else None
                ),
            )

    async def close_io(self, task_id: str) -> None:
        """Close the init's stdin, so that it reads EOF."""
        task = await self._live_task(task_id)
        await (await self._shim(task)).client.close_io(task_id)

    async def resize_pty(self, task_id: str, width: int, height: int) -> None:
        task = await self._live_task(task_id)
        await (await self._shim(task)).client.resize_pty(task_id, width, height)

    async def delete(self, task_id: str, *, force: bool = False) -> State | None:
        """Remove the task from its shim, stop the shim, remove the bundle, record Deleted.

        An ID with no live history but a working bundle (a create that died half-way)
        has its leftovers removed instead; then there is no state to return.
        """
        key = (self.namespace, task_id)
        try:
            task = await self._live_task(task_id)
        except NotFoundError:
            if await self._reconciler.remove_leftovers(self.namespace, task_id, force=force):
                return None
            raise
        if task.status in HAS_PROCESS and await self.reconcile(task):
            task = await self._live_task(task_id)  # it had exited while nobody listened
        if task.status in (Status.RUNNING, Status.PAUSED):
            if not force:
                raise InvalidTransitionError(
                    f"task {task_id} is {task.status.value}: kill it first, or use delete --force"
                )
            if task.status is Status.PAUSED:
                with contextlib.suppress(FailedPreconditionError):  # resumed meanwhile
                    await self.resume(task_id)  # frozen processes cannot die until thawed
            # It may die of itself (or of another command's kill) after the check above.
            with contextlib.suppress(FailedPreconditionError):
                await self.kill(task_id, 9, all=True)
            await self.wait(task_id)
            crash_point("delete.process-stopped")
        elif task.status is Status.CREATED:
            # runc takes about 2 s to delete a container whose init still waits to start;
            # killed first, it goes at once. History says so: Killed, Exited(137).
            with contextlib.suppress(FailedPreconditionError):
                await self.kill(task_id, 9)
            await self.wait(task_id)
        async with self._locks.hold(*key):
            task = await self._live_task(task_id)
            if task.status in (Status.RUNNING, Status.PAUSED):
                raise InvalidTransitionError(f"task {task_id} is {task.status.value} again; retry")
            await self._view.catch_up()
            final = await self._view.get(self.namespace, task_id)
            bundle = self._bundle(task)
            try:
                shim = await self._shim(task)
            except UnavailableError:
                await self._reconciler.cleanup_dead(task, bundle)
            else:
                self._live.pop(key, None)
                try:
                    await shim.client.delete(task_id)
                except (UnavailableError, NotFoundError) as exc:
                    logger.info("Delete of %s failed (%s): shim treated as dead", task_id, exc)
                    await self._shims.delete(shim)
                    await self._reconciler.cleanup_dead(task, bundle)
                else:
                    crash_point("delete.rpc-done")
                    await self._shims.delete(shim)
            crash_point("delete.shim-gone")
            remove_bundle(bundle)
            crash_point("delete.bundle-removed")
            cause = self._cause()
            await self._recorder.record(key, lambda t: t.delete(cause) if t.is_live else None)
        assert final is not None, "a live task always has a row in the view"
        return final.model_copy(update={"status": Status.DELETED})

    def _log_stdio(self, task_id: str, incarnation: int) -> Stdio:
        """stdout and stderr into the task's log file (the shim creates it), or /dev/null."""
        path = self._shims.config.log_file(self.namespace, task_id, incarnation)
        if path is None:
            return Stdio()
        path.parent.parent.mkdir(mode=0o700, exist_ok=True)  # the log dir exists: bootstrap
        path.parent.mkdir(mode=0o700, exist_ok=True)
        path.unlink(missing_ok=True)  # a leftover of a create that failed: start afresh
        return Stdio(stdout=f"file://{path}", stderr=f"file://{path}")
