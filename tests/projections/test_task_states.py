"""The task-states view against a real SQLite event store: it must equal a fresh replay."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.event_store import EventStore, sqlite_env
from domain.task import Task
from domain.values import Cause, Status
from projections.task_states import TaskStatesView, key_of, replay

CAUSE = Cause(kind="cli", uid=0)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    store = EventStore(sqlite_env(tmp_path))
    yield store
    await store.aclose()


async def random_workload(store: EventStore, seed: int, steps: int = 120) -> None:
    """Random lifecycles over a few IDs, including re-creation after delete."""
    rng = random.Random(seed)
    for _ in range(steps):
        task_id = f"t{rng.randrange(6)}"
        namespace = rng.choice(["default", "other"])
        task = await store.current(namespace, task_id)
        if task is None or not task.is_live:
            incarnation = task.incarnation + 1 if task else 1
            task = Task(namespace=namespace, task_id=task_id, incarnation=incarnation,
                        bundle=f"/b/{task_id}", pid=rng.randrange(2, 9999),
                        runtime="r", node="node-a", state_dir="", cause=CAUSE)  # fmt: skip
        elif task.status is Status.CREATED:
            step = rng.choice(["start", "exit", "delete"])
            if step == "start":
                task.start(rng.randrange(2, 9999), CAUSE)
            elif step == "exit":
                task.record_exit(1, NOW, CAUSE)
            else:
                task.delete(CAUSE)
        elif task.status is Status.RUNNING:
            task.record_exit(rng.choice([0, 7, 137]), NOW, CAUSE)
        else:
            task.delete(CAUSE)
        await store.save(task)


async def all_events(store: EventStore) -> list[object]:
    return [event for _, event in await store.read(0, 1_000_000)]


async def view_states(view: TaskStatesView) -> dict[tuple[str, str, str, str], object]:
    return {key_of(s): s for s in await view.tasks()}


async def test_the_view_equals_a_fresh_replay_of_the_store(store: EventStore, tmp_path: Path):
    await random_workload(store, seed=1)
    view = TaskStatesView(tmp_path / "projections", store)
    try:
        assert await view.catch_up() == await store.head()
        expected = replay(await all_events(store))
        assert expected, "the workload should leave some live tasks"
        assert await view_states(view) == expected
    finally:
        await view.aclose()


async def test_a_restarted_view_resumes_after_its_position(store: EventStore, tmp_path: Path):
    await random_workload(store, seed=2, steps=60)
    view = TaskStatesView(tmp_path / "projections", store)
    await view.catch_up()
    first = await view.position()
    await view.aclose()

    await random_workload(store, seed=3, steps=60)
    reopened = TaskStatesView(tmp_path / "projections", store)
    try:
        assert await reopened.position() == first
        await reopened.catch_up()
        assert await reopened.position() == await store.head() > first
        assert await view_states(reopened) == replay(await all_events(store))
    finally:
        await reopened.aclose()


async def test_deleting_the_projection_file_loses_nothing(store: EventStore, tmp_path: Path):
    await random_workload(store, seed=4)
    view = TaskStatesView(tmp_path / "projections", store)
    await view.catch_up()
    before = await view_states(view)
    await view.aclose()
    view.path.unlink()

    rebuilt = TaskStatesView(tmp_path / "projections", store)
    try:
        await rebuilt.catch_up()
        assert await view_states(rebuilt) == before
    finally:
        await rebuilt.aclose()


async def test_the_store_finds_the_latest_incarnation(store: EventStore) -> None:
    for n in range(1, 12):
        task = Task(namespace="default", task_id="x", incarnation=n, bundle="/b", pid=n,
                    runtime="r", node="node-a", state_dir="", cause=CAUSE)  # fmt: skip
        task.delete(CAUSE)
        await store.save(task)
    current = await store.current("default", "x")
    assert current is not None and current.incarnation == 11
    assert len(await store.history("default", "x")) == 22
    assert await store.current("default", "y") is None


async def test_a_concurrent_append_is_a_conflict_not_a_lost_write(store: EventStore) -> None:
    from domain.errors import ConflictError

    task = Task(namespace="default", task_id="x", incarnation=1, bundle="/b", pid=1,
                runtime="r", node="node-a", state_dir="", cause=CAUSE)  # fmt: skip
    await store.save(task)
    first = await store.current("default", "x")
    second = await store.current("default", "x")
    assert first is not None and second is not None
    first.start(2, CAUSE)
    second.record_exit(1, NOW, CAUSE)
    await store.save(first)
    with pytest.raises(ConflictError):
        await store.save(second)
    current = await store.current("default", "x")
    assert current is not None and current.status is Status.RUNNING


async def test_a_rebuild_swaps_in_a_view_equal_to_the_old_one(store: EventStore, tmp_path: Path):
    await random_workload(store, seed=5)
    view = TaskStatesView(tmp_path / "projections", store)
    try:
        await view.catch_up()
        before = await view_states(view)
        inode = view.path.stat().st_ino
        seen: list[tuple[int, int]] = []
        position = await view.rebuild(lambda done, head: seen.append((done, head)))
        assert position == await store.head()
        assert view.path.stat().st_ino != inode, "a fresh file was swapped in"
        assert seen and seen[-1][0] == seen[-1][1]
        assert await view_states(view) == before
        assert not list(view.path.parent.glob(".*rebuild*"))
    finally:
        await view.aclose()


class CrashingView(TaskStatesView):
    """Dies half-way through its Nth page, as a process killed mid-page would stop."""

    def __init__(self, *args: object, fail_at_page: int) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.fail_at_page = fail_at_page
        self.pages = 0

    async def apply_page(self, db, page) -> None:  # type: ignore[no-untyped-def]
        self.pages += 1
        if self.pages == self.fail_at_page:
            await super().apply_page(db, page[: len(page) // 2])  # written, not committed
            raise RuntimeError("crash mid-page")
        await super().apply_page(db, page)


async def test_a_crash_mid_page_neither_skips_nor_doubles(
    store: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("projections.view.PAGE_SIZE", 10)
    await random_workload(store, seed=6, steps=80)
    directory = tmp_path / "projections"
    crashing = CrashingView(directory, store, fail_at_page=4)
    with pytest.raises(RuntimeError, match="crash mid-page"):
        await crashing.catch_up()
    # Three whole pages were committed with their position; the fourth not at all.
    assert await crashing.position() == 30
    await crashing.aclose()

    resumed = TaskStatesView(directory, store)
    try:
        assert await resumed.catch_up() == await store.head()
        assert await view_states(resumed) == replay(await all_events(store))
    finally:
        await resumed.aclose()
