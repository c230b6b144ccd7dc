"""A read model in its own SQLite file, caught up from the event log exactly once.

Each view's rows and the position they reflect are committed in one transaction, so a
crash between pages neither skips nor doubles an event: the next catch-up resumes after
the stored position. Reading the store is the source's business (off the event loop).

A rebuild replays everything into a fresh file and swaps it in with one rename, so a
reader sees the old view or the new one, never a half-built one. The files use
SQLite's rollback journal (not WAL), whose single file is what makes that rename safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import aiosqlite

PAGE_SIZE = 1000
IN_CHUNK = 500  # keys per "IN (...)" query, well under SQLite's variable limit

_POSITIONS = "CREATE TABLE IF NOT EXISTS position (id INTEGER PRIMARY KEY CHECK (id = 1), "
_POSITIONS += "position INTEGER NOT NULL);"


class EventSource(Protocol):
    """Where views read events: the store's notification log, in order."""

    async def read(self, after: int, limit: int) -> list[tuple[int, Any]]: ...
    async def head(self) -> int: ...


Progress = Callable[[int, int], None]  # (position reached, head)


async def rows_for(
    db: aiosqlite.Connection, query: str, keys: list[str]
) -> list[aiosqlite.Row]:
    """Run ``query`` (with one ``{marks}`` placeholder list) for keys, a chunk at a time."""
    rows: list[aiosqlite.Row] = []
    for start in range(0, len(keys), IN_CHUNK):
        chunk = keys[start : start + IN_CHUNK]
        async with db.execute(query.format(marks=", ".join("?" * len(chunk))), chunk) as cursor:
            rows.extend(await cursor.fetchall())
    return rows


class View:
    """Base of every read model: subclasses give ``name``, ``schema`` and ``apply``."""

    name: str = ""
    schema: str = ""

    def __init__(self, directory: Path, source: EventSource) -> None:
        self.path = directory / f"{self.name}.db"
        self._source = source
        self._db: aiosqlite.Connection | None = None
        # One connection is shared by every coroutine of the process: one opens it, and
        # one transaction at a time runs on it (SQLite has no nested BEGIN).
        self._opening = asyncio.Lock()
        self._writing = asyncio.Lock()

    async def apply(self, db: aiosqlite.Connection, position: int, event: Any) -> None:
        """Change the view's rows for one event, inside the caller's transaction."""
        raise NotImplementedError

    async def apply_page(self, db: aiosqlite.Connection, page: list[tuple[int, Any]]) -> None:
        """Change the rows for a page of events; views override it to batch their statements.

        Every statement is a round trip to aiosqlite's thread, which is what limits a
        view that goes event by event (about 3,000 events/s here).
        """
        for position, event in page:
            await self.apply(db, position, event)

    # --- connection ----------------------------------------------------------------------

    async def _open(self, path: Path) -> aiosqlite.Connection:
        path.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
        connecting = aiosqlite.connect(path, isolation_level=None)
        try:
            db = await connecting
        except BaseException:
            # aiosqlite stops its thread after a failed connect but does not wait: the
            # thread's reply would reach a closed loop and print a traceback on stderr.
            await asyncio.to_thread(connecting._thread.join, 5)
            raise
        try:
            await db.execute("PRAGMA busy_timeout=30000")
            await db.executescript(_POSITIONS + self.schema)
        except BaseException:
            await db.close()
            raise
        return db

    async def connection(self) -> aiosqlite.Connection:
        async with self._opening:
            if self._db is None:
                self._db = await self._open(self.path)
        return self._db

    async def aclose(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    # --- positions and catch-up ---------------------------------------------------------

    @staticmethod
    async def _position(db: aiosqlite.Connection) -> int:
        async with db.execute("SELECT position FROM position WHERE id = 1") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def position(self) -> int:
        return await self._position(await self.connection())

    async def catch_up(self, progress: Progress | None = None) -> int:
        """Apply every event recorded since the stored position; return the new position."""
        db = await self.connection()
        async with self._writing:
            return await self._catch_up(db, progress)

    async def _catch_up(self, db: aiosqlite.Connection, progress: Progress | None) -> int:
        position = await self._position(db)
        head = await self._source.head() if progress else 0
        # The next page is read (on the store's thread) while this one is applied.
        reading = asyncio.ensure_future(self._source.read(position, PAGE_SIZE))
        try:
            while True:
                page = await reading
                if not page:
                    return position
                reading = asyncio.ensure_future(self._source.read(page[-1][0], PAGE_SIZE))
                position = await self._commit_page(db, page)
                if progress:
                    progress(position, max(head, position))
        finally:
            reading.cancel()

    async def _commit_page(self, db: aiosqlite.Connection, page: list[tuple[int, Any]]) -> int:
        """Apply a page and record its position in one transaction; return the position."""
        await db.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have caught up meanwhile.
            stored = await self._position(db)
            await self.apply_page(db, [(n, e) for n, e in page if n > stored])
            position = max(page[-1][0], stored)
            await db.execute(
                "INSERT INTO position (id, position) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET position = excluded.position",
                (position,),
            )
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        return position

    async def rebuild(self, progress: Progress | None = None) -> int:
        """Replay everything into a fresh file, then swap it in atomically."""
        fresh = self.path.with_name(f".{self.path.name}.rebuild.{os.getpid()}")
        fresh.unlink(missing_ok=True)
        db = await self._open(fresh)
        try:
            position = await self._catch_up(db, progress)
        finally:
            await db.close()
        async with self._writing:  # not while this process's catch-up writes the old file
            await self.aclose()
            if self.path.exists():
                # Opening the old file once rolls back a hot journal a crashed writer left,
                # so that journal can never be applied to the new file.
                old = await aiosqlite.connect(self.path)
                await old.execute("SELECT count(*) FROM sqlite_master")
                await old.close()
            os.replace(fresh, self.path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path}-journal")
        return position
