"""The event store: eventsourcing's Application on SQLite (or any persistence module by env).

eventsourcing is synchronous, so every call runs on one dedicated worker thread: the
event loop never blocks on SQLite, and one process never races itself on the store.
Concurrent appends from other processes surface as eventsourcing's IntegrityError, which
becomes ConflictError so the caller can retry on fresh state.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import IntegrityError, JSONTranscoder, Notification, Transcoding

from domain.errors import ConflictError, InvalidArgumentError
from domain.task import Task
from domain.values import Cause
from shim.private_files import private_sqlite as _make_private

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
    a shared PostgreSQL history for many hosts is a setting, not a code change.
    """
    if not url:
        return sqlite_env(root)
    parts = urlsplit(url)
    if parts.scheme == "sqlite" and parts.path:
        return sqlite_env(root, Path(parts.path))
    # libpq's spelling of a unix socket: its directory as ?host=/dir (the netloc stays empty).
    socket_dir = parse_qs(parts.query).get("host", [""])[-1]
    host = socket_dir if socket_dir.startswith("/") else parts.hostname
    if parts.scheme in ("postgres", "postgresql") and host and parts.path.strip("/"):
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": parts.path.strip("/"),
            "POSTGRES_HOST": host,
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": unquote(parts.username or ""),
            "POSTGRES_PASSWORD": unquote(parts.password or ""),
        }
    raise InvalidArgumentError(
        f"store {url!r}: use sqlite:///PATH, postgresql://USER:PASSWORD@HOST[:PORT]/DB or "
        "postgresql://USER@/DB?host=/SOCKET/DIR"
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
            self._app = LedgerApplication(env=self._env)
        return self._app

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

    def _exists(self, namespace: str, task_id: str, incarnation: int) -> bool:
        originator = Task.create_id(namespace, task_id, incarnation)
        return bool(self._application().recorder.select_events(originator, limit=1))

    def _last_incarnation(self, namespace: str, task_id: str) -> int:
        # Incarnations are numbered 1..N without gaps, so "exists" is monotonic:
        # gallop to an upper bound, then bisect. O(log N) lookups for N incarnations.
        if not self._exists(namespace, task_id, 1):
            return 0
        low, high = 1, 2
        while self._exists(namespace, task_id, high):
            low, high = high, high * 2
        while high - low > 1:
            mid = (low + high) // 2
            if self._exists(namespace, task_id, mid):
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
        try:
            task: Task = self._application().repository.get(originator)
        except AggregateNotFoundError:
            return None
        return task

    def _save(self, task: Task) -> None:
        try:
            self._application().save(task)
        except IntegrityError as exc:
            raise ConflictError(
                f"task {task.task_id} was changed by another command at the same time"
            ) from exc

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
        if module == "eventsourcing.postgres":
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
