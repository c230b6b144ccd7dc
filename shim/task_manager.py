"""TaskManager wraps the shims' Task services with the task histories and their read model.

Every operation is a complete step: talk to the shim, then append what happened to the
task's history; reads go through the projection after reconciling it with reality, so a
task whose process exited while nobody listened is never shown as running.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable
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
from domain.values import Bundle, Cause, Exit, State, Status
from shim import DEFAULT_RUNTIME
from shim.bundle import load_bundle, new_bundle, remove_bundle, working_bundle
from shim.ports import (
    RuncOptions,
    ShimEvent,
    Stdio,
    TaskExitEvent,
    TaskLocks,
    TaskStore,
    TaskView,
)
from shim.process_spec import exec_process
from shim.reconcile import Reconciler
from shim.recorder import TaskRecorder
from shim.shim_manager import ShimManager, ShimProcess, bounded_cleanup

logger = logging.getLogger(__name__)



class TaskManager:
    """Creates, starts, kills, waits for and deletes tasks; serves their states."""

    def __init__(
        self,
        shims: ShimManager,
        store: TaskStore,
        view: TaskView,
        locks: TaskLocks,
        *,
        namespace: str,
        cause: Callable[[], Cause],
    ) -> None:
        self.namespace = validate_identifier("namespace", namespace)
        self._shims = shims
        self._store = store
        self._view = view
        self._cause = cause
        self._live: dict[tuple[str, str], ShimProcess] = {}
        # One step at a time per task, across processes: a shim's exit event must not be
        # recorded between a Start RPC and the Started it caused.
        self._locks = locks
        self._recorder = TaskRecorder(store, locks)
        self._reconciler = Reconciler(
            shims, self._recorder, locks, store, connect=self._shim, forget=self._forget
        )

    @property
    def _state_dir(self) -> Path:
        return self._shims.config.state

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
            bundle = new_bundle(self._state_dir, self.namespace, task_id, user_bundle)
            async with AsyncExitStack() as undo:
                undo.callback(remove_bundle, bundle)
                shim = await self._shims.start(bundle, runtime)
                undo.push_async_callback(self._reconciler.discard_shim, shim)
                config = self._shims.config
                options = RuncOptions(root=str(config.runc_root), binary_name=config.runc_binary)
                pid = await shim.client.create(task_id, bundle.path, stdio, options)
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
            pid = await shim.client.start(task_id)
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
        exit_ = await shim.client.wait(task_id)
        async with self._locks.hold(self.namespace, task_id):
            await self._recorder.record_exit(task, exit_, Cause(kind="shim", detail="Wait"))
        return exit_

    async def exec(
        self,
        task_id: str,
        args: list[str],
        *,
        env: list[str] | None = None,
        cwd: str | None = None,
        stdio: Stdio | None = None,
    ) -> Exit:
        """Run another process in a running task and wait for it; history records its steps.

        The process starts from the task's own (user, env, cwd, capabilities) in its
        config.json, with ``args``, extra ``env`` entries and ``cwd`` on top.
        """
        if not args:
            raise InvalidArgumentError("exec needs a command to run")
        key = (self.namespace, task_id)
        exec_id = f"exec-{secrets.token_hex(4)}"
        await self.reconcile(await self._live_task(task_id))  # it may have exited unheard
        async with self._locks.hold(*key):
            task = await self._live_task(task_id)
            cause = self._cause()
            task.add_exec(exec_id, cause)  # the guard: only a running task runs an exec
            process = exec_process(self._bundle(task), args, env or [], cwd)
            shim = await self._shim(task)
            await shim.client.exec(task_id, exec_id, process, stdio or Stdio())
            await self._recorder.record(key, lambda t: t.add_exec(exec_id, cause))
            try:
                pid = await shim.client.start(task_id, exec_id)
            except BaseException:
                await bounded_cleanup(shim.client.delete(task_id, exec_id))
                raise
            await self._recorder.record(key, lambda t: t.start_exec(exec_id, pid, cause))
        exit_ = await shim.client.wait(task_id, exec_id)
        await self._recorder.handle_event(
            TaskExitEvent(self.namespace, task_id, exec_id, pid, exit_.status, exit_.exited_at)
        )
        await bounded_cleanup(shim.client.delete(task_id, exec_id))
        return exit_

    async def delete(self, task_id: str, *, force: bool = False) -> State | None:
        """Remove the task from its shim, stop the shim, remove the bundle, record Deleted.

        An ID with no live history but a working bundle (a create that died half-way)
        has its leftovers removed instead; then there is no state to return.
        """
        key = (self.namespace, task_id)
        try:
            task = await self._live_task(task_id)
        except NotFoundError:
            if await self._reconciler.remove_leftovers(self.namespace, task_id):
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
                await self.resume(task_id)  # frozen processes cannot die until thawed
            await self.kill(task_id, 9, all=True)
            await self.wait(task_id)
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
                    await self._shims.delete(shim)
            remove_bundle(bundle)
            cause = self._cause()
            await self._recorder.record(key, lambda t: t.delete(cause) if t.is_live else None)
        assert final is not None, "a live task always has a row in the view"
        return final.model_copy(update={"status": Status.DELETED})

    # --- reads --------------------------------------------------------------------------

    async def get(self, task_id: str, *, reconcile: bool = True) -> State:
        """The task's state from the projection, after reconciling it with its shim."""
        validate_identifier("task ID", task_id)
        if reconcile:
            task = await self._store.current(self.namespace, task_id)
            if task is not None and task.is_live:
                await self.reconcile(task)
        await self._view.catch_up()
        state = await self._view.get(self.namespace, task_id)
        if state is None:
            raise NotFoundError(f"task {task_id} does not exist in namespace {self.namespace}")
        return state

    async def tasks(self, *, all_namespaces: bool = False) -> list[State]:
        await self._view.catch_up()
        namespace = None if all_namespaces else self.namespace
        changed = False
        for state in await self._view.tasks(namespace):
            if state.status in HAS_PROCESS:
                task = await self._store.current(state.namespace, state.id)
                if task is not None:
                    changed |= await self.reconcile(task)
        if changed:
            await self._view.catch_up()
        return await self._view.tasks(namespace)

    async def history(self, task_id: str) -> list[Any]:
        """Every event of every incarnation of the ID, oldest first."""
        validate_identifier("task ID", task_id)
        events = await self._store.history(self.namespace, task_id)
        if not events:
            raise NotFoundError(f"task {task_id} has no history in namespace {self.namespace}")
        return events

    async def shim(self, task_id: str) -> ShimProcess:
        """The shim serving a live task (its pid, bundle and Task client)."""
        return await self._shim(await self._live_task(task_id))

    # --- facts from outside -------------------------------------------------------------

    async def reconcile(self, task: Task) -> bool:
        """Record an exit that happened while nobody listened; True if anything was recorded."""
        return await self._reconciler.reconcile(task)

    async def handle_event(self, event: ShimEvent) -> None:
        """A shim's event, from the sink: recorded once, whoever heard it first."""
        await self._recorder.handle_event(event)

    async def _live_task(self, task_id: str) -> Task:
        validate_identifier("task ID", task_id)
        task = await self._store.current(self.namespace, task_id)
        if task is None or not task.is_live:
            raise NotFoundError(f"task {task_id} does not exist in namespace {self.namespace}")
        return task

    def _log_stdio(self, task_id: str, incarnation: int) -> Stdio:
        """stdout and stderr into the task's log file (the shim creates it), or /dev/null."""
        path = self._shims.config.log_file(self.namespace, task_id, incarnation)
        if path is None:
            return Stdio()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # a leftover of a create that failed: start afresh
        return Stdio(stdout=f"file://{path}", stderr=f"file://{path}")

    async def log_path(self, task_id: str) -> Path:
        """The log of the ID's latest incarnation, live or deleted."""
        validate_identifier("task ID", task_id)
        task = await self._store.current(self.namespace, task_id)
        if task is None:
            raise NotFoundError(f"task {task_id} does not exist in namespace {self.namespace}")
        path = self._shims.config.log_file(task.namespace, task.task_id, task.incarnation)
        if path is None or not path.exists():
            raise NotFoundError(
                f"task {task_id} has no log: its output went to a terminal (run in the "
                "foreground) or nowhere"
            )
        return path

    def _forget(self, task: Task) -> None:
        """Drop a cached connection to a shim that turned out to be gone."""
        self._live.pop((task.namespace, task.task_id), None)

    def _bundle(self, task: Task) -> Bundle:
        """The task's working bundle (Created records the user's bundle, as runc shows it)."""
        return working_bundle(self._state_dir, task.namespace, task.task_id)

    async def _shim(self, task: Task) -> ShimProcess:
        key = (task.namespace, task.task_id)
        shim = self._live.get(key)
        if shim is None:
            bundle = load_bundle(self._state_dir, task.namespace, task.task_id)
            if bundle is None:
                raise UnavailableError(f"task {task.task_id} has no bundle in the state dir")
            shim = await self._shims.get(bundle, task.runtime)
            self._live[key] = shim
        return shim

    async def aclose(self) -> None:
        """Drop the connections to shims; the shims and their tasks keep running."""
        for shim in self._live.values():
            await shim.client.aclose()
        self._live.clear()
