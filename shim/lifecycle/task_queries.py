"""What TaskManager reads: states, listings and histories, each after reconciling.

Reads go through the projection after reconciling it with reality, so a task whose
process exited while nobody listened is never shown as running.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from domain.errors import NotFoundError
from domain.identifiers import validate_identifier
from domain.task import HAS_PROCESS, Task
from domain.values import State
from shim.lifecycle.connections import ShimConnections
from shim.lifecycle.shim_manager import ManagerConfig, ShimProcess
from shim.ports import TaskStore, TaskView
from shim.recovery.reconcile import Reconciler
from shim.recovery.report import Reconciliation


class TaskQueries:
    """The reads of one namespace's tasks."""

    def __init__(
        self,
        namespace: str,
        *,
        store: TaskStore,
        view: TaskView,
        reconciler: Reconciler,
        connections: ShimConnections,
        config: ManagerConfig,
    ) -> None:
        self.namespace = namespace
        self._store = store
        self._view = view
        self._reconciler = reconciler
        self._connections = connections
        self._config = config

    async def get(self, task_id: str, *, reconcile: bool = True) -> State:
        """The task's state from the projection, after reconciling it with its shim."""
        validate_identifier("task ID", task_id)
        if reconcile:
            task = await self._store.current(self.namespace, task_id)
            if task is not None and task.is_live:
                await self._reconciler.reconcile(task)
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
                    changed |= await self._reconciler.reconcile(task)
                    # Another process may have recorded an exit since the catch-up above:
                    # the store is ahead of the view, which must be read again.
                    changed |= (task.status, task.incarnation) != (state.status, state.incarnation)
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
        return await self._connections.connect(await self.live_task(task_id))

    async def log_path(self, task_id: str) -> Path:
        """The log of the ID's latest incarnation, live or deleted."""
        validate_identifier("task ID", task_id)
        task = await self._store.current(self.namespace, task_id)
        if task is None:
            raise NotFoundError(f"task {task_id} does not exist in namespace {self.namespace}")
        path = self._config.log_file(task.namespace, task.task_id, task.incarnation)
        if path is None or not path.exists():
            raise NotFoundError(
                f"task {task_id} has no log: its output went to a terminal (run in the "
                "foreground) or nowhere"
            )
        return path

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

    async def live_task(self, task_id: str) -> Task:
        """The ID's latest incarnation, if it is live; NotFoundError otherwise."""
        validate_identifier("task ID", task_id)
        task = await self._store.current(self.namespace, task_id)
        if task is None or not task.is_live:
            raise NotFoundError(f"task {task_id} does not exist in namespace {self.namespace}")
        return task
