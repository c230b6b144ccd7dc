"""The event store: eventsourcing's Application on SQLite (or any persistence module by env).

eventsourcing is synchronous, so every call runs on one dedicated worker thread: the
event loop never blocks on SQLite, and one process never races itself on the store.
Concurrent appends from other processes surface as eventsourcing's IntegrityError, which
becomes ConflictError so the caller can retry on fresh state.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import (
    IntegrityError,
    JSONTranscoder,
    Mapper,
    Notification,
    OperationalError,
    StoredEvent,
    Transcoding,
)

from adapters.chained_mapper import ChainedMapper
from adapters.postgres_url import is_postgres_url, parse_postgres_url
from adapters.raw_events import PostgresRows, RawEvents, SQLiteRows
from adapters.url_redaction import redact_url
from domain.errors import ConflictError, FailedPreconditionError, InvalidArgumentError
from domain.ledger.head import SignedHead
from domain.task import Task
from domain.values import Cause, Owner
from shim.private_files import private_sqlite as _make_private

POSTGRES_MODULE = "adapters.postgres_factory:LedgerPostgresFactory"
SCHEMA_ATTEMPTS = 40  # a fresh SQLite file's tables, made by another process meanwhile
SCHEMA_RETRY = 0.05
"""The persistence module of a PostgreSQL store: eventsourcing's, with our pool and schema."""

T = TypeVar("T")
P = ParamSpec("P")


class CauseAsDict(Transcoding):
    """Stores a Cause as a plain JSON object, so old events stay readable as Cause grows."""

    type = Cause
    name = "cause"

    def encode(self, obj: Cause) -> dict[str, str | int]:
        return obj.as_dict()

    def decode(self, data: dict[str, str | int]) -> Cause:
        return Cause.from_dict(data)


class LedgerApplication(Application[UUID]):
    """The eventsourcing Application behind EventStore; tools that write in bulk (the
    benchmark's store builder) may save many aggregates per call through it."""

    name = "shimledger"
    chained = True
    """Every event written carries its predecessor's digest (adapters/chained_mapper.py);
    False only for the benchmark's reference of appends without chaining."""

    def construct_mapper(self) -> Mapper[UUID]:
        if not self.chained:
            return super().construct_mapper()
        return ChainedMapper(transcoder=self.construct_transcoder(), predecessor=self._stored)

    def _stored(self, originator: UUID, version: int) -> Sequence[StoredEvent]:
        return self.recorder.select_events(originator, gt=version - 1, lte=version)

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(CauseAsDict())


def sqlite_env(root: Path, path: Path | None = None) -> dict[str, str]:
    """The eventsourcing settings for the default store, ``<root>/events.db``."""
    return {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(path or root / "events.db"),
        "SQLITE_LOCK_TIMEOUT": "30",
    }


def store_env(url: str | None, root: Path) -> dict[str, str]:
    """Choose the store by URL: none (SQLite under root), sqlite:///PATH or postgresql://...

    Only this mapping knows persistence modules: the domain and the services never do, so
    a shared PostgreSQL history for many hosts is a setting, not a code change. A
    PostgreSQL URL is read whole here (adapters/postgres_url.py: a parameter it cannot
    honour is refused, never dropped), and its persistence module is ours
    (adapters/postgres_factory.py), imported with psycopg only when the store is opened.
    """
    if not url:
        return sqlite_env(root)
    parts = urlsplit(url)
    if parts.scheme == "sqlite" and parts.path:
        return sqlite_env(root, Path(parts.path))
    if is_postgres_url(url):
        pg = parse_postgres_url(url)
        if importlib.util.find_spec("psycopg") is None:  # found, not imported: it is slow
            raise FailedPreconditionError(
                f"store {pg.shown}: PostgreSQL support is not installed "
                "(pip install 'shimledger[postgres]', or make setup-postgres)"
            )
        return {
            "PERSISTENCE_MODULE": POSTGRES_MODULE,
            "SHIMLEDGER_STORE_URL": url,
            "POSTGRES_DBNAME": pg.dbname,
            "POSTGRES_HOST": pg.host,
            "POSTGRES_PORT": str(pg.port),
            "POSTGRES_USER": pg.user,
            "POSTGRES_PASSWORD": "",  # unused: libpq gets the URL's, or finds its own
            "POSTGRES_LOCK_TIMEOUT": str(pg.statement_timeout),
            "POSTGRES_CONNECT_TIMEOUT": str(pg.connect_timeout),
        }
    raise InvalidArgumentError(
        f"store {redact_url(url)!r}: use sqlite:///PATH, postgresql://USER:PASSWORD@HOST[:PORT]/DB "
        "or postgresql://USER@/DB?host=/SOCKET/DIR"
    )


class EventStore:
    """Task histories: find, load and save Task aggregates; read the notification log."""

    def __init__(self, env: dict[str, str]) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="event-store")
        self._app: LedgerApplication | None = None
        self._env = env

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def _application(self) -> LedgerApplication:
        if self._app is None:
            if self._env.get("PERSISTENCE_MODULE") == "eventsourcing.sqlite":
                _make_private(Path(self._env["SQLITE_DBNAME"]))
            for attempt in range(SCHEMA_ATTEMPTS):
                try:
                    self._app = LedgerApplication(env=self._env)
                    break
                except (OperationalError, sqlite3.OperationalError) as exc:
                    # Two processes making a fresh SQLite file's tables at once: each reads
                    # the schema, then both want to write it, and SQLite fails one at once
                    # (a deadlock it breaks; no busy timeout applies). The other commits
                    # its tables in milliseconds; then ours finds them there.
                    if "locked" not in str(exc) or attempt == SCHEMA_ATTEMPTS - 1:
                        raise
                    time.sleep(SCHEMA_RETRY)
        assert self._app is not None
        return self._app

    async def prepare(self) -> bool | None:
        """Open the store now, its schema created if missing (`store init`): True if this
        call created it, False if it was there, None if the backend does not say (SQLite
        makes its tables as it opens)."""
        return await self._run(self._prepare)

    def _prepare(self) -> bool | None:
        made = getattr(self._application().factory, "schema_created", None)
        return made if isinstance(made, bool) else None

    # --- the port shim.ports.TaskStore ------------------------------------------------

    async def current(self, namespace: str, task_id: str) -> Task | None:
        """The latest incarnation of the ID, live or deleted; None if it never existed."""
        return await self._run(self._current, namespace, task_id)

    async def incarnation(self, namespace: str, task_id: str, incarnation: int) -> Task | None:
        """One incarnation of the ID, by its aggregate id; None if it never existed."""
        return await self._run(self._get, Task.create_id(namespace, task_id, incarnation))

    async def save(self, task: Task) -> None:
        """Append the task's pending events; ConflictError if another writer got there first."""
        await self._run(self._save, task)

    async def history(self, namespace: str, task_id: str) -> list[DomainEventProtocol[UUID]]:
        """Every event of every incarnation of the ID, oldest first."""
        return await self._run(self._history, namespace, task_id)

    # --- the port projections.EventSource -----------------------------------------------

    async def read(self, after: int, limit: int) -> list[tuple[int, DomainEventProtocol[UUID]]]:
        """Up to ``limit`` events recorded after notification position ``after``."""
        return await self._run(self._read, after, limit)

    async def head(self) -> int:
        """The position of the newest event (0 for an empty store)."""
        return await self._run(self._head)

    async def aclose(self) -> None:
        if self._app is not None:
            await self._run(self._app.close)
        self._executor.shutdown(wait=True)

    # --- blocking implementations, run on the store's thread -----------------------------

    def _exists(self, originator: UUID) -> bool:
        return bool(self._application().recorder.select_events(originator, limit=1))

    def _last_incarnation(self, namespace: str, task_id: str) -> int:
        return self._last_number(lambda n: Task.create_id(namespace, task_id, n))

    def _last_number(self, originator: Callable[[int], UUID]) -> int:
        # Incarnations (and a node's heads) are numbered 1..N without gaps, so "exists" is
        # monotonic: gallop to an upper bound, then bisect. O(log N) lookups for N.
        if not self._exists(originator(1)):
            return 0
        low, high = 1, 2
        while self._exists(originator(high)):
            low, high = high, high * 2
        while high - low > 1:
            mid = (low + high) // 2
            if self._exists(originator(mid)):
                low = mid
            else:
                high = mid
        return low

    def _current(self, namespace: str, task_id: str) -> Task | None:
        incarnation = self._last_incarnation(namespace, task_id)
        if incarnation == 0:
            return None
        return self._get(Task.create_id(namespace, task_id, incarnation))

    def _get(self, originator: UUID) -> Task | None:
        found = self._load(originator)
        return found if isinstance(found, Task) else None

    def _save(self, task: Task) -> None:
        self._save_aggregate(task, f"task {task.task_id}")

    def _history(self, namespace: str, task_id: str) -> list[DomainEventProtocol[UUID]]:
        app = self._application()
        events: list[DomainEventProtocol[UUID]] = []
        for n in range(1, self._last_incarnation(namespace, task_id) + 1):
            events.extend(app.events.get(Task.create_id(namespace, task_id, n)))
        return events

    def _read(self, after: int, limit: int) -> list[tuple[int, DomainEventProtocol[UUID]]]:
        app = self._application()
        notifications: Sequence[Notification] = app.recorder.select_notifications(
            after, limit, inclusive_of_start=False
        )
        return [(n.id, app.mapper.to_domain_event(n)) for n in notifications]

    def _head(self) -> int:
        return self._application().recorder.max_notification_id() or 0

    # --- owners (shim.ports.TaskStore): each incarnation's owner is in its Created ---------

    async def latest_owned(
        self, namespace: str, task_id: str, owner: Owner
    ) -> tuple[int, Task | None]:
        """The ID's latest incarnation number (0: none) and ``owner``'s latest incarnation
        (None: it has none); of other owners' incarnations only the Created is read."""
        return await self._run(self._latest_owned, namespace, task_id, owner)

    async def live_elsewhere(self, namespace: str, task_id: str, owner: Owner) -> Owner | None:
        """The owner of the newest live incarnation ``owner`` does not own (None: none);
        "live" is read from the incarnation's last event (nothing follows a Deleted)."""
        return await self._run(self._live_elsewhere, namespace, task_id, owner)

    def _edge(self, namespace: str, task_id: str, n: int, *, last: bool) -> object:
        originator = Task.create_id(namespace, task_id, n)
        app = self._application()
        [stored] = app.recorder.select_events(originator, desc=last, limit=1)
        return app.mapper.to_domain_event(stored)

    def _owner_of(self, namespace: str, task_id: str, n: int) -> Owner:
        created = self._edge(namespace, task_id, n, last=False)
        assert isinstance(created, Task.Created), f"incarnation {n} of {task_id} has no Created"
        return Owner(created.node, created.state_dir)

    def _latest_owned(self, namespace: str, task_id: str, owner: Owner) -> tuple[int, Task | None]:
        latest = self._last_incarnation(namespace, task_id)
        for n in range(latest, 0, -1):
            theirs = self._owner_of(namespace, task_id, n)
            if owner.owns(theirs.node, theirs.state_dir):
                return latest, self._get(Task.create_id(namespace, task_id, n))
        return latest, None

    def _live_elsewhere(self, namespace: str, task_id: str, owner: Owner) -> Owner | None:
        for n in range(self._last_incarnation(namespace, task_id), 0, -1):
            theirs = self._owner_of(namespace, task_id, n)
            if not owner.owns(theirs.node, theirs.state_dir) and not isinstance(
                self._edge(namespace, task_id, n, last=True), Task.Deleted
            ):
                return theirs
        return None

    # --- the ledger (shim/ledger_service.py): its aggregates, and the rows as stored --------

    async def latest_head(self, node: str) -> SignedHead | None:
        """The node's newest signed head; None before its first checkpoint."""
        return await self._run(self._latest_head, node)

    def _latest_head(self, node: str) -> SignedHead | None:
        number = self._last_number(lambda n: SignedHead.create_id(node, n))
        found = self._load(SignedHead.create_id(node, number)) if number else None
        return found if isinstance(found, SignedHead) else None

    async def save_head(self, head: SignedHead) -> None:
        """Record a new head; ConflictError if another checkpoint took its number first."""
        await self._run(self._save_aggregate, head, f"head {head.number} of node {head.node}")

    async def scan(self, work: Callable[[RawEvents], T]) -> T:
        """Run ``work`` over the stored rows on the store's thread (it may take seconds)."""
        return await self._run(lambda: work(self._raw_events()))

    def _raw_events(self) -> RawEvents:
        recorder: Any = self._application().recorder  # a PostgreSQL one has a datastore
        if self._env.get("PERSISTENCE_MODULE") == "eventsourcing.sqlite":
            return SQLiteRows(self._env["SQLITE_DBNAME"])
        return PostgresRows(recorder.datastore, recorder.events_table_name)

    def _load(self, originator: UUID) -> object:
        try:
            return self._application().repository.get(originator)
        except AggregateNotFoundError:
            return None

    def _save_aggregate(self, aggregate: Task | SignedHead, what: str) -> None:
        app = self._application()
        try:
            app.save(aggregate)
        except IntegrityError as exc:
            if isinstance(app.mapper, ChainedMapper):
                app.mapper.forget(aggregate.id)
            raise ConflictError(f"{what} was changed by another command at the same time") from exc

    # --- hooks for the views and `events --follow` (kept apart: projections/view_store.py,
    # --- adapters/append_watch.py) --------------------------------------------------------

    def location(self) -> str:
        """The store as it names itself, never with a password: what a view file records
        of the store it was built from (a view of another store is rebuilt)."""
        env = self._env
        module = env.get("PERSISTENCE_MODULE", "")
        if module == "eventsourcing.sqlite":
            name = env["SQLITE_DBNAME"]
            return name if name == ":memory:" else f"sqlite://{os.path.realpath(name)}"
        if module in ("eventsourcing.postgres", POSTGRES_MODULE):
            user = env.get("POSTGRES_USER", "")
            where = f"{env.get('POSTGRES_HOST', '')}:{env.get('POSTGRES_PORT', '5432')}"
            schema = env.get("POSTGRES_SCHEMA", "")
            database = env.get("POSTGRES_DBNAME", "")
            tail = f"?schema={schema}" if schema else ""
            return f"postgresql://{user}@{where}/{database}{tail}"
        return module

    async def listen_target(self) -> tuple[str, dict[str, Any], str] | None:
        """Where this store announces appends: (conninfo, connection kwargs, channel) of
        eventsourcing's PostgreSQL recorder, which NOTIFYs that channel in every append's
        transaction; None for a store that announces nothing (SQLite)."""
        return await self._run(self._listen_target)

    def _listen_target(self) -> tuple[str, dict[str, Any], str] | None:
        recorder = self._application().recorder
        channel = getattr(recorder, "channel_name", None)
        pool = getattr(getattr(recorder, "datastore", None), "pool", None)
        if not isinstance(channel, str) or pool is None:
            return None
        return str(pool.conninfo), dict(pool.kwargs), channel
