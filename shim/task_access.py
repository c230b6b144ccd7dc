"""What every TaskManager operation stands on: finding a task, its shim, and its state.

Reads go through the projection after reconciling it with reality, so a task whose
process exited while nobody listened is never shown as running. The operations that
change a task are in shim/task_manager.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from domain.errors import InvalidArgumentError, NotFoundError, UnavailableError
from domain.identifiers import validate_identifier
from domain.task import HAS_PROCESS, Task
from domain.values import Bundle, Cause, State, Status
from shim.bundle import NOT_NAMESPACES, load_bundle, working_bundle
from shim.ports import ShimEvent, TaskLocks, TaskStore, TaskView
from shim.reconcile import Reconciler
from shim.reconcile_report import Reconciliation
from shim.recorder import TaskRecorder
from shim.shim_manager import ShimManager, ShimProcess

logger = logging.getLogger(__name__)


class TaskAccess:
    """A namespace's view of the tasks: their records, their shims, their states."""

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
        if namespace in NOT_NAMESPACES:
            raise InvalidArgumentError(
                f"namespace {namespace} is reserved: the state dir keeps its {namespace}/ there"
            )
        self._shims = shims
        self._store = store
        self._view = view
        self._cause = cause
        self._live: dict[tuple[str, str], ShimProcess] = {}
        # One step at a time per task, across processes: a shim's exit event must not be
        # recorded between a Start RPC and the Started it caused.
        self._locks = locks
        self._recorder = TaskRecorder(store, locks, probe=self._probe)
        self._reconciler = Reconciler(
            shims, self._recorder, locks, store, connect=self._shim, forget=self._forget
        )

    @property
    def _state_dir(self) -> Path:
        return self._shims.config.state

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

    async def current(self, namespace: str, task_id: str) -> Task | None:
        """The latest incarnation's record, straight from the store (any namespace)."""
        return await self._store.current(namespace, task_id)

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

    async def reconcile_all(self, *, all_namespaces: bool = False) -> list[Reconciliation]:
        """Compare every live record and every working bundle with reality (``reconcile``).

        What is recorded, removed or adopted is said in the result, one entry per task.
        """
        await self._view.catch_up()
        namespace = None if all_namespaces else self.namespace
        known = [(s.namespace, s.id) for s in await self._view.tasks(namespace)]
        report = await self._reconciler.scan(known, namespace)
        await self._view.catch_up()
        return report

    async def handle_event(self, event: ShimEvent) -> None:
        """A shim's event, from the sink: recorded once, whoever heard it first."""
        await self._recorder.handle_event(event)

    async def _live_task(self, task_id: str) -> Task:
        validate_identifier("task ID", task_id)
        task = await self._store.current(self.namespace, task_id)
        if task is None or not task.is_live:
            raise NotFoundError(f"task {task_id} does not exist in namespace {self.namespace}")
        return task

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

    async def _probe(self, task: Task) -> Status | None:
        """What the shim says the task's init is doing, or None if it cannot be asked."""
        try:
            return (await (await self._shim(task)).client.state(task.task_id)).status
        except (UnavailableError, NotFoundError, OSError):
            return None

    def _forget(self, task: Task) -> None:
        """Drop a cached connection to a shim that turned out to be gone."""
        self._live.pop((task.namespace, task.task_id), None)

    def _bundle(self, task: Task) -> Bundle:
        """The task's working bundle (Created records the user's bundle, as runc shows it)."""
        return working_bundle(self._state_dir, task.namespace, task.task_id)

    async def _shim(self, task: Task) -> ShimProcess:
        key = (task.namespace, task.task_id)
        shim = self._live.get(key)
        if shim is not None and shim.client.closed:
            # That shim went away (deleted by another command, or dead): never reuse its
            # connection, or a new incarnation's healthy shim would be taken for dead.
            del self._live[key]
            await shim.client.aclose()
            shim = None
        if shim is None:
            bundle = load_bundle(self._state_dir, task.namespace, task.task_id)
            if bundle is None:
                raise UnavailableError(f"task {task.task_id} has no bundle in the state dir")
            shim = await self._shims.get(bundle, task.runtime)
            self._live[key] = shim
        return shim

    async def aclose(self) -> None:
        """Drop the connections to shims; the shims and their tasks keep running."""
        live, self._live = list(self._live.values()), {}
        for shim in live:
            await shim.client.aclose()
