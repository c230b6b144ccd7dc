"""The event index: every event by time, type, task and namespace, for `events` and `audit`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiosqlite

from projections.records import EventRecord, TaskKey, event_record, key_of
from projections.view import View

_SCHEMA = """
CREATE TABLE IF NOT EXISTS originators (
    originator TEXT PRIMARY KEY, namespace TEXT NOT NULL, id TEXT NOT NULL,
    incarnation INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    type TEXT NOT NULL,
    namespace TEXT NOT NULL,
    id TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_at ON events (at);
CREATE INDEX IF NOT EXISTS events_type_at ON events (type, at);
CREATE INDEX IF NOT EXISTS events_task ON events (namespace, id, position);
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
    after: int = 0  # only events past this position (for --follow)
    limit: int | None = None


class EventIndex(View):
    """Every event as a record, indexed by time, type, and task."""

    name = "event_index"
    schema = _SCHEMA

    async def apply(self, db: aiosqlite.Connection, position: int, event: Any) -> None:
        originator = str(event.originator_id)
        if type(event).__name__ == "Created":
            key = key_of(event)
            await db.execute(
                "INSERT OR REPLACE INTO originators VALUES (?, ?, ?, ?)",
                (originator, key.namespace, key.id, key.incarnation),
            )
        else:
            async with db.execute(
                "SELECT namespace, id, incarnation FROM originators WHERE originator = ?",
                (originator,),
            ) as cursor:
                row = await cursor.fetchone()
            if row is None:
                return  # cannot happen: an aggregate's first event is its Created
            key = TaskKey(namespace=row[0], id=row[1], incarnation=row[2])
        record = event_record(event, key, position)
        await db.execute(
            "INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?, ?, ?)",
            (position, sortable(record.timestamp), record.type, key.namespace, key.id,
             record.model_dump_json()),
        )  # fmt: skip

    async def query(self, selection: EventFilter) -> list[EventRecord]:
        clauses, args = ["position > ?"], [selection.after]
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
        sql = f"SELECT record FROM events WHERE {' AND '.join(clauses)} ORDER BY position"
        if selection.limit is not None:
            sql += f" LIMIT {int(selection.limit)}"
        db = await self.connection()
        async with db.execute(sql, args) as cursor:
            return [EventRecord.model_validate_json(row[0]) async for row in cursor]
