"""`list` never shows a task running whose exit another process recorded while it looked.

issue 15 saw `list` on PostgreSQL say `running` just after the exit, twice in ~14 tries.
TaskQueries.tasks catches the view up, then loads each task with a process from the store
to reconcile it; an exit recorded by another process (the exiting CLI, serve's sink)
between the two is found in the store, reconcile has nothing to record, and the view was
read again only when reconcile recorded something: the stale row was shown. The window is
the store round trips between catch-up and load, which PostgreSQL makes longer. Here the
other process's exit lands exactly in that window, with a real SQLite store and view.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.event_store import EventStore, sqlite_env
from adapters.file_lock import TaskLocks
from cli.bootstrap import compose
from domain.state_dir import StateDir
from domain.task import Task
from domain.values import Cause, Status
from projections.task_states import TaskStatesView
from shim.lifecycle.shim_manager import ManagerConfig
from tests.shim.fakes import FakeShimBinary

CAUSE = Cause(kind="cli", uid=0)


class ExitRecordedMeanwhile(TaskStatesView):
    """After its first catch-up (the listing's), ``meanwhile`` runs once: another process."""

    def __init__(self, directory: Path, source: Any, meanwhile: Callable[[], Awaitable[None]]
                 ) -> None:  # fmt: skip
        super().__init__(directory, source)
        self._meanwhile: Callable[[], Awaitable[None]] | None = meanwhile

    async def catch_up(self, progress: Any = None) -> int:
        position = await super().catch_up(progress)
        if self._meanwhile is not None:
            meanwhile, self._meanwhile = self._meanwhile, None
            await meanwhile()
        return position


async def test_list_shows_an_exit_recorded_between_its_catch_up_and_its_reconcile(
    tmp_path: Path,
) -> None:
    store = EventStore(sqlite_env(tmp_path))
    task = Task(namespace="default", task_id="t", incarnation=1, bundle="/b", pid=7,
                runtime="r", node="", state_dir="", cause=CAUSE)  # fmt: skip
    task.start(7, CAUSE)
    await store.save(task)

    async def exit_elsewhere() -> None:
        other = EventStore(sqlite_env(tmp_path))
        try:
            running = await other.current("default", "t")
            assert running is not None and running.status is Status.RUNNING
            running.record_exit(0, datetime.now(UTC), CAUSE)
            await other.save(running)
        finally:
            await other.aclose()

    view = ExitRecordedMeanwhile(tmp_path / "projections", store, exit_elsewhere)
    state = StateDir(tmp_path / "state")
    components = compose(
        namespace="default", config=ManagerConfig(state=state, ttrpc_address="unix://sink"),
        binary=FakeShimBinary(), store=store, view=view, locks=TaskLocks(state),
        cause=lambda: CAUSE,
    )  # fmt: skip
    try:
        listed = await components.manager.tasks()
        assert [(s.id, s.status) for s in listed] == [("t", Status.STOPPED)]
    finally:
        await components.manager.aclose()
        await view.aclose()
        await store.aclose()
