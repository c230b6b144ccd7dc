"""Which shim events are believed, with the real shim publishing to this test's sink."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from shim.lifecycle.task_manager import TaskManager
from tests.conftest import event_types as types
from tests.waiting import wait_until_async

Bundle = Callable[..., Path]


async def test_the_tasks_own_shim_is_believed(manager: TaskManager, bundle: Bundle) -> None:
    """Its exit reaches the sink from the shim's own connection (the Connect reply's pid)
    and is recorded from the event alone: nobody waits for it, nobody reconciles."""
    await manager.create("own", bundle("sh", "-c", "exit 3"))
    await manager.start("own")

    async def exited_recorded() -> bool:
        return "Exited" in types(await manager.history("own"))

    await wait_until_async(exited_recorded, "the shim's exit was not recorded")
    exited = (await manager.history("own"))[-1]
    assert (exited.exit_status, exited.cause.kind, exited.cause.detail) == (
        3, "shim-event", "/tasks/exit")  # fmt: skip
    await manager.delete("own")
