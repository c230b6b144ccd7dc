"""The event index: every event by time, type, task, namespace and node, for `events` and
`audit`. The whole fleet's events are here; a query narrows them to a node's (EventFilter)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiosqlite

from domain.values import EVERY_NODE, Whose
from projections.owner_sql import owners_clause
from projections.records import EventRecord, TaskKey, event_record, opened_key
from projections.view import View, rows_for

_SCHEMA = """
CREATE TABLE IF NOT EXISTS originators (
    originator TEXT PRIMARY KEY, namespace TEXT NOT NULL, id TEXT NOT NULL,
    incarnation INTEGER NOT NULL, node TEXT NOT NULL, state_dir TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    type TEXT NOT NULL,
    namespace TEXT NOT NULL,
    id TEXT NOT NULL,
    node TEXT NOT NULL,
    state_dir TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_at ON events (at);
CREATE INDEX IF NOT EXISTS events_type_at ON events (type, at);
CREATE INDEX IF NOT EXISTS events_task ON events (namespace, id, position);
CREATE INDEX IF NOT EXISTS events_id ON events (id, position);
"""


def sortable(moment: datetime) -> str:
    """UTC ISO 8601 with fixed width, so text order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class EventFilter:
    """What `events` asks for; every field narrows the selection."""

    since: datetime | None = None
    until: datetime | None = None
    types: Sequence[str] = ()
    namespace: str | None = None
    id: str | None = None
    whose: Whose = EVERY_NODE  # only the tasks of a node (--node)
    after: int = 0  # only events past this position (for --follow)
    limit: int | None = None


def _index_for(selection: EventFilter) -> str:
    """Name the index, most selective filter first.

    Left to itself (no ANALYZE statistics), SQLite scans the whole table in position order
    to save a sort, even for a ten-minute window of a million events.
    """
    if selection.id is not None:
        return "INDEXED BY events_id"
    if selection.since is not None or selection.until is not None:
        return "INDEXED BY events_at"
    if selection.types:
        return "INDEXED BY events_type_at"
    return ""


class EventIndex(View):
    """Every event as a record, indexed by time, type, and task."""

    name = "event_index"
    schema = _SCHEMA

    async def apply_page(self, db: aiosqlite.Connection, page: list[tuple[int, Any]]) -> None:
        """One lookup of the page's unknown tasks, then two batched inserts."""
        keys: dict[str, TaskKey] = {}
        created = []
        for _, event in page:
            if (key := opened_key(event)) is not None:
                keys[str(event.originator_id)] = key
                created.append((str(event.originator_id), key.namespace, key.id, key.incarnation,
                                key.node, key.state_dir))  # fmt: skip
        unknown = list({str(e.originator_id) for _, e in page} - keys.keys())
        for originator, namespace, task_id, incarnation, node, state_dir in await rows_for(
            db, "SELECT * FROM originators WHERE originator IN ({marks})", unknown
        ):
            keys[originator] = TaskKey(namespace=namespace, id=task_id, incarnation=incarnation,
                                       node=node, state_dir=state_dir)  # fmt: skip
        rows = []
        for position, event in page:
            key = keys.get(str(event.originator_id))
            if key is None:
                continue  # cannot happen: an aggregate's first event is its Created
            record = event_record(event, key, position)
            rows.append((position, sortable(record.timestamp), record.type, key.namespace,
                         key.id, key.node, key.state_dir, record.model_dump_json()))  # fmt: skip
        await db.executemany("INSERT OR REPLACE INTO originators VALUES (?, ?, ?, ?, ?, ?)",
                             created)  # fmt: skip
        await db.executemany("INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             rows)  # fmt: skip

    async def query(self, selection: EventFilter) -> list[EventRecord]:
        clauses: list[str] = []
        args: list[Any] = []
        if selection.after:  # only when following: it would keep SQLite off the time index
            clauses.append("position > ?")
            args.append(selection.after)
        if selection.since is not None:
            clauses.append("at >= ?")
            args.append(sortable(selection.since))
        if selection.until is not None:
            clauses.append("at <= ?")
            args.append(sortable(selection.until))
        if selection.types:
            clauses.append(f"type IN ({', '.join('?' * len(selection.types))})")
            args.extend(selection.types)
        if selection.namespace is not None:
            clauses.append("namespace = ?")
            args.append(selection.namespace)
        if selection.id is not None:
            clauses.append("id = ?")
            args.append(selection.id)
        owners, owner_args = owners_clause(selection.whose)
        if owners:
            clauses.append(owners)
            args.extend(owner_args)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT record FROM events {_index_for(selection)} {where} ORDER BY position"
        if selection.limit is not None:
            sql += f" LIMIT {int(selection.limit)}"
        async with self.reading() as db, db.execute(sql, args) as cursor:
            return [EventRecord.model_validate_json(row[0]) async for row in cursor]
