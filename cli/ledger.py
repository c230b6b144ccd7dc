"""The history and its views, wired without any shim: what read-only commands open.

Kept apart from cli/bootstrap.py so that `history`, `events`, `replay`, `audit` and
`projections` do not import the event sink, ttrpc, the shim launcher or TaskManager.
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.event_store import EventStore, store_env
from cli.settings import DEFAULT_STATE, Settings, state_digest
from domain.errors import FailedPreconditionError, InvalidArgumentError
from domain.state_dir import StateDir
from projections.event_index import EventIndex
from projections.state_files import StateFiles
from projections.task_states import TaskStatesView
from projections.view import View
from shim.lifecycle.bundle import Bundles, remove_container_state, save_container_state
from shim.private_files import tighten


@dataclass
class Ledger:
    """The history and the views derived from it, for commands that only read."""

    store: EventStore
    task_states: TaskStatesView
    event_index: EventIndex
    state_files: StateFiles

    @property
    def views(self) -> dict[str, View]:
        views = (self.task_states, self.event_index, self.state_files)
        return {view.name: view for view in views}

    async def catch_up(self) -> None:
        """Bring every view up to the head of the store."""
        for view in self.views.values():
            await view.catch_up()


def _state_saver(settings: Settings) -> Callable[[str, str, dict[str, Any] | None], None]:
    bundles = Bundles(StateDir(settings.state))

    def save(namespace: str, task_id: str, document: dict[str, Any] | None) -> None:
        bundle = bundles.working(namespace, task_id)
        if document is None:
            remove_container_state(bundle)
        else:
            save_container_state(bundle, document)

    return save


def require_access(settings: Settings) -> None:
    """A user who cannot read the history's files is told it needs root, in one line.

    The root dir and the SQLite store are their owner's alone (0700, 0600): every event
    holds a command line. Checked before anything is opened, so `history` run as another
    user says why it cannot answer instead of failing deep inside SQLite.
    """
    if os.geteuid() == 0:
        return
    store = store_env(settings.store, settings.root)
    files = [settings.root, settings.root / "events.db", settings.root / "projections"]
    if "SQLITE_DBNAME" in store:
        files.append(Path(store["SQLITE_DBNAME"]))
    for path in files:
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        except PermissionError:  # a parent directory this user cannot search
            raise _needs_root(path, f"{path.parent} is not searchable by this user") from None
        wanted = os.R_OK | os.W_OK | (os.X_OK if stat.S_ISDIR(st.st_mode) else 0)
        if not os.access(path, wanted):
            raise _needs_root(path, f"{path} is private to {_owner(st.st_uid)}")
    ancestor = next(p for p in (settings.root, *settings.root.parents) if p.exists())
    if ancestor != settings.root and not os.access(ancestor, os.W_OK | os.X_OK):
        raise _needs_root(settings.root, f"{settings.root} cannot be made in {ancestor}")


def _needs_root(path: Path, why: str) -> FailedPreconditionError:
    return FailedPreconditionError(f"reading the history needs root: {why} (run it with sudo)")


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def state_files_name(settings: Settings) -> str:
    """``state_files.db`` for the default state dir; for any other, a name of its own
    (several state dirs may share one root, each with its own tasks' state.json)."""
    if settings.state == DEFAULT_STATE:
        return "state_files.db"
    return f"state_files-{state_digest(settings.state)}.db"


def _prepare_root(settings: Settings) -> None:
    try:
        settings.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name in ("logs", "projections"):
            (settings.root / name).mkdir(mode=0o700, exist_ok=True)
            tighten(settings.root / name, 0o700)  # as an older shimledger made them: 0711
    except OSError as exc:
        raise InvalidArgumentError(f"cannot use {settings.root} as a directory: {exc}") from None


@asynccontextmanager
async def open_ledger(settings: Settings) -> AsyncIterator[Ledger]:
    """The event store and every view, without shims: history, events, replay, audit."""
    require_access(settings)
    _prepare_root(settings)
    store = EventStore(store_env(settings.store, settings.root))
    directory = settings.root / "projections"
    ledger = Ledger(
        store,
        TaskStatesView(directory, store),
        EventIndex(directory, store),
        StateFiles(directory, store, StateDir(settings.state), save=_state_saver(settings),
                   owner=settings.owner, file_name=state_files_name(settings)),  # fmt: skip
    )
    try:
        yield ledger
    finally:
        for view in ledger.views.values():
            await view.aclose()
        await store.aclose()
