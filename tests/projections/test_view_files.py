"""A view file swapped or spoiled under a live View: it reopens or rebuilds, losing nothing."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.event_store import EventStore, sqlite_env
from projections.task_states import TaskStatesView, replay
from tests.projections.test_task_states import all_events, random_workload, view_states


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    store = EventStore(sqlite_env(tmp_path))
    yield store
    await store.aclose()


async def test_a_view_reopens_a_file_another_process_rebuilt(store: EventStore, tmp_path: Path):
    """serve's case: its connection outlives the inode a rebuild replaced."""
    long_lived = TaskStatesView(tmp_path / "projections", store)
    rebuilder = TaskStatesView(tmp_path / "projections", store)
    try:
        await random_workload(store, seed=5, steps=40)
        await long_lived.catch_up()
        async with long_lived.reading() as before_swap:
            await rebuilder.rebuild()
            await random_workload(store, seed=6, steps=40)
            assert await long_lived.catch_up() == await store.head()
            # A read that began before the swap still has its connection.
            async with before_swap.execute("SELECT count(*) FROM task_states") as cursor:
                assert await cursor.fetchone() is not None
        assert await view_states(long_lived) == replay(await all_events(store))
        assert await view_states(rebuilder) == replay(await all_events(store))
    finally:
        await long_lived.aclose()
        await rebuilder.aclose()


async def test_a_database_of_other_tables_is_not_taken_for_the_view(
    store: EventStore, tmp_path: Path
) -> None:
    """Tables the view does not know (someone else's database) mean: not ours, rebuild."""
    await random_workload(store, seed=7, steps=40)
    view = TaskStatesView(tmp_path / "projections", store)
    view.path.parent.mkdir()
    with sqlite3.connect(view.path) as db:
        db.execute("CREATE TABLE position (id INTEGER PRIMARY KEY, position INTEGER NOT NULL)")
        db.execute("INSERT INTO position VALUES (1, 1000000)")  # would skip every event
    db.close()
    try:
        await view.catch_up()
        assert await view_states(view) == replay(await all_events(store))
    finally:
        await view.aclose()
