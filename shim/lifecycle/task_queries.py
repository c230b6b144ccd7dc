"""What TaskManager reads: states, listings and histories, each after reconciling.

Reads go through the projection after reconciling it with reality, so a task whose
process exited while nobody listened is never shown as running. They show this owner's
tasks (ManagerConfig.owner) unless asked for another node's (Whose); only this owner's
are reconciled: another node's task is that node's to look after. Histories span every
owner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from domain.errors import NotFoundError
from domain.identifiers import validate_identifier
from domain.task import HAS_PROCESS, Task
from domain.values import State, Whose
from shim.lifecycle.connections import ShimConnections
from shim.lifecycle.shim_manager import ManagerConfig, ShimProcess
from shim.ports import ShimClient, TaskStore, TaskView
from shim.recording.recorder import TaskRecorder
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
        recorder: TaskRecorder,
    ) -> None:
        self.namespace = namespace
        self._store = store
        self._view = view
        self._reconciler = reconciler
        self._connections = connections
        self._config = config
        self._recorder = recorder

    async def client(self, task_id: str, missing: str | None = None) -> ShimClient:
        """The live task's shim client; with ``missing``, only while it has a process."""
        task = await self.live_task(task_id)
        if missing is not None:
            task.require_process(missing)
        return (await self._connections.connect(task)).client

    async def own(self, namespace: str, task_id: str) -> Task | None:
        """This owner's latest incarnation of the ID (None: it has none)."""
        _, task = await self._store.latest_owned(namespace, task_id, self._recorder.owner)
        return task

    @property
    def mine(self) -> Whose:
        """This owner's tasks: what every read shows unless told otherwise."""
        return Whose.owner(self._config.owner)

    async def get(
        self, task_id: str, *, reconcile: bool = True, whose: Whose | None = None
    ) -> State:
        """The task's state from the projection, after reconciling it with its shim."""
        validate_identifier("task ID", task_id)
        whose = whose or self.mine
        if reconcile:
            task = await self.own(self.namespace, task_id)
            if task is not None and task.is_live:
                await self._reconciler.reconcile(task)
        await self._view.catch_up()
        state = await self._view.get(self.namespace, task_id, whose)
        if state is None:
            raise await self._recorder.missing(self.namespace, task_id)
        return state

    async def tasks(
        self, *, all_namespaces: bool = False, whose: Whose | None = None
    ) -> list[State]:
        """Live tasks of the namespace (or all), of ``whose`` (default: this owner's)."""
        await self._view.catch_up()
        namespace = None if all_namespaces else self.namespace
        whose = whose or self.mine
        owner = self._config.owner
        changed = False
        for state in await self._view.tasks(namespace, whose):
            if state.status in HAS_PROCESS and owner.owns(state.node, state.state_dir):
                task = await self._store.incarnation(state.namespace, state.id, state.incarnation)
                if task is not None:
                    changed |= await self._reconciler.reconcile(task)
                    # Another process may have recorded an exit since the catch-up above:
                    # the store is ahead of the view, which must be read again.
                    changed |= (task.status, task.incarnation) != (state.status, state.incarnation)
        if changed:
            await self._view.catch_up()
        return await self._view.tasks(namespace, whose)

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
        task = await self.own(self.namespace, task_id)
        if task is None:
            raise await self._recorder.missing(self.namespace, task_id)
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
        known = [(s.namespace, s.id) for s in await self._view.tasks(namespace, self.mine)]
        report = await self._reconciler.scan(known, namespace)
        await self._view.catch_up()
        return report

    async def live_task(self, task_id: str) -> Task:
        """This owner's latest incarnation, if it is live; NotFoundError otherwise (an
        OwnedElsewhereError naming the owner if another one's runs)."""
        validate_identifier("task ID", task_id)
        task = await self.own(self.namespace, task_id)
        if task is None or not task.is_live:
            raise await self._recorder.missing(self.namespace, task_id)
        return task
