"""The stored events as the store holds them: rows of bytes, for the ledger to hash.

The ledger checks what is on disk, so it reads around eventsourcing (which would decode,
upcast and drop our link): plain sqlite3 on its own read-only connection, or a psycopg
server-side cursor on the store's pool. Rows come in position order, which is commit
order on both backends (SQLite has one writer; eventsourcing's PostgreSQL recorder locks
the table for each append), so a position, once seen, is never filled in later by a
legitimate writer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from pathlib import Path
from typing import Any, Protocol

from domain.ledger.head import HEAD_TOPIC

Row = tuple[int, str, int, str, bytes]
"""(position, aggregate id as 32 hex digits, version, topic, stored state)."""

BATCH = 20_000


class RawEvents(Protocol):
    def rows(self, after: int = 0, upto: int | None = None) -> Iterator[Row]:
        """Every row with ``after < position <= upto`` (no bound: to the end), in order."""
        ...

    def heads(self) -> list[Row]:
        """The rows of every signed tree head, in position order."""
        ...

    def row(self, position: int) -> Row | None: ...

    def opened(self, aggregate: str) -> Row | None:
        """The aggregate's first event (what names it), wherever it is."""
        ...

    def last_position(self) -> int: ...


class SQLiteRows:
    """Rows of ``stored_events`` (eventsourcing's table: the rowid is the position)."""

    COLUMNS = "rowid, originator_id, originator_version, topic, CAST(state AS BLOB)"
    """A state edited into TEXT (sqlite3's replace() makes one) is hashed as its bytes."""

    def __init__(self, path: str) -> None:
        self._path = path

    def _connect(self) -> AbstractContextManager[sqlite3.Connection]:
        uri = Path(self._path).resolve().as_uri() + "?mode=ro"  # "//tmp/x" is a path here
        db = sqlite3.connect(uri, uri=True, timeout=30)
        return closing(db)

    def rows(self, after: int = 0, upto: int | None = None) -> Iterator[Row]:
        bound = "" if upto is None else " AND rowid <= ?"
        args: tuple[int, ...] = (after,) if upto is None else (after, upto)
        with self._connect() as db:
            yield from db.execute(
                f"SELECT {self.COLUMNS} FROM stored_events WHERE rowid > ?{bound} ORDER BY rowid",
                args,
            )

    def heads(self) -> list[Row]:
        with self._connect() as db:
            return db.execute(
                f"SELECT {self.COLUMNS} FROM stored_events WHERE topic = ? ORDER BY rowid",
                (HEAD_TOPIC,),
            ).fetchall()

    def row(self, position: int) -> Row | None:
        with self._connect() as db:
            found: Row | None = db.execute(
                f"SELECT {self.COLUMNS} FROM stored_events WHERE rowid = ?", (position,)
            ).fetchone()
            return found

    def opened(self, aggregate: str) -> Row | None:
        with self._connect() as db:
            found: Row | None = db.execute(
                f"SELECT {self.COLUMNS} FROM stored_events "
                "WHERE originator_id = ? AND originator_version = 1",
                (aggregate,),
            ).fetchone()
            return found

    def last_position(self) -> int:
        with self._connect() as db:
            (last,) = db.execute("SELECT MAX(rowid) FROM stored_events").fetchone()
            return int(last or 0)


class PostgresRows:
    """Rows of eventsourcing's ``<schema>.shimledger_events``, on the store's own pool."""

    def __init__(self, datastore: Any, table: str) -> None:
        self._datastore = datastore
        self._table = f'"{datastore.schema}"."{table}"'
        self._columns = (
            "notification_id, replace(originator_id::text, '-', ''), originator_version, "
            "topic, state"
        )

    @contextmanager
    def _cursor(self, name: str | None = None) -> Iterator[Any]:
        from psycopg.rows import tuple_row  # psycopg is only here when the store is PostgreSQL

        with self._datastore.get_connection() as conn, conn.transaction(force_rollback=True):
            cursor = (
                conn.cursor(name=name, row_factory=tuple_row)
                if name
                else conn.cursor(row_factory=tuple_row)
            )
            with cursor:
                yield cursor

    def rows(self, after: int = 0, upto: int | None = None) -> Iterator[Row]:
        bound = "" if upto is None else " AND notification_id <= %s"
        args: tuple[int, ...] = (after,) if upto is None else (after, upto)
        with self._cursor("ledger_scan") as cursor:
            cursor.itersize = BATCH
            cursor.execute(
                f"SELECT {self._columns} FROM {self._table} WHERE notification_id > %s{bound} "
                "ORDER BY notification_id",
                args,
            )
            for position, originator, version, topic, state in cursor:
                yield position, originator, version, topic, bytes(state)

    def heads(self) -> list[Row]:
        with self._cursor() as cursor:
            cursor.execute(
                f"SELECT {self._columns} FROM {self._table} WHERE topic = %s "
                "ORDER BY notification_id",
                (HEAD_TOPIC,),
            )
            return [row for found in cursor.fetchall() if (row := _row(found)) is not None]

    def row(self, position: int) -> Row | None:
        with self._cursor() as cursor:
            cursor.execute(
                f"SELECT {self._columns} FROM {self._table} WHERE notification_id = %s",
                (position,),
            )
            return _row(cursor.fetchone())

    def opened(self, aggregate: str) -> Row | None:
        with self._cursor() as cursor:
            cursor.execute(
                f"SELECT {self._columns} FROM {self._table} "
                "WHERE originator_id = %s::uuid AND originator_version = 1",
                (aggregate,),
            )
            return _row(cursor.fetchone())

    def last_position(self) -> int:
        with self._cursor() as cursor:
            cursor.execute(f"SELECT MAX(notification_id) FROM {self._table}")
            (last,) = cursor.fetchone()
            return int(last or 0)


def _row(found: tuple[Any, ...] | None) -> Row | None:
    """A psycopg row as a Row: bytea may come as a memoryview."""
    if found is None:
        return None
    position, originator, version, topic, state = found
    return position, originator, version, topic, bytes(state)
