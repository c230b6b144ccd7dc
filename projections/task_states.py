"""The task-states read model: one State row per live task incarnation.

It serves TaskManager.get / TaskManager.tasks, and so `state` and `list`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import aiosqlite

from domain.task import Task
from domain.values import State, Status
from projections.view import View

_SCHEMA = """
CREATE TABLE IF NOT EXISTS task_states (
    namespace TEXT NOT NULL,
    id TEXT NOT NULL,
    originator TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (namespace, id)
);
CREATE INDEX IF NOT EXISTS task_states_status ON task_states (namespace, status);
"""


def evolve(state: State | None, event: Any) -> State | None:
    """The next State of a task incarnation after one of its events (None once deleted).

    Pure, so the same function serves the live view and a from-scratch replay.
    """
    if isinstance(event, Task.Created):
        return State(
            id=event.task_id,
            namespace=event.namespace,
            incarnation=event.incarnation,
            pid=event.pid,
            status=Status.CREATED,
            bundle=event.bundle,
            created=event.timestamp,
        )
    if state is None:
        return None
    if isinstance(event, Task.Started):
        return state.model_copy(
            update={"pid": event.pid, "status": Status.RUNNING, "started": event.timestamp}
        )
    if isinstance(event, Task.Exited):
        return state.model_copy(
            update={
                "status": Status.STOPPED,
                "exit_status": event.exit_status,
                "exited_at": event.exited_at,
            }
        )
    if isinstance(event, Task.Paused):
        return state.model_copy(update={"status": Status.PAUSED})
    if isinstance(event, Task.Resumed):
        return state.model_copy(update={"status": Status.RUNNING})
    if isinstance(event, Task.Deleted):
        return None
    return state  # audit events leave the state as it was


def replay(events: Iterable[Any]) -> dict[tuple[str, str], State]:
    """Fold a whole history in memory: what the view must equal."""
    keys: dict[Any, tuple[str, str]] = {}
    states: dict[tuple[str, str], State] = {}
    for event in events:
        if isinstance(event, Task.Created):
            keys[event.originator_id] = (event.namespace, event.task_id)
        key = keys.get(event.originator_id)
        if key is None:
            continue
        new = evolve(states.get(key), event)
        if new is None:
            states.pop(key, None)
        else:
            states[key] = new
    return states


class TaskStatesView(View):
    """Serves TaskManager.get / TaskManager.tasks."""

    name = "task_states"
    schema = _SCHEMA

    async def apply(self, db: aiosqlite.Connection, position: int, event: Any) -> None:
        if isinstance(event, Task.Created):
            await self._write(db, str(event.originator_id), evolve(None, event))
            return
        # Only the live incarnation has a row; events of deleted ones change nothing.
        async with db.execute(
            "SELECT state FROM task_states WHERE originator = ?", (str(event.originator_id),)
        ) as cursor:
            row = await cursor.fetchone()
        if row is not None:
            current = State.model_validate_json(row[0])
            await self._write(db, str(event.originator_id), evolve(current, event))

    async def _write(
        self,
        db: aiosqlite.Connection,
        originator: str,
        state: State | None,
    ) -> None:
        if state is None:
            await db.execute("DELETE FROM task_states WHERE originator = ?", (originator,))
            return
        await db.execute(
            "INSERT INTO task_states (namespace, id, originator, status, state) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (namespace, id) DO UPDATE SET "
            "originator = excluded.originator, status = excluded.status, state = excluded.state",
            (state.namespace, state.id, originator, state.status.value, state.model_dump_json()),
        )

    # --- the port shim.ports.TaskView ---------------------------------------------------

    async def get(self, namespace: str, task_id: str) -> State | None:
        db = await self.connection()
        async with db.execute(
            "SELECT state FROM task_states WHERE namespace = ? AND id = ?", (namespace, task_id)
        ) as cursor:
            row = await cursor.fetchone()
        return State.model_validate_json(row[0]) if row else None

    async def tasks(self, namespace: str | None = None) -> list[State]:
        db = await self.connection()
        if namespace is None:
            query, args = "SELECT state FROM task_states ORDER BY namespace, id", ()
        else:
            query = "SELECT state FROM task_states WHERE namespace = ? ORDER BY id"
            args = (namespace,)
        async with db.execute(query, args) as cursor:
            return [State.model_validate_json(row[0]) async for row in cursor]
