"""The ShimClient port, written once and run against FakeClient and the real shim.

Every case runs twice (``shims`` is parametrized): on tests/shim/fakes.py, and on
adapters.task_client.ShimTaskClient talking to containerd-shim-runc-v2 with real runc on
a busybox bundle. Where the fake and the real shim disagree, the fake is wrong.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter
from typing import Any

import pytest

from adapters.shim_binary import ShimBinaryLauncher
from adapters.task_client import ShimTaskClient
from domain.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    NotFoundError,
    UnavailableError,
    UnknownError,
)
from domain.values import Status
from shim.ports import ShimBinary, ShimClient, Stdio, TaskExitEvent, TaskStats
from tests.contract.conftest import STEP, Shims
from tests.shim.fake_shim import FakeShim
from tests.shim.fakes import FakeClient, FakeShimBinary

MiB = 1024 * 1024


# --- the shape of the port ------------------------------------------------------------------


def members(protocol: type) -> list[str]:
    return sorted(n for n in vars(protocol) if not n.startswith("_"))


@pytest.mark.parametrize(
    ("protocol", "implementation"),
    [(ShimClient, FakeClient), (ShimClient, ShimTaskClient),
     (ShimBinary, FakeShimBinary), (ShimBinary, ShimBinaryLauncher)],
)  # fmt: skip
def test_every_method_of_the_port_exists_with_the_same_parameters(
    protocol: type, implementation: type
) -> None:
    for name in members(protocol):
        declared = inspect.getattr_static(protocol, name)
        offered = inspect.getattr_static(implementation, name, None)
        assert offered is not None, f"{implementation.__name__} lacks {name}"
        if isinstance(declared, property):
            assert isinstance(offered, property), f"{name} must be a property"
            continue
        assert inspect.iscoroutinefunction(offered) == inspect.iscoroutinefunction(declared)
        assert inspect.signature(offered) == inspect.signature(declared), name


def test_the_fakes_are_the_ports_for_a_type_checker() -> None:
    client: ShimClient = FakeClient(FakeShim(pid=1))  # mypy checks these assignments
    binary: ShimBinary = FakeShimBinary()
    assert not client.closed and binary is not None


# --- lifecycle of the init ------------------------------------------------------------------


async def test_create_makes_a_created_task_and_start_runs_it(shims: Shims) -> None:
    shim = await shims.launch("sleep", "300")
    assert await shim.client.connect(shim.id) > 0  # the shim's pid
    pid = await shim.create()
    state = await shim.client.state(shim.id)
    assert (state.pid, state.status, state.exit_status, state.exited_at) == (
        pid, Status.CREATED, 0, None
    )  # fmt: skip
    assert await shim.client.pids(shim.id) == [(pid, "")]

    assert await shim.client.start(shim.id) == pid
    state = await shim.client.state(shim.id)
    assert (state.pid, state.status) == (pid, Status.RUNNING)
    assert await shim.client.pids(shim.id) == [(pid, "")]
    with pytest.raises(UnknownError, match="cannot start a running process"):
        await shim.client.start(shim.id)


async def test_sigkill_ends_the_task_and_wait_and_delete_return_its_exit(shims: Shims) -> None:
    shim = await shims.launch("sleep", "300")
    await shim.create()
    await shim.client.start(shim.id)
    await shim.client.kill(shim.id, 0)  # a probe: nothing happens
    await shim.client.kill(shim.id, 15)  # PID 1 without a handler ignores it
    assert (await shim.client.state(shim.id)).status is Status.RUNNING

    await shim.client.kill(shim.id, 9)
    async with asyncio.timeout(STEP):
        exit_ = await shim.client.wait(shim.id)
    assert exit_.status == 137
    state = await shim.client.state(shim.id)
    assert (state.status, state.exit_status, state.exited_at) == (
        Status.STOPPED, 137, exit_.exited_at
    )  # fmt: skip
    assert await shim.client.wait(shim.id) == exit_  # again, at once
    with pytest.raises(NotFoundError, match="process already finished"):
        await shim.client.kill(shim.id, 9)

    assert await shim.client.delete(shim.id) == exit_
    with pytest.raises(NotFoundError, match="container not created"):
        await shim.client.state(shim.id)
    with pytest.raises(NotFoundError):
        await shim.client.delete(shim.id)


async def test_a_created_task_dies_of_sigkill_before_it_starts(shims: Shims) -> None:
    shim = await shims.launch("sleep", "300")
    await shim.create()
    await shim.client.kill(shim.id, 9)
    async with asyncio.timeout(STEP):
        assert (await shim.client.wait(shim.id)).status == 137
    assert (await shim.client.delete(shim.id)).status == 137


async def test_a_running_task_cannot_be_deleted(shims: Shims) -> None:
    shim = await shims.launch("sleep", "300")
    await shim.create()
    await shim.client.start(shim.id)
    with pytest.raises(UnknownError, match="cannot delete a running process"):
        await shim.client.delete(shim.id)
    assert (await shim.client.state(shim.id)).status is Status.RUNNING


async def test_an_init_that_ends_by_itself_reports_its_status(shims: Shims) -> None:
    shim = await shims.launch("sh", "-c", "exit 7")
    await shim.create()
    await shim.client.start(shim.id)
    async with asyncio.timeout(STEP):
        assert (await shim.client.wait(shim.id)).status == 7
    assert await shim.client.pids(shim.id) == []


# --- a stopped task refuses what needs a process ----------------------------------------------


async def test_a_stopped_task_refuses_what_needs_a_process(shims: Shims) -> None:
    shim = await shims.launch("true")
    await shim.create()
    await shim.client.start(shim.id)
    async with asyncio.timeout(STEP):
        await shim.client.wait(shim.id)
    refusals: dict[str, Any] = {
        "cannot start a stopped process": shim.client.start(shim.id),
        "cannot pause a stopped container": shim.client.pause(shim.id),
        "cannot resume a stopped container": shim.client.resume(shim.id),
        "cannot update a stopped container": shim.client.update(shim.id, {"pids": {"limit": 9}}),
        "cannot exec in a stopped state": shim.client.exec(
            shim.id, "late", shim.process("true"), Stdio()
        ),
        "cannot checkpoint a stopped container": shim.client.checkpoint(
            shim.id, str(shims.work / "image"), exit=False
        ),
    }
    for message, call in refusals.items():
        with pytest.raises(UnknownError, match=message):
            await call
    assert await shim.client.pids(shim.id) == []
    await shim.client.close_io(shim.id)  # nothing to close, and no error


# --- execs ------------------------------------------------------------------------------------


async def test_an_exec_is_added_started_waited_for_and_deleted(shims: Shims) -> None:
    shim = await shims.launch("sleep", "300")
    init = await shim.create()
    await shim.client.start(shim.id)
    await shim.client.exec(shim.id, "e1", shim.process("sh", "-c", "exit 3"), Stdio())
    with pytest.raises(AlreadyExistsError):
        await shim.client.exec(shim.id, "e1", shim.process("true"), Stdio())
    state = await shim.client.state(shim.id, "e1")
    assert (state.pid, state.status) == (0, Status.CREATED)
    with pytest.raises(FailedPreconditionError, match="process not created"):
        await shim.client.kill(shim.id, 9, exec_id="e1")
    await shim.client.close_io(shim.id, "e1")
    await shim.client.resize_pty(shim.id, 80, 24, "e1")  # no terminal: nothing to do

    pid = await shim.client.start(shim.id, "e1")
    assert pid > 0 and pid != init
    async with asyncio.timeout(STEP):
        exit_ = await shim.client.wait(shim.id, "e1")
    assert exit_.status == 3
    state = await shim.client.state(shim.id, "e1")
    assert (state.pid, state.status, state.exit_status) == (pid, Status.STOPPED, 3)
    with pytest.raises(NotFoundError, match="process already finished"):
        await shim.client.kill(shim.id, 9, exec_id="e1")
    with pytest.raises(UnknownError, match="cannot start a stopped process"):
        await shim.client.start(shim.id, "e1")
    assert await shim.client.delete(shim.id, "e1") == exit_
    with pytest.raises(NotFoundError, match="process does not exist e1"):
        await shim.client.state(shim.id, "e1")
    with pytest.raises(NotFoundError, match="process does not exist e1"):
        await shim.client.delete(shim.id, "e1")
    assert (await shim.client.state(shim.id)).status is Status.RUNNING  # the init goes on


async def test_running_execs_show_in_pids_and_die_with_the_init(shims: Shims) -> None:
    shim = await shims.launch("sleep", "300")
    init = await shim.create()
    await shim.client.start(shim.id)
    for exec_id in ("long", "short"):
        await shim.client.exec(shim.id, exec_id, shim.process("sleep", "300"), Stdio())
    long, short = [await shim.client.start(shim.id, e) for e in ("long", "short")]
    assert sorted(await shim.client.pids(shim.id)) == sorted(
        [(init, ""), (long, "long"), (short, "short")]
    )
    with pytest.raises(UnknownError, match="cannot delete a running process"):
        await shim.client.delete(shim.id, "long")
    await shim.client.kill(shim.id, 15, exec_id="short")  # not PID 1: SIGTERM kills it
    async with asyncio.timeout(STEP):
        assert (await shim.client.wait(shim.id, "short")).status == 143
    await shim.client.kill(shim.id, 9, all=True)
    async with asyncio.timeout(STEP):
        assert (await shim.client.wait(shim.id)).status == 137
        assert (await shim.client.wait(shim.id, "long")).status == 137
    assert (await shim.client.delete(shim.id, "long")).status == 137


async def test_an_unstarted_exec_is_deleted_with_status_0(shims: Shims) -> None:
    shim = await shims.launch("sleep", "300")
    await shim.create()
    await shim.client.exec(shim.id, "never", shim.process("true"), Stdio())  # created: allowed
    assert (await shim.client.delete(shim.id, "never")).status == 0


# --- pause and resume -------------------------------------------------------------------------


async def test_pause_and_resume_freeze_and_thaw_a_running_task(shims: Shims) -> None:
    shim = await shims.launch("sleep", "300")
    await shim.create()
    with pytest.raises(UnknownError, match="cannot pause task in created state"):
        await shim.client.pause(shim.id)
    with pytest.raises(UnknownError, match="cannot resume task in created state"):
        await shim.client.resume(shim.id)
    await shim.client.start(shim.id)
    with pytest.raises(UnknownError, match="cannot resume a running process"):
        await shim.client.resume(shim.id)

    await shim.client.pause(shim.id)
    assert (await shim.client.state(shim.id)).status is Status.PAUSED
    with pytest.raises(UnknownError, match="cannot pause a paused container"):
        await shim.client.pause(shim.id)
    with pytest.raises(UnknownError, match="cannot exec in a paused state"):
        await shim.client.exec(shim.id, "e", shim.process("true"), Stdio())
    with pytest.raises(UnknownError, match="cannot delete a paused process"):
        await shim.client.delete(shim.id)

    await shim.client.resume(shim.id)
    assert (await shim.client.state(shim.id)).status is Status.RUNNING


# --- resources, stdio, checkpoints ------------------------------------------------------------


async def test_stats_show_the_task_and_update_changes_its_limits(shims: Shims) -> None:
    shim = await shims.launch("sleep", "300")
    await shim.create()
    await shim.client.start(shim.id)
    before = await shim.client.stats(shim.id)
    assert isinstance(before, TaskStats)
    # >= 1: right after Start, runc init's threads may not all be gone yet.
    assert before.pids_current >= 1 and before.memory_usage_bytes > 0
    assert before.cgroup_version in (1, 2)
    assert before.memory_limit_bytes != 64 * MiB

    await shim.client.update(shim.id, {"memory": {"limit": 64 * MiB}, "pids": {"limit": 32}})
    after = await shim.client.stats(shim.id)
    assert (after.memory_limit_bytes, after.pids_limit) == (64 * MiB, 32)


async def test_close_io_and_resize_pty_need_only_the_process(shims: Shims) -> None:
    shim = await shims.launch("sleep", "300")
    await shim.create()
    await shim.client.start(shim.id)
    await shim.client.close_io(shim.id)
    await shim.client.resize_pty(shim.id, 120, 40)
    # The shim's CloseIO alone passes this error on without its code: Unknown, not NotFound.
    with pytest.raises(UnknownError, match="process does not exist nope: not found"):
        await shim.client.close_io(shim.id, "nope")
    with pytest.raises(NotFoundError, match="process does not exist nope"):
        await shim.client.resize_pty(shim.id, 1, 1, "nope")


# --- unknown tasks ----------------------------------------------------------------------------


async def test_every_call_on_an_unknown_task_is_not_found(shims: Shims) -> None:
    shim = await shims.launch("sleep", "300")
    c, image = shim.client, str(shims.work / "image")
    calls = {
        "state": c.state("nope"), "start": c.start("nope"), "wait": c.wait("nope"),
        "kill": c.kill("nope", 9), "delete": c.delete("nope"), "pids": c.pids("nope"),
        "pause": c.pause("nope"), "resume": c.resume("nope"), "close_io": c.close_io("nope"),
        "resize_pty": c.resize_pty("nope", 1, 1), "update": c.update("nope", {}),
        "stats": c.stats("nope"), "checkpoint": c.checkpoint("nope", image, exit=False),
        "exec": c.exec("nope", "e", shim.process("true"), Stdio()),
    }  # fmt: skip
    for name, call in calls.items():
        with pytest.raises(NotFoundError, match="container not created"):
            await call
        assert not c.closed, f"{name} of an unknown task closed the connection"
    assert await c.connect("nope") > 0  # Connect answers for any ID: it names the shim


# --- shutdown and closing ---------------------------------------------------------------------


async def test_shutdown_waits_for_the_last_task_then_the_shim_goes(shims: Shims) -> None:
    shim = await shims.launch("true")
    await shim.create()
    await shim.client.shutdown(shim.id)  # it still serves a container: no-op
    await shim.client.start(shim.id)
    async with asyncio.timeout(STEP):
        await shim.client.wait(shim.id)
    await shim.client.delete(shim.id)
    assert not shim.gone.is_set()

    await shim.client.shutdown(shim.id)
    async with asyncio.timeout(STEP):
        await shim.gone.wait()  # the shim closed the connection: on_close ran
    assert shim.client.closed
    with pytest.raises(UnavailableError):
        await shim.client.state(shim.id)
    with pytest.raises(UnavailableError):
        await shim.client.connect(shim.id)
    with pytest.raises(UnavailableError):
        await shim.reconnect()


async def test_calls_after_aclose_are_unavailable_and_the_shim_lives_on(shims: Shims) -> None:
    shim = await shims.launch("sleep", "300")
    pid = await shim.create()
    await shim.client.aclose()
    assert shim.client.closed
    for call in (shim.client.state(shim.id), shim.client.connect(shim.id),
                 shim.client.kill(shim.id, 9), shim.client.shutdown(shim.id)):  # fmt: skip
        with pytest.raises(UnavailableError):
            await call
    assert not shim.gone.is_set(), "on_close is for the peer going away, not for our close"
    other = await shim.reconnect()  # the task is still there, for a new connection
    try:
        assert (await other.state(shim.id)).pid == pid
    finally:
        await other.aclose()


async def test_a_wait_in_progress_fails_unavailable_when_the_connection_closes(
    shims: Shims,
) -> None:
    shim = await shims.launch("sleep", "300")
    await shim.create()
    await shim.client.start(shim.id)
    waiting = asyncio.ensure_future(shim.client.wait(shim.id))
    await asyncio.sleep(0)  # let the Wait call go out
    await shim.client.aclose()
    async with asyncio.timeout(STEP):
        with pytest.raises(UnavailableError):
            await waiting


# --- events -----------------------------------------------------------------------------------


async def test_the_shim_publishes_the_same_events(shims: Shims) -> None:
    shim = await shims.launch("sleep", "300")
    await shim.create()
    await shim.client.start(shim.id)
    await shim.client.exec(shim.id, "e1", shim.process("sh", "-c", "exit 2"), Stdio())
    await shim.client.start(shim.id, "e1")
    async with asyncio.timeout(STEP):
        await shim.client.wait(shim.id, "e1")
    await shim.client.pause(shim.id)
    await shim.client.resume(shim.id)
    await shim.client.kill(shim.id, 9)
    async with asyncio.timeout(STEP):
        await shim.client.wait(shim.id)
    await shim.client.delete(shim.id, "e1")
    await shim.client.delete(shim.id)
    wanted = Counter({
        "TaskCreateEvent": 1, "TaskStartEvent": 1, "TaskExecAddedEvent": 1,
        "TaskExecStartedEvent": 1, "TaskExitEvent": 2, "TaskPausedEvent": 1,
        "TaskResumedEvent": 1, "TaskDeleteEvent": 1,
    })  # fmt: skip
    assert await shim.events_heard(wanted) == wanted
    exits = [(e.exec_id, e.exit_status) for e in shim.heard if isinstance(e, TaskExitEvent)]
    assert exits == [("e1", 2), (shim.id, 137)]
