"""A read model in its own SQLite file, caught up from the event log exactly once.

Each view's rows and the position they reflect are committed in one transaction, so a
crash between pages neither skips nor doubles an event: the next catch-up resumes after
the stored position. Reading the store is the source's business (off the event loop).

A rebuild replays everything into a fresh file and swaps it in with one rename, so a
reader sees the old view or the new one, never a half-built one. The files use
SQLite's rollback journal (not WAL), whose single file is what makes that rename safe.

A view is a cache: a file found damaged or of another schema is rebuilt with one
warning, and a connection whose file another process swapped is reopened (readers that
began on the old one keep it until they finish). A file built from another store than
the one given (``--store`` changed) is rebuilt too, at info level: see view_store.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiosqlite

from domain.errors import UnavailableError
from projections.schemas import BOOKKEEPING, SCHEMA_QUERY
from projections.view_file import (
    ForeignViewError,
    Identity,
    SchemaEntry,
    damaged,
    expected_schema,
    identity,
    rebuild_path,
    remove_file,
    remove_stale_rebuilds,
    statements,
)
from projections.view_store import other_store, record
from shim.private_files import private_sqlite

logger = logging.getLogger(__name__)

PAGE_SIZE = 1000
IN_CHUNK = 500  # keys per "IN (...)" query, well under SQLite's variable limit


class EventSource(Protocol):
    """Where views read events: the store's notification log, in order; ``location``
    names the store (never with a password), to tell a view built from another apart."""

    def location(self) -> str: ...
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


class _Handle:
    """One connection and the inode it has open; closed once retired and unused."""

    def __init__(self, db: aiosqlite.Connection, opened: Identity | None) -> None:
        self.db = db
        self.identity = opened
        self.users = 0


class _Swapped(Exception):
    """The file was replaced (a rebuild by another process) under this connection."""


T = TypeVar("T")


class SourceError(Exception):
    """The event store failed under a view: the store's fault, reported as such."""


class View:
    """Base of every read model: subclasses give ``name``, ``schema`` and ``apply``."""

    name: str = ""
    schema: str = ""

    def __init__(self, directory: Path, source: EventSource) -> None:
        self.path = directory / f"{self.name}.db"
        self._source = source
        self._current: _Handle | None = None
        # Connections to a file another process swapped away, still in use by a reader.
        self._retired: list[_Handle] = []
        self._expected: set[SchemaEntry] | None = None
        self._swept = False
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
        """A connection to ``path`` with this view's schema, made there if the file is new.

        Raises ForeignViewError (or SQLite's own corruption errors) for a file that is
        not this view's: see view_file.damaged.
        """
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        private_sqlite(path)  # before SQLite opens it: its journal takes the file's mode
        if self._expected is None:
            self._expected = expected_schema(BOOKKEEPING + self.schema)
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
            if await self._schema(db) != self._expected:
                # Under the write lock: another process may be making the schema right now.
                await db.execute("BEGIN IMMEDIATE")
                try:
                    found = await self._schema(db)
                    if not found:
                        for statement in statements(BOOKKEEPING + self.schema):
                            await db.execute(statement)
                    elif found != self._expected:
                        raise ForeignViewError(f"it holds another schema than {self.name}'s")
                    await db.execute("COMMIT")
                except BaseException:
                    await db.execute("ROLLBACK")
                    raise
        except BaseException:
            await db.close()
            raise
        return db

    @staticmethod
    async def _schema(db: aiosqlite.Connection) -> set[SchemaEntry]:
        async with db.execute(SCHEMA_QUERY) as cursor:
            return {tuple(row) async for row in cursor}

    async def _open_current(self) -> _Handle:
        """Open the view's own file; a damaged or foreign one is rebuilt, with one warning."""
        if not self._swept:
            self._swept = True
            remove_stale_rebuilds(self.path)
        try:
            handle = await self._open_handle()
        except sqlite3.DatabaseError as exc:
            if not damaged(exc):
                raise self._fault(exc) from exc
            logger.warning("view %s is unusable (%s); rebuilding it from the history",
                           self.path, exc)  # fmt: skip
        else:
            try:
                foreign = await self._from_source(other_store(handle.db, self._source))
            except BaseException:
                await handle.db.close()
                raise
            if foreign is None:
                return handle
            await handle.db.close()
            logger.info("view %s was built from the store %s; rebuilding it from %s",
                        self.path, foreign, self._source.location())  # fmt: skip
        await self._rebuild()
        try:
            return await self._open_handle()
        except sqlite3.DatabaseError as exc:
            raise self._fault(exc) from exc

    async def _open_handle(self) -> _Handle:
        before = identity(self.path)
        db = await self._open(self.path)
        after = identity(self.path)
        # Swapped while opening: which inode is open is unknown, so the next use reopens.
        return _Handle(db, after if after == before else None)

    def _fault(self, exc: sqlite3.Error) -> UnavailableError:
        return UnavailableError(f"cannot use the view file {self.path}: {exc}")

    async def _handle(self) -> _Handle:
        """The connection to the file at the view's path now (reopened after a swap)."""
        async with self._opening:
            current = self._current
            if current is not None and (current.identity is None
                                        or current.identity != identity(self.path)):  # fmt: skip
                self._retire()
                current = None
            if current is None:
                current = self._current = await self._open_current()
            return current

    def _retire(self) -> None:
        if self._current is not None:
            self._retired.append(self._current)
            self._current = None

    async def _close_retired(self) -> None:
        for handle in [h for h in self._retired if h.users == 0]:
            self._retired.remove(handle)
            await handle.db.close()

    @contextlib.asynccontextmanager
    async def _using(self) -> AsyncIterator[_Handle]:
        handle = await self._handle()
        handle.users += 1
        try:
            yield handle
        finally:
            handle.users -= 1
            await self._close_retired()

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[aiosqlite.Connection]:
        """The connection for a read, kept open until the read is done even if swapped."""
        try:
            async with self._using() as handle:
                yield handle.db
        except sqlite3.DatabaseError as exc:
            raise self._fault(exc) from exc

    async def connection(self) -> aiosqlite.Connection:
        """The current connection (reads should prefer ``reading``, which survives swaps)."""
        return (await self._handle()).db

    async def aclose(self) -> None:
        self._retire()
        for handle in self._retired:
            await handle.db.close()
        self._retired = []

    # --- positions and catch-up ---------------------------------------------------------

    @staticmethod
    async def _position(db: aiosqlite.Connection) -> int:
        async with db.execute("SELECT position FROM position WHERE id = 1") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def position(self) -> int:
        async with self.reading() as db:
            return await self._position(db)

    async def catch_up(self, progress: Progress | None = None) -> int:
        """Apply every event recorded since the stored position; return the new position.

        A file swapped by another process's rebuild is reopened and caught up; one found
        damaged midway is rebuilt once.
        """
        healed = False
        while True:
            try:
                async with self._using() as handle, self._writing:
                    return await self._catch_up(handle.db, progress, handle)
            except _Swapped:
                continue
            except sqlite3.DatabaseError as exc:
                if healed or not damaged(exc):
                    raise self._fault(exc) from exc
                logger.warning("view %s is unusable (%s); rebuilding it from the history",
                               self.path, exc)  # fmt: skip
            healed = True
            await self._rebuild()

    async def _catch_up(
        self, db: aiosqlite.Connection, progress: Progress | None, handle: _Handle | None = None
    ) -> int:
        position = await self._position(db)
        head = await self._from_source(self._source.head()) if progress else 0
        # The next page is read (on the store's thread) while this one is applied.
        reading = asyncio.ensure_future(self._from_source(self._source.read(position, PAGE_SIZE)))
        try:
            while True:
                page = await reading
                if not page:
                    return position
                reading = asyncio.ensure_future(
                    self._from_source(self._source.read(page[-1][0], PAGE_SIZE))
                )
                position = await self._commit_page(db, page, handle)
                if progress:
                    progress(position, max(head, position))
        finally:
            reading.cancel()

    @staticmethod
    async def _from_source(read: Awaitable[T]) -> T:
        """A read of the store: its SQLite errors are the store's, never this view file's
        (a corrupt events.db must not make every view rebuild itself)."""
        try:
            return await read
        except sqlite3.Error as exc:
            raise SourceError(f"the history cannot be read: {exc}") from exc

    async def _commit_page(
        self, db: aiosqlite.Connection, page: list[tuple[int, Any]], handle: _Handle | None
    ) -> int:
        """Apply a page and record its position in one transaction; return the position."""
        await db.execute("BEGIN IMMEDIATE")
        try:
            if handle is not None and handle.identity != identity(self.path):
                # A rebuild swapped the file before this lock was ours: its rows would be
                # written to the replaced inode, and lost (see _swap_in).
                raise _Swapped()
            # Re-read under the write lock: another process may have caught up meanwhile.
            stored = await self._position(db)
            await self.apply_page(db, [(n, e) for n, e in page if n > stored])
            if stored == 0:  # the view's first page begins with the store's first event
                await record(db, self._source.location(), page[0][1])
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

    # --- rebuild ------------------------------------------------------------------------

    async def rebuild(self, progress: Progress | None = None) -> int:
        """Replay everything into a fresh file, then swap it in atomically."""
        try:
            return await self._rebuild(progress)
        except sqlite3.DatabaseError as exc:
            raise self._fault(exc) from exc

    async def _rebuild(self, progress: Progress | None = None) -> int:
        remove_stale_rebuilds(self.path)
        fresh = rebuild_path(self.path, os.getpid())
        remove_file(fresh)
        try:
            db = await self._open(fresh)
            try:
                position = await self._catch_up(db, progress)
            finally:
                await db.close()
            async with self._writing:  # not while this process's catch-up writes the old file
                await self._swap_in(fresh)
        finally:
            remove_file(fresh)  # after a failure; after the swap there is nothing there
        return position

    async def _swap_in(self, fresh: Path) -> None:
        """Rename ``fresh`` over the view's file while holding the old file's write lock.

        Holding it means no writer is midway on the old file, and none starts before the
        rename (each checks the inode under that lock, and reopens): no other process's
        journal of the old file can be left to be rolled back into the new one. Taking it
        also rolls back a hot journal a crashed writer left. A damaged old file cannot
        be locked, nor written by anyone: its journal, if any, is removed.
        """
        old: aiosqlite.Connection | None = None
        if self.path.exists():
            old = await aiosqlite.connect(self.path, isolation_level=None)
            try:
                await old.execute("PRAGMA busy_timeout=30000")
                await old.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as exc:
                await old.close()
                old = None
                if not damaged(exc):
                    raise
            except BaseException:
                await old.close()
                raise
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path}-journal")
            os.replace(fresh, self.path)
        finally:
            if old is not None:
                await old.close()  # rolls back the empty transaction, releasing the lock
        self._retire()
        await self._close_retired()
