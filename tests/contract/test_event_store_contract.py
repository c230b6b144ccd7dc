"""The event store, written once and run against every backend store_env can choose:
SQLite (a temp file) and PostgreSQL (a real server of the session's own, on a unix socket)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.event_store import EventStore, store_env
from domain.errors import ConflictError
from domain.task import Task
from domain.values import Cause, Owner
from tests.conftest import event_types as types

CLI = Cause(kind="cli", uid=0)
NewStore = Callable[[], EventStore]


@pytest.fixture(params=["sqlite", "postgres"])
async def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[NewStore]:
    """Opens stores on one backend's database; each is closed at the end of the test."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'contract.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    env = store_env(url, tmp_path)
    assert request.param in env["PERSISTENCE_MODULE"]  # eventsourcing.sqlite, our postgres
    opened: list[EventStore] = []

    def open_store() -> EventStore:
        opened.append(EventStore(env))
        return opened[-1]

    yield open_store
    for store in opened:
        with contextlib.suppress(RuntimeError):  # closed by the test already
            await store.aclose()


def new_task(task_id: str = "a", incarnation: int = 1, namespace: str = "default") -> Task:
    return Task(namespace=namespace, task_id=task_id, incarnation=incarnation, bundle="/b",
                pid=100 + incarnation, runtime="io.containerd.runc.v2",
                node="node-a", state_dir="", cause=CLI)  # fmt: skip


async def live_to_deleted(store: EventStore, task_id: str, incarnation: int) -> None:
    task = new_task(task_id, incarnation)
    task.start(200 + incarnation, CLI)
    task.record_kill(9, False, CLI)
    task.record_exit(137, datetime.now(UTC), Cause(kind="shim", detail="/tasks/exit"))
    task.delete(CLI)
    await store.save(task)


async def test_an_unknown_task_has_no_current_state_and_no_history(new_store: NewStore) -> None:
    store = new_store()
    assert await store.current("default", "never") is None
    assert await store.history("default", "never") == []
    assert await store.head() == 0
    assert await store.read(0, 10) == []


async def test_save_then_current_and_history_of_a_task(new_store: NewStore) -> None:
    store = new_store()
    await store.save(new_task())
    current = await store.current("default", "a")
    assert current is not None
    assert (current.task_id, current.incarnation, current.pid, current.status.value) == (
        "a", 1, 101, "created"
    )  # fmt: skip
    current.start(4242, CLI)
    await store.save(current)
    again = await store.current("default", "a")
    assert again is not None and (again.status.value, again.pid) == ("running", 4242)
    events = await store.history("default", "a")
    assert types(events) == ["Created", "Started"]
    assert events[1].cause == CLI
    assert await store.current("other-ns", "a") is None, "namespaces are apart"


async def test_current_is_the_latest_incarnation_and_history_has_them_all(
    new_store: NewStore,
) -> None:
    store = new_store()
    for incarnation in range(1, 6):  # enough for the gallop-and-bisect lookup to bisect
        await live_to_deleted(store, "a", incarnation)
    await store.save(new_task("a", 6))
    current = await store.current("default", "a")
    assert current is not None and (current.incarnation, current.is_live) == (6, True)
    history = await store.history("default", "a")
    assert types(history) == ["Created", "Started", "Killed", "Exited", "Deleted"] * 5 + [
        "Created"
    ]
    assert [e.originator_id for e in history[::5]] == [
        Task.create_id("default", "a", n) for n in range(1, 7)
    ]


async def test_an_old_incarnation_changed_later_does_not_hide_the_latest(
    new_store: NewStore,
) -> None:
    store = new_store()
    old = new_task("a", 1)
    old.start(7, CLI)
    await store.save(old)
    await store.save(new_task("a", 2))  # (a store never refuses this: TaskManager does)
    old.record_kill(9, True, CLI)  # a late fact about incarnation 1
    await store.save(old)
    current = await store.current("default", "a")
    assert current is not None and current.incarnation == 2
    assert types(await store.history("default", "a")) == ["Created", "Started", "Killed",
                                                          "Created"]  # fmt: skip


async def test_read_pages_through_the_log_by_position_up_to_head(new_store: NewStore) -> None:
    store = new_store()
    for task_id in ("a", "b", "c"):
        task = new_task(task_id)
        task.start(1, CLI)
        await store.save(task)
    everything = await store.read(0, 100)
    positions = [position for position, _ in everything]
    assert len(everything) == 6 and positions == sorted(set(positions))
    assert await store.head() == positions[-1]
    assert [(e.originator_id, types([e])[0]) for _, e in everything] == [
        (Task.create_id("default", t, 1), kind) for t in "abc" for kind in ("Created", "Started")
    ]
    paged, after = [], 0
    while page := await store.read(after, 4):
        assert len(page) <= 4
        paged += page
        after = page[-1][0]
    assert [p for p, _ in paged] == positions
    assert await store.read(positions[-1], 10) == []
    assert [p for p, _ in await store.read(positions[2], 2)] == positions[3:5]


async def test_concurrent_saves_of_one_task_conflict_and_a_retry_succeeds(
    new_store: NewStore,
) -> None:
    store, other = new_store(), new_store()  # two connections, as two CLI processes have
    await store.save(new_task())
    mine, theirs = await store.current("default", "a"), await other.current("default", "a")
    assert mine is not None and theirs is not None
    theirs.start(55, CLI)
    await other.save(theirs)
    mine.record_kill(9, False, CLI)
    with pytest.raises(ConflictError, match="changed by another command"):
        await store.save(mine)
    assert types(await store.history("default", "a")) == ["Created", "Started"]

    fresh = await store.current("default", "a")  # retry on fresh state, as TaskManager does
    assert fresh is not None
    fresh.record_kill(9, False, CLI)
    await store.save(fresh)
    assert types(await other.history("default", "a")) == ["Created", "Started", "Killed"]


async def test_a_second_create_of_the_same_incarnation_conflicts(new_store: NewStore) -> None:
    store, other = new_store(), new_store()
    await store.save(new_task())
    with pytest.raises(ConflictError):
        await other.save(new_task())
    assert types(await store.history("default", "a")) == ["Created"]


async def test_a_reopened_store_sees_what_was_written(new_store: NewStore) -> None:
    store = new_store()
    await live_to_deleted(store, "a", 1)
    await store.save(new_task("a", 2))
    before = (await store.head(), await store.read(0, 100))
    await store.aclose()

    reopened = new_store()
    current = await reopened.current("default", "a")
    assert current is not None and current.incarnation == 2
    assert types(await reopened.history("default", "a")) == [
        "Created", "Started", "Killed", "Exited", "Deleted", "Created"
    ]  # fmt: skip
    after = (await reopened.head(), await reopened.read(0, 100))
    assert after[0] == before[0]
    assert [(p, e.originator_id, e.originator_version) for p, e in after[1]] == [
        (p, e.originator_id, e.originator_version) for p, e in before[1]
    ]


def owned_task(task_id: str, incarnation: int, node: str, state_dir: str = "/run/x") -> Task:
    return Task(namespace="default", task_id=task_id, incarnation=incarnation, bundle="/b",
                pid=100 + incarnation, runtime="io.containerd.runc.v2",
                node=node, state_dir=state_dir, cause=CLI)  # fmt: skip


async def test_an_owners_latest_incarnation_is_found_past_other_owners(
    new_store: NewStore,
) -> None:
    """Numbers are fleet-wide: node A's latest may lie under node B's newer ones."""
    store = new_store()
    mine, theirs = Owner("node-a", "/run/x"), Owner("node-b", "/run/x")
    assert await store.latest_owned("default", "a", mine) == (0, None)
    await store.save(owned_task("a", 1, "node-a"))
    await store.save(owned_task("a", 2, "node-b"))
    await store.save(owned_task("a", 3, "node-b"))
    latest, task = await store.latest_owned("default", "a", mine)
    assert latest == 3 and task is not None and (task.incarnation, task.node) == (1, "node-a")
    latest, task = await store.latest_owned("default", "a", theirs)
    assert latest == 3 and task is not None and task.incarnation == 3
    other_dir = Owner("node-a", "/run/y")  # the same node, another state dir: not its task
    assert await store.latest_owned("default", "a", other_dir) == (3, None)


async def test_the_owner_of_a_live_incarnation_elsewhere_is_named(new_store: NewStore) -> None:
    store = new_store()
    mine = Owner("node-a", "/run/x")
    await store.save(owned_task("a", 1, "node-b"))
    assert await store.live_elsewhere("default", "a", mine) == Owner("node-b", "/run/x")
    deleted = await store.incarnation("default", "a", 1)
    assert deleted is not None
    deleted.delete(CLI)  # a created task may be deleted at once
    await store.save(deleted)
    assert await store.live_elsewhere("default", "a", mine) is None, "a deleted one is not live"
    await store.save(owned_task("a", 2, "node-a"))
    assert await store.live_elsewhere("default", "a", mine) is None, "its own is not elsewhere"
    legacy = Owner("", "")  # recorded before nodes existed: every owner takes it for its own
    await store.save(owned_task("b", 1, legacy.node, legacy.state_dir))
    assert await store.live_elsewhere("default", "b", mine) is None
    latest, task = await store.latest_owned("default", "b", mine)
    assert latest == 1 and task is not None
