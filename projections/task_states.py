"""The task-states read model: one State row per live task incarnation.

It serves TaskManager.get / TaskManager.tasks, and so `state` and `list`. Incarnation
numbers are fleet-wide per ID, but each owner (node, state dir) has its own current task
of an ID: node A's live incarnation 1 and node B's live incarnation 2 of ``dup`` are two
rows, so a row is keyed by the ID and its owner.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

import aiosqlite

from domain.events import (
    Created,
    Deleted,
    Exited,
    ExitRetracted,
    Paused,
    Resumed,
    Started,
    TaskEvent,
)
from domain.values import EVERY_NODE, State, Status, Whose
from projections.owner_sql import owners_clause
from projections.records import opened_key
from projections.schemas import TASK_STATES
from projections.view import EventSource, View, rows_for

REPLAY_PAGE = 10_000

_SCHEMA = TASK_STATES

RowKey = tuple[str, str, str, str]  # (namespace, id, node, state dir): one row each


def key_of(state: State) -> RowKey:
    return (state.namespace, state.id, state.node, state.state_dir)


def evolve(state: State | None, event: TaskEvent) -> State | None:
    """The next State of a task incarnation after one of its events (None once deleted).

    Pure, so the same function serves the live view and a from-scratch replay.
    """
    return _next(event, state)


@functools.singledispatch
def _next(event: TaskEvent, state: State | None) -> State | None:
    return state  # audit events leave the state as it was


@_next.register
def _(event: Created, state: State | None) -> State | None:
    return State(
        id=event.task_id,
        namespace=event.namespace,
        incarnation=event.incarnation,
        pid=event.pid,
        status=Status.CREATED,
        bundle=event.bundle,
        created=event.timestamp,
        node=event.node,
        state_dir=event.state_dir,
    )


@_next.register
def _(event: Started, state: State | None) -> State | None:
    if state is None:
        return None
    return state.model_copy(
        update={"pid": event.pid, "status": Status.RUNNING, "started": event.timestamp}
    )


@_next.register
def _(event: Exited, state: State | None) -> State | None:
    if state is None:
        return None
    return state.model_copy(
        update={
            "status": Status.STOPPED,
            "exit_status": event.exit_status,
            "exited_at": event.exited_at,
        }
    )


@_next.register
def _(event: ExitRetracted, state: State | None) -> State | None:
    if state is None:
        return None
    update = {"pid": event.pid, "status": Status(event.status), "exit_status": None,
              "exited_at": None}  # fmt: skip
    return state.model_copy(update=update)


@_next.register
def _(event: Paused, state: State | None) -> State | None:
    return None if state is None else state.model_copy(update={"status": Status.PAUSED})


@_next.register
def _(event: Resumed, state: State | None) -> State | None:
    return None if state is None else state.model_copy(update={"status": Status.RUNNING})


@_next.register
def _(event: Deleted, state: State | None) -> State | None:
    return None


class Replay:
    """Folds events into the live task table, a page at a time if need be."""

    def __init__(self) -> None:
        self.keys: dict[UUID, RowKey] = {}
        self.states: dict[RowKey, State] = {}

    def feed(self, events: Iterable[TaskEvent]) -> None:
        for event in events:
            if (opened := opened_key(event)) is not None:
                self.keys[event.originator_id] = (
                    opened.namespace, opened.id, opened.node, opened.state_dir
                )  # fmt: skip
            key = self.keys.get(event.originator_id)
            if key is None:
                continue
            new = evolve(self.states.get(key), event)
            if new is None:
                self.states.pop(key, None)
            else:
                self.states[key] = new


async def replay_table(
    source: EventSource, *, stop: int | None = None, at: datetime | None = None
) -> dict[RowKey, State]:
    """The live task table after position ``stop`` (default: the head), or as of time ``at``.

    Folded page by page from the events themselves, never from a view.
    """
    stop = await source.head() if stop is None else stop
    folded, after = Replay(), 0
    while after < stop:
        page = await source.read(after, min(REPLAY_PAGE, stop - after))
        if not page:
            break
        folded.feed(e for _, e in page if at is None or e.timestamp <= at)
        after = page[-1][0]
    return folded.states


def replay(events: Iterable[Any]) -> dict[RowKey, State]:
    """Fold a whole history in memory: what the view must equal."""
    folded = Replay()
    folded.feed(events)
    return folded.states


class TaskStatesView(View):
    """Serves TaskManager.get / TaskManager.tasks."""

    name = "task_states"
    schema = _SCHEMA

    async def apply_page(self, db: aiosqlite.Connection, page: list[tuple[int, Any]]) -> None:
        """Fold the page over the rows it touches: one read and two writes per page."""
        touched = list({str(event.originator_id) for _, event in page})
        rows = await rows_for(
            db, "SELECT originator, state FROM task_states WHERE originator IN ({marks})", touched
        )
        current: dict[str, State | None] = {o: State.model_validate_json(s) for o, s in rows}
        for _, event in page:
            originator = str(event.originator_id)
            state = current.get(originator)
            if state is not None or opened_key(event) is not None:
                current[originator] = evolve(state, event)
            # else: an incarnation already deleted, whose events change nothing
        gone = [(o,) for o, state in current.items() if state is None]
        kept = [
            (*key_of(state), state.incarnation, o, state.status.value, state.model_dump_json())
            for o, state in current.items()
            if state is not None
        ]
        await db.executemany("DELETE FROM task_states WHERE originator = ?", gone)
        # An owner's newer incarnation of the ID takes its row (as Replay's dict does).
        await db.executemany(
            "INSERT INTO task_states (namespace, id, node, state_dir, incarnation, originator, "
            "status, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (namespace, id, node, state_dir) DO UPDATE SET "
            "incarnation = excluded.incarnation, originator = excluded.originator, "
            "status = excluded.status, state = excluded.state",
            kept,
        )

    # --- the port shim.ports.TaskView ---------------------------------------------------

    async def get(self, namespace: str, task_id: str, whose: Whose = EVERY_NODE) -> State | None:
        """The ID's live task of ``whose`` (the latest incarnation, should two match)."""
        owners, args = owners_clause(whose)
        query = "SELECT state FROM task_states WHERE namespace = ? AND id = ?"
        query += f" AND {owners}" if owners else ""
        query += " ORDER BY incarnation DESC LIMIT 1"
        async with self.reading() as db, db.execute(
            query, (namespace, task_id, *args)
        ) as cursor:
            row = await cursor.fetchone()
        return State.model_validate_json(row[0]) if row else None

    async def tasks(
        self, namespace: str | None = None, whose: Whose = EVERY_NODE
    ) -> list[State]:
        """Live tasks of the namespace (None: of all), of ``whose``: by namespace, ID, node."""
        clauses, args = [], []
        if namespace is not None:
            clauses.append("namespace = ?")
            args.append(namespace)
        owners, owner_args = owners_clause(whose)
        if owners:
            clauses.append(owners)
            args += owner_args
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        query = f"SELECT state FROM task_states {where} ORDER BY namespace, id, node, state_dir"
        async with self.reading() as db, db.execute(query, args) as cursor:
            return [State.model_validate_json(row[0]) async for row in cursor]
