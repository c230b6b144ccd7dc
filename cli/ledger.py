"""The history and its views, wired without any shim: what read-only commands open.

Kept apart from cli/bootstrap.py so that `history`, `events`, `replay`, `audit` and
`projections` do not import the event sink, ttrpc, the shim launcher or TaskManager.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from adapters.event_store import EventStore, store_env
from cli.settings import Settings
from domain.errors import InvalidArgumentError
from domain.state_dir import StateDir
from projections.event_index import EventIndex
from projections.state_files import StateFiles
from projections.task_states import TaskStatesView
from projections.view import View
from shim.lifecycle.bundle import Bundles, remove_container_state, save_container_state


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


def _prepare_root(settings: Settings) -> None:
    try:
        settings.root.mkdir(mode=0o711, parents=True, exist_ok=True)
        (settings.root / "logs").mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise InvalidArgumentError(f"cannot use {settings.root} as a directory: {exc}") from None


@asynccontextmanager
async def open_ledger(settings: Settings) -> AsyncIterator[Ledger]:
    """The event store and every view, without shims: history, events, replay, audit."""
    _prepare_root(settings)
    store = EventStore(store_env(settings.store, settings.root))
    directory = settings.root / "projections"
    ledger = Ledger(
        store,
        TaskStatesView(directory, store),
        EventIndex(directory, store),
        StateFiles(directory, store, StateDir(settings.state), save=_state_saver(settings)),
    )
    try:
        yield ledger
    finally:
        for view in ledger.views.values():
            await view.aclose()
        await store.aclose()
