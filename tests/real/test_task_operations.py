"""Every Task operation the shim offers, through TaskManager, with real runc and the real shim.

Each fact must be in history exactly once, whether the RPC reply or the shim's event
(delivered to the sink this test's manager serves) got there first.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from cli.bootstrap import Wiring
from domain.errors import FailedPreconditionError, InvalidTransitionError, ShimledgerError
from domain.values import Status
from shim.lifecycle.task_manager import TaskManager
from shim.ports import ShimEvent, Stdio, TaskPausedEvent, TaskResumedEvent
from tests.conftest import event_types as types

Bundle = Callable[..., Path]
MiB = 1024 * 1024


async def settle(manager: TaskManager) -> None:
    """Give the shim's events a moment to arrive, so that a duplicate would show."""
    await asyncio.sleep(0.3)


class Heard:
    """The shim events the manager's sink delivered, by record type, as they arrive."""

    def __init__(self, manager: TaskManager) -> None:
        self.types: list[str] = []
        handle = manager.handle_event

        async def spy(event: ShimEvent) -> None:
            self.types.append(type(event).__name__)
            await handle(event)

        manager.handle_event = spy  # type: ignore[method-assign]  # the sink calls it by name

    async def until(self, *wanted: str) -> None:
        """Wait (30 s guard, not a threshold) until every ``wanted`` event was delivered."""
        deadline = asyncio.get_running_loop().time() + 30
        while not (Counter(wanted) <= Counter(self.types)):
            assert asyncio.get_running_loop().time() < deadline, f"heard only {self.types}"
            await asyncio.sleep(0.02)


async def test_stats_show_the_task_and_update_changes_its_limits(
    manager: TaskManager, bundle: Bundle
) -> None:
    await manager.create("limited", bundle("sleep", "300"))
    await manager.start("limited")
    before = await manager.stats("limited")
    assert before.pids_current == 1
    assert before.memory_usage_bytes > 0
    assert before.cgroup_version in (1, 2)
    assert before.memory_limit_bytes != 64 * MiB

    resources = {"memory": {"limit": 64 * MiB}, "pids": {"limit": 32}}
    await manager.update("limited", resources)
    after = await manager.stats("limited")
    assert after.memory_limit_bytes == 64 * MiB
    assert after.pids_limit == 32

    history = await manager.history("limited")
    assert types(history) == ["Created", "Started", "Updated"]
    assert history[2].resources == resources
    await manager.delete("limited", force=True)


async def test_update_of_a_stopped_task_is_refused_and_records_nothing(
    manager: TaskManager, bundle: Bundle
) -> None:
    await manager.create("done", bundle("true"))
    await manager.start("done")
    await manager.wait("done")
    with pytest.raises(InvalidTransitionError, match="stopped"):
        await manager.update("done", {"pids": {"limit": 8}})
    with pytest.raises(FailedPreconditionError, match="no stats"):
        await manager.stats("done")
    assert types(await manager.history("done")) == ["Created", "Started", "Exited"]
    await manager.delete("done")


async def test_an_exec_has_its_own_start_state_kill_wait_and_delete(
    manager: TaskManager, bundle: Bundle
) -> None:
    heard = Heard(manager)
    await manager.create("host", bundle("sleep", "300"))
    await manager.start("host")
    process = await manager.add_exec("host", ["sleep", "200"])
    pid = await process.start()
    state = await process.state()
    assert state.pid == pid and state.status is Status.RUNNING
    await process.resize_pty(80, 24)  # no terminal: the shim accepts and ignores it
    await process.kill(9)
    exit_ = await process.wait()
    assert exit_.status == 137
    assert (await process.state()).status is Status.STOPPED
    await process.delete()

    # The exec's exit is not the task's: the task still runs.
    assert (await manager.get("host")).status is Status.RUNNING
    await heard.until("TaskExecAddedEvent", "TaskExecStartedEvent", "TaskExitEvent")
    counts = Counter(types(await manager.history("host")))
    assert counts == Counter(Created=1, Started=1, ExecAdded=1, ExecStarted=1, ExecExited=1)
    await manager.delete("host", force=True)


async def test_close_io_gives_an_exec_end_of_file_on_stdin(
    manager: TaskManager, bundle: Bundle, tmp_path: Path
) -> None:
    """The shim holds the stdin FIFO open itself; only CloseIO lets end-of-file through."""
    await manager.create("reader", bundle("sleep", "300"))
    await manager.start("reader")
    stdin, out = tmp_path / "stdin", tmp_path / "out"
    os.mkfifo(stdin)
    out.touch()  # the shim opens a file:// target, it does not create it
    writer = os.open(stdin, os.O_RDWR | os.O_NONBLOCK)
    try:
        stdio = Stdio(stdin=str(stdin), stdout=f"file://{out}", stderr=f"file://{out}")
        process = await manager.add_exec("reader", ["cat"], stdio=stdio)
        await process.start()
        os.write(writer, b"hello through stdin\n")
    finally:
        os.close(writer)
    await asyncio.sleep(0.5)
    assert (await process.state()).status is Status.RUNNING, "EOF arrived without CloseIO"
    await process.close_io()
    exit_ = await asyncio.wait_for(process.wait(), timeout=10)
    assert exit_.status == 0
    assert out.read_bytes() == b"hello through stdin\n"
    await process.delete()
    await manager.delete("reader", force=True)


async def test_pause_resume_and_exec_are_recorded_once_each(
    manager: TaskManager, bundle: Bundle
) -> None:
    """The manager records from the RPC replies; the shim's events for them must add nothing.

    The test waits until the shim's event for every step has really been delivered to
    the manager's sink, so both paths have run for each fact before history is read.
    """
    heard = Heard(manager)
    await manager.create("once", bundle("sleep", "300"))
    await manager.start("once")
    await manager.pause("once")
    await manager.resume("once")
    assert (await manager.exec("once", ["true"])).status == 0
    await manager.delete("once", force=True)
    await heard.until(
        "TaskCreateEvent", "TaskStartEvent", "TaskPausedEvent", "TaskResumedEvent",
        "TaskExecAddedEvent", "TaskExecStartedEvent", "TaskExitEvent", "TaskExitEvent",
        "TaskDeleteEvent",
    )  # fmt: skip
    assert types(await manager.history("once")) == [
        "Created", "Started", "Paused", "Resumed", "ExecAdded", "ExecStarted", "ExecExited",
        "Killed", "Exited", "Deleted",
    ]  # fmt: skip


async def test_a_pause_nobody_recorded_is_recorded_from_the_event_and_a_late_one_is_not(
    manager: TaskManager, bundle: Bundle
) -> None:
    await manager.create("quiet", bundle("sleep", "300"))
    await manager.start("quiet")
    shim = await manager.shim("quiet")
    await shim.client.pause("quiet")  # behind the manager's back: only the event tells
    # As the sink hands it on, from the shim's own connection.
    await manager.handle_event(TaskPausedEvent(manager.namespace, "quiet", sender=shim.shim_pid))
    assert (await manager.get("quiet")).status is Status.PAUSED
    history = await manager.history("quiet")
    assert types(history)[-1] == "Paused" and history[-1].cause.kind == "shim-event"

    await manager.resume("quiet")
    # A /tasks/paused delivered late, after the resume: the shim says running, so no Paused.
    await manager.handle_event(TaskPausedEvent(manager.namespace, "quiet", sender=shim.shim_pid))
    await manager.handle_event(TaskResumedEvent(manager.namespace, "quiet", sender=shim.shim_pid))
    await settle(manager)
    assert types(await manager.history("quiet")) == ["Created", "Started", "Paused", "Resumed"]
    assert (await manager.get("quiet")).status is Status.RUNNING
    await manager.delete("quiet", force=True)


def criu_works() -> bool:
    try:
        return subprocess.run(["criu", "check"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


async def test_checkpoint_dumps_the_task_where_criu_works_and_fails_cleanly_where_not(
    manager: TaskManager, bundle: Bundle, tmp_path: Path
) -> None:
    await manager.create("saved", bundle("sleep", "300"))
    await manager.start("saved")
    image = tmp_path / "image"
    if criu_works():
        await manager.checkpoint("saved", image, exit=True)
        assert any(image.iterdir()), "CRIU wrote no image"
        await manager.wait("saved")
        assert types(await manager.history("saved"))[:4] == [
            "Created", "Started", "Checkpointed", "Exited",
        ]  # fmt: skip
        await manager.delete("saved")
        return
    # This kernel (or CRIU) cannot dump: runc's error reaches the caller, nothing is
    # recorded, and the task keeps running.
    with pytest.raises(ShimledgerError, match="criu"):
        await manager.checkpoint("saved", image, exit=True)
    assert types(await manager.history("saved")) == ["Created", "Started"]
    assert (await manager.get("saved")).status is Status.RUNNING
    await manager.delete("saved", force=True)


async def test_a_task_handle_offers_every_operation_on_one_task(
    manager: TaskManager, bundle: Bundle
) -> None:
    await manager.create("handled", bundle("sleep", "300"))
    task = manager.task("handled")
    assert (await task.start()).status is Status.RUNNING
    assert [pid for pid, _ in await task.pids()] == [(await task.state()).pid]
    assert (await task.pause()).status is Status.PAUSED
    assert (await task.resume()).status is Status.RUNNING
    await task.update({"pids": {"limit": 16}})
    assert (await task.stats()).pids_limit == 16
    process = await task.exec(["true"], exec_id="probe")
    await process.start()
    assert (await process.wait()).status == 0
    await process.delete()
    await task.kill(9)
    assert (await task.wait()).status == 137
    assert (await task.delete()) is not None
    assert types(await manager.history("handled")) == [
        "Created", "Started", "Paused", "Resumed", "Updated", "ExecAdded", "ExecStarted",
        "ExecExited", "Killed", "Exited", "Deleted",
    ]  # fmt: skip


async def test_a_task_gets_a_cgroup_of_its_namespace_as_containerd_gives_it(
    manager: TaskManager, bundle: Bundle, wiring: Wiring
) -> None:
    """runc's default is /<id>: the same ID in two namespaces or state dirs would share one."""
    state = await manager.create("grouped", bundle("sleep", "300"))
    cgroups = Path(f"/proc/{state.pid}/cgroup").read_text().splitlines()
    parent = wiring.components.bundles.cgroup_parent
    assert parent.startswith("/shimledger-")  # a state dir of its own: a parent of its own
    assert any(line.endswith(f"{parent}/{manager.namespace}/grouped") for line in cgroups), (
        cgroups
    )
    await manager.delete("grouped")
