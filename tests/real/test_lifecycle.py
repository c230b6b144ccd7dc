"""Whole lifecycles through TaskManager with real runc and containerd-shim-runc-v2."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters.event_store import EventStore, sqlite_env
from adapters.fifo_io import ForegroundIO
from cli.bootstrap import Settings, bootstrap
from domain.values import Status
from projections.task_states import TaskStatesView, key_of, replay
from shim.lifecycle.task_manager import TaskManager
from tests.conftest import event_types as types

Bundle = Callable[..., Path]


async def test_exit_status_stdout_and_four_event_history(
    manager: TaskManager, bundle: Bundle, settings: Settings
) -> None:
    out, err = io.BytesIO(), io.BytesIO()
    fifo = ForegroundIO(settings.state / "io" / "t1", out, err)
    try:
        created = await manager.create("t1", bundle("sh", "-c", "echo hi; echo oops >&2; exit 7"),
                                       stdio=fifo.stdio)  # fmt: skip
        fifo.shim_attached()
        assert created.status is Status.CREATED and created.pid > 0
        await manager.start("t1")
        exit_ = await manager.wait("t1")
        await fifo.drain(timeout=5)
    finally:
        fifo.close()
    assert exit_.status == 7
    assert out.getvalue() == b"hi\n" and err.getvalue() == b"oops\n"
    stopped = await manager.get("t1")
    assert stopped.status is Status.STOPPED and stopped.exit_status == 7

    await manager.delete("t1")
    history = await manager.history("t1")
    assert types(history) == ["Created", "Started", "Exited", "Deleted"]
    assert history[2].exit_status == 7
    assert [s.id for s in await manager.tasks()] == []


async def test_sigkill_of_sleep_gives_137(manager: TaskManager, bundle: Bundle) -> None:
    await manager.create("sleeper", bundle("sleep", "300"))
    running = await manager.start("sleeper")
    assert running.status is Status.RUNNING
    await manager.kill("sleeper", signal.SIGKILL)
    assert (await manager.wait("sleeper")).status == 137
    assert (await manager.get("sleeper")).exit_status == 137
    await manager.delete("sleeper")


async def test_the_same_id_can_be_created_again_after_delete(
    manager: TaskManager, bundle: Bundle, settings: Settings
) -> None:
    path = bundle("true")
    for _ in range(2):
        await manager.create("again", path)
        await manager.start("again")
        await manager.wait("again")
        await manager.delete("again")
    await manager.create("left-running", bundle("sleep", "300"))  # so the views are not empty
    await manager.start("left-running")
    history = await manager.history("again")
    assert types(history) == ["Created", "Started", "Exited", "Deleted"] * 2
    assert [e.originator_id for e in history[:4]] != [e.originator_id for e in history[4:]]
    assert history[4].incarnation == 2

    # The projection and a fresh replay of the whole store agree.
    store = EventStore(sqlite_env(settings.root))
    view = TaskStatesView(settings.root / "projections", store)
    try:
        await view.catch_up()
        events = [e for _, e in await store.read(0, 100_000)]
        states = {key_of(s): s for s in await view.tasks()}
        assert [key[:2] for key in states] == [("test", "left-running")]
        assert states == replay(events)
    finally:
        await view.aclose()
        await store.aclose()


async def test_an_exit_nobody_heard_is_recorded_on_the_next_read(
    settings: Settings, bundle: Bundle
) -> None:
    async with bootstrap(settings, serve_events=False) as deaf:
        await deaf.create("quiet", bundle("sh", "-c", "exit 5"))
        await deaf.start("quiet")
        shim = await deaf.shim("quiet")
        await shim.client.wait("quiet")  # the process is gone; nothing was recorded
        assert types(await deaf.history("quiet")) == ["Created", "Started"]

    async with bootstrap(settings, serve_events=False) as later:
        state = await later.get("quiet")
        assert state.status is Status.STOPPED and state.exit_status == 5
        exited = (await later.history("quiet"))[-1]
        assert type(exited).__name__ == "Exited" and exited.cause.kind == "reconciliation"
        await later.delete("quiet")


async def test_a_killed_shim_is_cleaned_up_and_its_task_recorded_as_exited(
    manager: TaskManager, bundle: Bundle, settings: Settings
) -> None:
    await manager.create("orphan", bundle("sleep", "300"))
    await manager.start("orphan")
    shim = await manager.shim("orphan")
    socket_path = (Path(shim.bundle.path) / "address").read_text().removeprefix("unix://")
    os.kill(shim.shim_pid, signal.SIGKILL)

    async with bootstrap(settings) as fresh:
        [state] = await fresh.tasks()
        assert state.status is Status.STOPPED and state.exit_status == 255
        exited = (await fresh.history("orphan"))[-1]
        assert exited.cause.kind == "reconciliation" and "shim lost" in exited.cause.detail
        await fresh.delete("orphan")
        assert types(await fresh.history("orphan"))[-1] == "Deleted"
    assert not (settings.state / "test" / "orphan").exists()
    assert not os.path.exists(socket_path), "the dead shim's socket must be removed too"


async def test_the_event_sink_records_an_exit_nobody_waited_for(
    manager: TaskManager, bundle: Bundle
) -> None:
    await manager.create("heard", bundle("sh", "-c", "exit 4"))
    await manager.start("heard")
    async with asyncio.timeout(10):
        while types(history := await manager.history("heard"))[-1] != "Exited":
            await asyncio.sleep(0.02)
    assert history[-1].exit_status == 4 and history[-1].cause.detail == "/tasks/exit"
    await manager.delete("heard")


async def test_with_nobody_serving_events_the_shim_still_exits_at_once(
    settings: Settings, bundle: Bundle
) -> None:
    async with bootstrap(settings, serve_events=False) as deaf:
        sink = settings.state / "events.sock"
        with socket.socket(socket.AF_UNIX) as probe:
            with pytest.raises(ConnectionRefusedError):
                probe.connect(str(sink))  # the path exists and refuses: shims fail fast
        await deaf.create("fast", bundle("true"))
        await deaf.start("fast")
        shim_pid = (await deaf.shim("fast")).shim_pid
        await deaf.wait("fast")
        await deaf.delete("fast")
    gone = time.monotonic() + 5  # the failure this catches: a shim lingering 10-15 s
    while os.path.exists(f"/proc/{shim_pid}") and time.monotonic() < gone:
        await asyncio.sleep(0.02)
    assert not os.path.exists(f"/proc/{shim_pid}")
