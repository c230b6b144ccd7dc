"""TaskManager's own rules, on fake shims and a real SQLite store and view."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from domain.errors import AlreadyExistsError, InvalidTransitionError, NotFoundError
from domain.values import Status
from shim.lifecycle.task_manager import TaskManager
from shim.ports import TaskExitEvent, TaskStartEvent
from tests.conftest import event_types as types
from tests.shim.conftest import new_manager
from tests.shim.fakes import FakeShimBinary


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[TaskManager, FakeShimBinary]]:
    binary = FakeShimBinary()
    async with new_manager(tmp_path, binary) as manager:
        yield manager, binary


def exit_event(
    task_id: str, pid: int, status: int, exec_id: str = "", *, sender: int | None
) -> TaskExitEvent:
    """A /tasks/exit as the sink hands it on: ``sender`` is the peer's pid (the shim's)."""
    return TaskExitEvent(namespace="default", container_id=task_id, exec_id=exec_id or task_id,
                         pid=pid, exit_status=status, exited_at=datetime.now(UTC),
                         sender=sender)  # fmt: skip


async def test_an_exit_heard_twice_is_recorded_once(setup, user_bundle, tmp_path) -> None:
    manager, binary = setup
    created = await manager.create("a", user_bundle)
    await manager.start("a")
    shim = binary.shims[str(tmp_path / "state" / "default" / "a")]
    shim.exit("a", 3)
    await manager.handle_event(exit_event("a", created.pid, 3, sender=shim.pid))
    await manager.handle_event(exit_event("a", created.pid, 3, sender=shim.pid))
    assert (await manager.wait("a")).status == 3
    assert types(await manager.history("a")) == ["Created", "Started", "Exited"]


async def test_an_exec_exit_is_not_the_task_exit(setup, user_bundle, tmp_path) -> None:
    manager, binary = setup
    created = await manager.create("a", user_bundle)
    await manager.start("a")
    shim = binary.shims[str(tmp_path / "state" / "default" / "a")]
    await manager.handle_event(exit_event("a", created.pid + 5, 1, "exec1", sender=shim.pid))
    assert (await manager.get("a")).status is Status.RUNNING


async def test_a_live_id_cannot_be_created_twice(setup, user_bundle) -> None:
    manager, _ = setup
    await manager.create("a", user_bundle)
    with pytest.raises(AlreadyExistsError):
        await manager.create("a", user_bundle)


async def test_running_tasks_are_only_deleted_with_force(setup, user_bundle) -> None:
    manager, binary = setup
    await manager.create("a", user_bundle)
    await manager.start("a")
    with pytest.raises(InvalidTransitionError, match="kill it first"):
        await manager.delete("a")
    deleted = await manager.delete("a", force=True)
    assert deleted.status is Status.DELETED
    events = await manager.history("a")
    assert types(events) == ["Created", "Started", "Killed", "Exited", "Deleted"]
    assert (events[2].signal, events[2].all) == (9, True)
    assert (events[3].exit_status, events[3].signal) == (137, 9)
    with pytest.raises(NotFoundError):
        await manager.get("a")


async def test_a_dead_shim_is_cleaned_up_and_recorded_with_status_255(setup, user_bundle) -> None:
    manager, binary = setup
    await manager.create("a", user_bundle)
    await manager.start("a")
    await manager.aclose()  # drop cached connections, as a new CLI process would have none
    for shim in binary.shims.values():
        shim.alive = False
    [state] = await manager.tasks()
    assert (state.status, state.exit_status) == (Status.STOPPED, 255)
    assert binary.cleaned == ["a"]
    await manager.delete("a")
    assert types(await manager.history("a"))[-1] == "Deleted"


async def test_events_heard_by_another_process_wait_for_the_start_in_progress(
    setup, user_bundle, tmp_path
) -> None:
    manager, binary = setup
    created = await manager.create("a", user_bundle)
    shim = binary.shims[str(tmp_path / "state" / "default" / "a")]
    delivered: list[asyncio.Task[None]] = []
    # another CLI process, serving the event sink
    async with new_manager(tmp_path, binary) as other:

        async def deliver() -> None:
            await other.handle_event(TaskStartEvent("default", "a", created.pid, sender=shim.pid))
            await other.handle_event(exit_event("a", created.pid, 0, sender=shim.pid))

        async def events_reach_the_other_process() -> None:
            shim.exit("a", 0)  # the process exits at once, and the shim publishes both events
            delivered.append(asyncio.ensure_future(deliver()))
            await asyncio.sleep(0.05)  # they arrive while the Start RPC is still returning

        shim.during_start = events_reach_the_other_process
        await manager.start("a")
        async with asyncio.timeout(5):
            await delivered[0]
    events = await manager.history("a")
    assert types(events) == ["Created", "Started", "Exited"]
    assert events[1].cause.kind == "cli" and events[2].cause.detail == "/tasks/exit"
    assert (await manager.get("a")).status is Status.STOPPED


@pytest.mark.parametrize("sender", [None, 4242])
async def test_an_exit_from_anyone_but_the_tasks_shim_is_ignored(
    setup, user_bundle, sender: int | None
) -> None:
    """Unknown or another process: only the shim that serves the task speaks for it."""
    manager, _ = setup
    created = await manager.create("a", user_bundle)
    await manager.start("a")
    await manager.handle_event(exit_event("a", created.pid, 42, sender=sender))
    assert (await manager.get("a", reconcile=False)).status is Status.RUNNING
    assert types(await manager.history("a")) == ["Created", "Started"]
    await manager.delete("a", force=True)
