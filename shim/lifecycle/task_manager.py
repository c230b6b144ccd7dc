"""TaskManager wraps the shims' Task services with the task histories and their read model.

Every operation is a complete step: check the aggregate's guard, talk to the shim, then
record what happened, all inside one ``recorder.editing`` block, so the step holds the
task's lock from the guard to the save. Reads go through the projection after
reconciling it with reality, so a task whose process exited while nobody listened is
never shown as running.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
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
from domain.state_dir import RESERVED
from domain.task import Task
from domain.values import Cause, Exit, State, Status, Whose
from shim import DEFAULT_RUNTIME
from shim.crash_points import crash_point
from shim.lifecycle.bundle import Bundles, remove_bundle
from shim.lifecycle.connections import ShimConnections
from shim.lifecycle.console import ConsoleSocket
from shim.lifecycle.exec_handle import ExecHandle
from shim.lifecycle.process_spec import ProcessChanges, exec_process
from shim.lifecycle.shim_manager import ShimManager, ShimProcess
from shim.lifecycle.task_handle import TaskHandle
from shim.lifecycle.task_queries import TaskQueries
from shim.ports import ShimEvent, Stdio, TaskStats, TaskStore, TaskView
from shim.recording.recorder import TaskRecorder
from shim.recording.shim_events import ShimEventRecorder
from shim.recovery.adoption import BundleAdopter
from shim.recovery.reconcile import Reconciler
from shim.recovery.report import Reconciliation

logger = logging.getLogger(__name__)


class TaskManager:
    """Creates, starts, kills, waits for and deletes the tasks of one namespace."""

    def __init__(
        self,
        *,
        namespace: str,
        shims: ShimManager,
        bundles: Bundles,
        connections: ShimConnections,
        recorder: TaskRecorder,
        shim_events: ShimEventRecorder,
        reconciler: Reconciler,
        adopter: BundleAdopter,
        store: TaskStore,
        view: TaskView,
        cause: Callable[[], Cause],
    ) -> None:
        self.namespace = validate_identifier("namespace", namespace)
        if namespace in RESERVED:
            raise InvalidArgumentError(
                f"namespace {namespace} is reserved: the state dir keeps its {namespace}/ there"
            )
        self._shims = shims
        self._bundles = bundles
        self._connections = connections
        self._recorder = recorder
        self._shim_events = shim_events
        self._reconciler = reconciler
        self._adopter = adopter
        self._store = store
        self._view = view
        self._cause = cause
        self._queries = TaskQueries(
            self.namespace, store=store, view=view, reconciler=reconciler,
            connections=connections, config=shims.config, recorder=recorder,
        )  # fmt: skip

    def in_namespace(self, namespace: str) -> TaskManager:
        """The same components acting on another namespace's tasks."""
        return TaskManager(
            namespace=namespace, shims=self._shims, bundles=self._bundles,
            connections=self._connections, recorder=self._recorder,
            shim_events=self._shim_events, reconciler=self._reconciler,
            adopter=self._adopter, store=self._store, view=self._view, cause=self._cause,
        )  # fmt: skip

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
        console: ConsoleSocket | None = None,
    ) -> State:
        """Make the working bundle, start a shim, create the task in it, record Created.

        ``console``: its pty goes to that socket (runc's --console-socket), output to the log.
        """
        validate_identifier("task ID", task_id)
        async with self._recorder.creating(self.namespace, task_id) as new:
            if new.previous is not None and new.previous.is_live:
                raise AlreadyExistsError(
                    f"task {task_id} already exists in namespace {self.namespace} "
                    f"({new.previous.status.value})"
                )
            planned = new.number if stdio is None else None  # None: no log of ours
            stdio = stdio or self._shims.config.log_stdio(
                self.namespace, task_id, new.number, new.previous_number)  # fmt: skip
            bundle = self._bundles.new(self.namespace, task_id, user_bundle,
                                       terminal=stdio.terminal or console is not None)  # fmt: skip
            crash_point("create.bundle-made")
            async with AsyncExitStack() as undo:
                undo.callback(remove_bundle, bundle)  # last: while it is there, a retry cleans
                if console is not None:
                    stdio = console.prepare(bundle, task_id, stdio.stdout.removeprefix("file://"))
                undo.callback(self._bundles.cgroups.release, self.namespace, task_id)
                shim = await self._shims.start(bundle, runtime)
                crash_point("create.shim-started")
                undo.push_async_callback(self._adopter.discard_shim, shim)
                options = self._shims.config.runc_options
                async with self._bundles.cgroups.creating():  # runc makes its cgroup here
                    pid = await shim.client.create(task_id, bundle.path, stdio, options)
                if console is not None:
                    console.check(bundle, task_id)  # the master reached the socket
                crash_point("create.task-created")
                owner, cause = self._recorder.owner, self._cause()
                new.begin(lambda number: Task(
                    namespace=self.namespace, task_id=task_id, incarnation=number,
                    bundle=str(user_bundle.resolve()), pid=pid, runtime=runtime,
                    node=owner.node, state_dir=owner.state_dir, cause=cause,
                ))  # fmt: skip
                task = await new.commit()  # a refusing store undoes the task, as any failure
                undo.pop_all()
            self._connections.remember(shim)
            self._shims.config.move_log(self.namespace, task_id, planned, task.incarnation)
        crash_point("create.recorded")
        return await self.get(task_id, reconcile=False)

    async def start(self, task_id: str) -> State:
        async with self._editing(task_id) as task:
            task.check_start()
            shim = await self._connections.connect(task)
            crash_point("start.before-rpc")
            pid = await shim.client.start(task_id)
            crash_point("start.rpc-done")
            task.start(pid, self._cause())
        return await self.get(task_id, reconcile=False)

    async def kill(self, task_id: str, signal: int, *, all: bool = False) -> None:
        """Signal the task's init (or, with ``all``, every process); record who did.

        Under the task's lock, so that Killed comes before the Exited it causes. A stopped
        record is asked about first: if its shim says the init runs, the exit is retracted.
        Signal 0 (runc's and kill(2)'s probe) only asks whether the process is there: it
        succeeds or fails as a kill would, and records nothing, since nothing happened.
        ``all`` on a stopped task succeeds, as runc's does: what may be left in its cgroup
        gets the signal (the shim runs runc's kill --all), and nothing is recorded, since
        the task's processes are already recorded as gone.
        """
        if (task := await self._live_task(task_id)).status is Status.STOPPED:
            await self._reconciler.reconcile(task, stopped=True)
        async with self._editing(task_id) as task:
            if all and task.status is Status.STOPPED:
                await self._kill_leftovers(task, signal)
                return
            task.require_process("nothing to kill")
            shim = await self._connections.connect(task)
            try:
                await shim.client.kill(task_id, signal, all)
            except NotFoundError:
                raise FailedPreconditionError(f"task {task_id} is not running") from None
            crash_point("kill.rpc-done")
            if signal != 0:
                task.record_kill(signal, all, self._cause())

    async def _kill_leftovers(self, task: Task, signal: int) -> None:
        try:
            shim = await self._connections.connect(task)
            await shim.client.kill(task.task_id, signal, True)
        except (NotFoundError, UnavailableError) as exc:  # no shim, or nothing left there
            logger.debug("kill --all of stopped task %s: %s", task.task_id, exc)

    async def pause(self, task_id: str) -> State:
        """Freeze every process of a running task (runc's freezer cgroup)."""
        async with self._editing(task_id) as task:
            task.check_pause()
            await (await self._connections.connect(task)).client.pause(task_id)
            task.pause(self._cause())
        return await self.get(task_id, reconcile=False)

    async def resume(self, task_id: str) -> State:
        async with self._editing(task_id) as task:
            task.check_resume()
            await (await self._connections.connect(task)).client.resume(task_id)
            task.resume(self._cause())
        return await self.get(task_id, reconcile=False)

    async def wait(self, task_id: str) -> Exit:
        """Block until the task's process exits; record and return its exit."""
        task = await self._live_task(task_id)
        if task.exit is not None:
            return task.exit
        shim = await self._connections.connect(task)
        try:
            exit_ = await shim.client.wait(task_id)
        except UnavailableError:
            # The shim died under us: reconciliation cleans up after it and records
            # ShimLost and Exited(255); the caller gets that exit, not a dropped connection.
            await self.reconcile(task)
            fresh = await self._store.incarnation(self.namespace, task_id, task.incarnation)
            if fresh is not None and fresh.exit is not None:
                return fresh.exit
            raise
        async with self._recorder.editing_incarnation(task) as fresh:
            await self._reconciler.record_exec_exits(fresh)  # what the shim knows, first
            fresh.observe_exit(exit_.status, exit_.exited_at, self._recorder.causes.waited())
        return exit_

    async def delete(self, task_id: str, *, force: bool = False) -> State | None:
        """Remove the task from its shim, stop the shim, remove the bundle, record Deleted.

        An ID with no live history but a working bundle (a create that died half-way)
        has its leftovers removed instead; then there is no state to return.
        """
        try:
            task = await self._live_task(task_id)
        except NotFoundError:
            if await self._adopter.remove_leftovers(self.namespace, task_id, force=force):
                return None
            raise
        # With --force a stopped record is checked too: its shim may say it runs after all.
        if await self._reconciler.reconcile(task, stopped=force):
            task = await self._live_task(task_id)  # it had exited (or not) while unheard
        if task.status in (Status.RUNNING, Status.PAUSED):
            if not force:
                task.check_delete()  # raises: kill it first, or use delete --force
            if task.status is Status.PAUSED:
                with contextlib.suppress(FailedPreconditionError, InvalidTransitionError):
                    await self.resume(task_id)  # frozen processes cannot die until thawed
            # It may die of itself (or of another command's kill) after the check above.
            with contextlib.suppress(FailedPreconditionError):
                await self.kill(task_id, 9, all=True)
            await self._reconciler.end_execs(task)  # their exits before the task's own
            await self.wait(task_id)
            crash_point("delete.process-stopped")
        elif task.status is Status.CREATED:
            # runc takes about 2 s to delete a container whose init still waits to start;
            # killed first, it goes at once. History says so: Killed, Exited(137).
            with contextlib.suppress(FailedPreconditionError):
                await self.kill(task_id, 9)
            await self.wait(task_id)
        async with self._editing(task_id) as task:
            if task.status in (Status.RUNNING, Status.PAUSED):
                raise InvalidTransitionError(f"task {task_id} is {task.status.value} again; retry")
            await self._view.catch_up()
            final = await self._view.get(self.namespace, task_id)
            await self._reconciler.settle_execs(task)
            await self._reconciler.remove_task(task)
            task.observe_deleted(self._cause())
        # SEAM(node-views): one view row per (namespace, ID): it may be another owner's.
        if final is None or final.incarnation != task.incarnation:
            return None
        return final.model_copy(update={"status": Status.DELETED})

    # --- more processes, resources and images -------------------------------------------

    async def add_exec(
        self,
        task_id: str,
        args: list[str],
        *,
        env: list[str] | None = None,
        cwd: str | None = None,
        stdio: Stdio | None = None,
        exec_id: str | None = None,
        user: tuple[int | None, int | None] = (None, None),
        additional_gids: Sequence[int] = (),
        base: Mapping[str, Any] | None = None,
    ) -> ExecHandle:
        """Register another process in a running task (ExecAdded); start it with the handle.

        The process starts from the task's own (user, env, cwd, capabilities) in its
        config.json, or from ``base``, with ``args``, extra ``env`` entries, ``cwd``, the
        ``user``'s (uid, gid) and ``additional_gids`` on top (process_spec.py).
        """
        if not args and base is None:
            raise InvalidArgumentError("exec needs a command to run")
        exec_id = validate_identifier("exec ID", exec_id or f"exec-{secrets.token_hex(4)}")
        await self.reconcile(await self._live_task(task_id))  # it may have exited unheard
        async with self._editing(task_id) as task:
            task.check_add_exec(exec_id)  # only a running task runs an exec
            bundle = self._bundles.working(task.namespace, task.task_id)
            stdio = stdio or Stdio()
            process = exec_process(bundle, ProcessChanges(
                args=args, env=env or [], cwd=cwd, terminal=stdio.terminal, uid=user[0],
                gid=user[1], additional_gids=additional_gids, base=base,
            ))  # fmt: skip
            shim = await self._connections.connect(task)
            await shim.client.exec(task_id, exec_id, process, stdio)
            task.add_exec(exec_id, self._cause())
        return ExecHandle(
            task=task, exec_id=exec_id, client=shim.client, recorder=self._recorder,
            cause=self._cause,
        )  # fmt: skip

    async def exec(self, task_id: str, args: list[str], **options: Any) -> Exit:
        """Run another process in a running task and wait for it (``options`` as add_exec's
        but ``exec_id``); history records its steps."""
        return await (await self.add_exec(task_id, args, **options)).run()

    async def pids(self, task_id: str) -> list[tuple[int, str]]:
        """The task's processes: (pid, exec id or "" for the init's tree)."""
        return await (await self._queries.client(task_id, "no processes")).pids(task_id)

    async def stats(self, task_id: str) -> TaskStats:
        """The task's cgroup counters: pids, CPU time, memory."""
        return await (await self._queries.client(task_id, "no stats")).stats(task_id)

    async def update(self, task_id: str, resources: dict[str, Any]) -> None:
        """Apply new cgroup limits (OCI LinuxResources) to a task; history records them."""
        if not isinstance(resources, dict):
            raise InvalidArgumentError("resources must be a JSON object (OCI LinuxResources)")
        async with self._editing(task_id) as task:
            task.check_update()
            await (await self._connections.connect(task)).client.update(task_id, resources)
            task.record_update(resources, self._cause())

    async def checkpoint(self, task_id: str, image_path: Path, *, exit: bool = False) -> None:
        """Dump the task with CRIU (runc checkpoint) into ``image_path``; history records it.

        With ``exit`` the task stops afterwards, as `runc checkpoint` does by default; its
        exit is recorded like any other.
        """
        image = image_path.absolute()
        async with self._editing(task_id) as task:
            task.check_checkpoint()
            image.mkdir(mode=0o700, parents=True, exist_ok=True)
            work = Path(self._bundles.working(task.namespace, task_id).path) / "criu-work"
            await (await self._connections.connect(task)).client.checkpoint(
                task_id, str(image), exit=exit, work_path=str(work)
            )
            task.observe_checkpoint(str(image), exit, self._cause())

    async def close_io(self, task_id: str) -> None:
        """Close the init's stdin, so that it reads EOF."""
        await (await self._queries.client(task_id)).close_io(task_id)

    async def resize_pty(self, task_id: str, width: int, height: int) -> None:
        await (await self._queries.client(task_id)).resize_pty(task_id, width, height)

    # --- reads (TaskQueries: each after reconciling with the shims) -------------------

    async def get(self, task_id: str, *, reconcile: bool = True, whose: Whose | None = None
                  ) -> State:  # fmt: skip
        return await self._queries.get(task_id, reconcile=reconcile, whose=whose)

    async def tasks(self, *, all_namespaces: bool = False, whose: Whose | None = None
                    ) -> list[State]:  # fmt: skip
        return await self._queries.tasks(all_namespaces=all_namespaces, whose=whose)

    async def current(self, namespace: str, task_id: str) -> Task | None:
        return await self._queries.own(namespace, task_id)  # this owner's, never another's

    async def history(self, task_id: str) -> list[Any]:
        return await self._queries.history(task_id)

    async def shim(self, task_id: str) -> ShimProcess:
        return await self._queries.shim(task_id)

    async def log_path(self, task_id: str) -> Path:
        return await self._queries.log_path(task_id)

    async def reconcile(self, task: Task) -> bool:
        return await self._reconciler.reconcile(task)

    async def reconcile_all(self, *, all_namespaces: bool = False) -> list[Reconciliation]:
        return await self._queries.reconcile_all(all_namespaces=all_namespaces)

    # --- facts from outside -------------------------------------------------------------

    async def handle_event(self, event: ShimEvent) -> None:
        """A shim's event, from the sink: recorded once, whoever heard it first."""
        await self._shim_events.handle_event(event)

    async def aclose(self) -> None:
        """Drop the connections to shims; the shims and their tasks keep running."""
        await self._connections.aclose()

    # --- helpers ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _editing(self, task_id: str) -> AsyncIterator[Task]:
        """The ID's live incarnation, locked and saved by the recorder; NotFound otherwise."""
        validate_identifier("task ID", task_id)
        async with self._recorder.editing(self.namespace, task_id) as task:
            if task is None or not task.is_live:
                raise await self._recorder.missing(self.namespace, task_id)
            yield task

    async def _live_task(self, task_id: str) -> Task:
        return await self._queries.live_task(task_id)
