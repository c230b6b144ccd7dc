"""Waiting for the next append: pushed by PostgreSQL's LISTEN/NOTIFY, polled on SQLite.

eventsourcing's PostgreSQL recorder runs ``NOTIFY <channel>`` inside every append's
transaction, so a listener hears of an append once it has committed and its rows are
readable. ``events --follow`` waits on that instead of reading the store five times a
second. A notification can still be missed (the listening connection drops, the server
restarts), so the wait also ends after ``fallback`` seconds, and the caller reads anyway:
a missed notification delays an event by at most that, never loses it. On a store that
announces nothing (SQLite) the wait is the poll interval.

The listening connection is the watcher's own (not one of the store's small pool, which
the reads need) and is opened with the store's own connection settings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

logger = logging.getLogger(__name__)

POLL_INTERVAL = 0.2  # seconds between reads where nothing is pushed (SQLite)
FALLBACK_INTERVAL = 2.0  # seconds after which a listener reads anyway


class Announcing(Protocol):
    async def listen_target(self) -> tuple[str, dict[str, Any], str] | None: ...


class AppendWatch:
    """``wait()`` returns when something may have been appended (or it is time to look)."""

    def __init__(self, target: tuple[str, dict[str, Any], str] | None,
                 fallback: float = FALLBACK_INTERVAL) -> None:  # fmt: skip
        self._target = target
        self._fallback = fallback
        self._connection: Any = None

    @property
    def pushed(self) -> bool:
        """Whether appends are heard (a LISTEN is open) rather than polled for."""
        return self._connection is not None

    async def start(self) -> None:
        """LISTEN before the caller's first read, so no append falls between the two."""
        if self._target is None:
            return
        import psycopg
        from psycopg import sql

        conninfo, kwargs, channel = self._target
        options = {k: v for k, v in kwargs.items() if k not in ("row_factory", "prepare_threshold")}
        try:
            connection = await psycopg.AsyncConnection.connect(conninfo, **options,
                                                               autocommit=True)  # fmt: skip
            await connection.execute(sql.SQL("LISTEN {0}").format(sql.Identifier(channel)))
        except psycopg.Error as exc:
            logger.warning("cannot listen for appends (%s); reading every %.0f s instead",
                           _first_line(exc), self._fallback)  # fmt: skip
            return
        self._connection = connection

    async def wait(self) -> None:
        if self._connection is None:
            await asyncio.sleep(POLL_INTERVAL if self._target is None else self._fallback)
            if self._target is not None:
                await self.start()  # the server may be back: listen again
            return
        import psycopg

        try:
            async for _ in self._connection.notifies(timeout=self._fallback, stop_after=1):
                pass
        except psycopg.Error as exc:
            logger.warning("lost the connection that listens for appends (%s)", _first_line(exc))
            await self.close()

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.close()
            except Exception:  # noqa: BLE001 - closing a broken connection: nothing to say
                pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@asynccontextmanager
async def watching(store: Announcing, fallback: float = FALLBACK_INTERVAL
                   ) -> AsyncIterator[AppendWatch]:  # fmt: skip
    """An AppendWatch listening from now on, closed at the end."""
    watch = AppendWatch(await store.listen_target(), fallback)
    await watch.start()
    try:
        yield watch
    finally:
        await watch.close()
