"""The store's connections to PostgreSQL: a few, made in the caller's thread, failing fast.

eventsourcing's datastore uses psycopg_pool, which connects in background threads: a
connection that fails (a wrong password, a missing database, a closed port) is retried
there with growing delays, and the caller only learns, after its 30 s wait, "couldn't get
a connection" (the reason goes to a log nobody reads); each process also keeps 5 and may
open 15. This pool connects in the thread that asks, so the caller gets libpq's own reason
at once, keeps ``size`` connections (one for a CLI command) and opens one more at most for
a moment (a LISTEN, say). After a failed connect it answers with that same failure for
the next ``connect_timeout`` seconds instead of trying again: eventsourcing retries a
failed statement up to 10 times, and a server that never answers would otherwise cost ten
connect timeouts; any call after that window tries afresh, so a long-lived process
reconnects once the server is back.

It offers what eventsourcing's PostgresDatastore asks of its pool (open, connection,
close, the context manager) and nothing else.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row
from psycopg_pool import PoolTimeout

Connection = psycopg.Connection[DictRow]
MAX_AGE = 30 * 60.0  # seconds before an idle connection is replaced (server-side limits)


class StorePool:
    """Up to ``size`` idle connections kept, ``size + overflow`` open at once."""

    def __init__(
        self,
        kwargs: dict[str, Any],
        *,
        size: int,
        overflow: int,
        wait: float,
        configure: Callable[[Connection], None],
    ) -> None:
        self._kwargs = kwargs
        self._size = size
        self._max = size + overflow
        self._wait = wait  # seconds to wait for a busy connection to be given back
        self._hold_off = float(kwargs.get("connect_timeout", 3))
        self._configure = configure
        self._idle: list[Connection] = []
        self._made: dict[int, float] = {}  # id of each open connection -> when it was made
        self._open = 0  # connections made and not closed (idle or in use)
        self._failure: tuple[psycopg.Error, float] | None = None
        self._closed = False
        self._lock = threading.Condition()

    @property
    def conninfo(self) -> str:
        """Empty: every setting is in ``kwargs`` (what a listener opens its own connection
        with, as psycopg_pool's pools offer)."""
        return ""

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self._kwargs)

    # What eventsourcing's PostgresDatastore calls -----------------------------------------

    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Nothing to start: connections are made when asked for."""

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[Connection]:
        conn = self._take(self._wait if timeout is None else timeout)
        try:
            yield conn
        finally:
            self._give_back(conn)

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            for conn in idle:
                self._forget(conn)
            self._lock.notify_all()
        for conn in idle:
            conn.close()

    def __enter__(self) -> StorePool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.close()

    # Taking and giving back ----------------------------------------------------------------

    def _take(self, timeout: float) -> Connection:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                if self._closed:
                    raise PoolTimeout("the store's connections are closed")
                if self._idle:
                    conn = self._idle.pop()
                    if time.monotonic() - self._made[id(conn)] < MAX_AGE and not conn.closed:
                        return conn
                    self._forget(conn)
                    conn.close()
                    continue
                if self._open < self._max:
                    self._open += 1
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PoolTimeout(
                        f"all {self._max} connections to the store stayed busy for {timeout:.0f} s"
                    )
                self._lock.wait(left)
        try:
            conn = self._connect()
        except BaseException:
            with self._lock:
                self._open -= 1
                self._lock.notify()
            raise
        with self._lock:
            self._made[id(conn)] = time.monotonic()
        return conn

    def _forget(self, conn: Connection) -> None:
        """Called under the lock for a connection about to be closed."""
        self._open -= 1
        self._made.pop(id(conn), None)

    def _connect(self) -> Connection:
        failure = self._failure
        if failure is not None and time.monotonic() - failure[1] < self._hold_off:
            raise failure[0]  # the same answer, at once: see the module's docstring
        try:
            conn: Connection = psycopg.connect(**self._kwargs, row_factory=dict_row)
        except psycopg.Error as exc:
            self._failure = (exc, time.monotonic())
            raise
        self._failure = None
        try:
            self._configure(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _give_back(self, conn: Connection) -> None:
        """Kept if it is healthy and idle; closed if broken, mid-transaction, or surplus."""
        status = conn.info.transaction_status
        healthy = not (conn.closed or conn.broken) and status == TransactionStatus.IDLE
        with self._lock:
            keep = healthy and not self._closed and len(self._idle) < self._size
            if keep:
                self._idle.append(conn)
            else:
                self._forget(conn)
            self._lock.notify()
        if not keep:
            conn.close()
