"""The Reconciler's scan in process, against real shims: what a crash test cannot set up.

Facts history missed without any crash (a shim's events not served, RPCs sent behind the
manager's back), a task no record knows in a running shim, a read model that lags
behind the store, and leftovers in other namespaces and of removals cut short.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cli.bootstrap import Settings, Wiring, bootstrap
from domain.errors import InvalidTransitionError
from domain.values import Status
from shim import DEFAULT_RUNTIME
from shim.lifecycle.shim_manager import ShimProcess
from shim.lifecycle.task_manager import TaskManager
from shim.ports import ProcessState, Stdio
from shim.recovery.report import Action, Reconciliation
from tests.conftest import event_types as types

Bundle = Callable[..., Path]


async def stopped(shim: ShimProcess, task_id: str) -> ProcessState:
    """Poll the shim until the task's process has exited (a 30 s guard, not a threshold)."""
    deadline = time.monotonic() + 30
    while (process := await shim.client.state(task_id)).status is not Status.STOPPED:
        assert time.monotonic() < deadline, f"{task_id} did not exit"
        await asyncio.sleep(0.02)
    return process


async def scan(manager: TaskManager, *, all_namespaces: bool = False) -> list[Reconciliation]:
    return await manager.reconcile_all(all_namespaces=all_namespaces)


async def test_an_exit_nobody_heard_is_recorded_with_the_shims_status_and_time(
    settings: Settings, bundle: Bundle
) -> None:
    async with bootstrap(settings, serve_events=False) as manager:  # the exit event is lost
        await manager.create("quiet", bundle("sh", "-c", "exit 3"))
        await manager.start("quiet")
        process = await stopped(await manager.shim("quiet"), "quiet")

        [entry] = await scan(manager)
        assert (entry.task_id, entry.action, entry.recorded) == (
            "quiet", Action.EXIT_RECORDED, ("Exited",))  # fmt: skip
        exited = (await manager.history("quiet"))[-1]
        assert (exited.exit_status, exited.exited_at) == (3, process.exited_at)
        assert exited.cause.kind == "reconciliation"

        [again] = await scan(manager)  # the record agrees now: nothing more to do
        assert (again.action, again.recorded) == (Action.UNCHANGED, ())
        await manager.delete("quiet")
        assert await scan(manager) == []


async def test_steps_taken_behind_the_managers_back_are_recorded(
    settings: Settings, bundle: Bundle
) -> None:
    """Start, pause and resume sent straight to the shim, with its events unheard."""
    async with bootstrap(settings, serve_events=False) as manager:
        await manager.create("drift", bundle("sleep", "300"))
        shim = await manager.shim("drift")
        pid = await shim.client.start("drift")
        [entry] = await scan(manager)
        assert (entry.action, entry.recorded) == (Action.START_RECORDED, ("Started",))
        assert (await manager.get("drift")).status is Status.RUNNING
        assert (await manager.history("drift"))[-1].pid == pid

        await shim.client.pause("drift")
        [entry] = await scan(manager)
        assert (entry.action, entry.recorded) == (Action.PAUSE_RECORDED, ("Paused",))
        await shim.client.resume("drift")
        [entry] = await scan(manager)
        assert (entry.action, entry.recorded) == (Action.RESUME_RECORDED, ("Resumed",))
        assert types(await manager.history("drift")) == [
            "Created", "Started", "Paused", "Resumed"]  # fmt: skip
        await manager.delete("drift", force=True)


async def test_a_running_task_no_record_knows_is_adopted(
    manager: TaskManager, bundle: Bundle, wiring: Wiring
) -> None:
    """A shim holding a started task (as a lost event store would leave it) is taken in."""
    user_bundle = bundle("sleep", "300")
    working = wiring.components.bundles.new(manager.namespace, "stray", user_bundle)
    shim = await wiring.shims.start(working, DEFAULT_RUNTIME)
    try:
        await shim.client.create("stray", working.path, Stdio(), wiring.shims.config.runc_options)
        pid = await shim.client.start("stray")
    finally:
        await shim.client.aclose()

    # delete without --force must not kill what it knows nothing about...
    with pytest.raises(InvalidTransitionError, match="reconcile"):
        await manager.delete("stray")
    # ... and the refusal changed nothing: reconcile still finds it running and adopts it.
    [entry] = await scan(manager)
    assert (entry.task_id, entry.incarnation, entry.action, entry.recorded) == (
        "stray", 1, Action.ADOPTED, ("Created", "Adopted", "Started"))  # fmt: skip
    state = await manager.get("stray")
    assert (state.status, state.pid, state.bundle) == (Status.RUNNING, pid, str(user_bundle))
    created = (await manager.history("stray"))[0]
    assert (created.runtime, created.cause.kind) == (DEFAULT_RUNTIME, "reconciliation")

    await manager.delete("stray", force=True)
    assert types(await manager.history("stray")) == [
        "Created", "Adopted", "Started", "Killed", "Exited", "Deleted"]  # fmt: skip


async def test_a_record_the_view_has_not_caught_up_with_is_reconciled_not_adopted(
    manager: TaskManager, bundle: Bundle, wiring: Wiring
) -> None:
    await manager.create("known", bundle("sleep", "300"))
    # An empty listing, as a lagging view would give: the store under the lock decides.
    [entry] = await wiring.components.reconciler.scan([], manager.namespace)
    assert (entry.task_id, entry.action, entry.incarnation) == ("known", Action.UNCHANGED, 1)
    assert types(await manager.history("known")) == ["Created"]


async def test_leftovers_are_cleaned_in_this_namespace_or_every_one(
    manager: TaskManager, bundle: Bundle, settings: Settings, wiring: Wiring
) -> None:
    user_bundle = bundle("true")
    wiring.components.bundles.new(settings.namespace, "orphan", user_bundle)
    wiring.components.bundles.new("elsewhere", "orphan2", user_bundle)
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    namespace_dir = settings.state / settings.namespace
    (namespace_dir / f".gone.deleting.{pid_max + 1}").mkdir()  # its remover died
    busy = namespace_dir / f".busy.deleting.{os.getpid()}"  # its remover is alive: not ours
    busy.mkdir()

    report = await scan(manager)
    assert [(e.task_id, e.action, e.incarnation) for e in report] == [
        ("gone", Action.CLEANED, None), ("orphan", Action.CLEANED, None)]  # fmt: skip
    assert sorted(p.name for p in namespace_dir.iterdir()) == [busy.name]
    assert (settings.state / "elsewhere" / "orphan2").is_dir()

    [entry] = await scan(manager, all_namespaces=True)
    assert (entry.namespace, entry.task_id, entry.action) == (
        "elsewhere", "orphan2", Action.CLEANED)  # fmt: skip
    assert not (settings.state / "elsewhere" / "orphan2").exists()
    busy.rmdir()


async def test_a_hung_shim_is_reported_and_the_scan_goes_on(
    manager: TaskManager, bundle: Bundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stopped (SIGSTOP) shim answers nothing: that task fails, the others are done."""
    import adapters.task_client

    await manager.create("hung", bundle("sleep", "300"))
    await manager.create("fine", bundle("sleep", "300"))
    shim_pid = (await manager.shim("hung")).shim_pid
    await manager.aclose()  # no cached connection: the scan must dial the shim
    monkeypatch.setattr(adapters.task_client, "CALL_TIMEOUT", 0.5)
    os.kill(shim_pid, signal.SIGSTOP)
    try:
        report = await scan(manager)
    finally:
        os.kill(shim_pid, signal.SIGCONT)
    assert [(e.task_id, e.action) for e in report] == [
        ("fine", Action.UNCHANGED), ("hung", Action.FAILED)]  # fmt: skip
    assert "Connect exceeded its deadline" in report[1].detail
    assert types(await manager.history("hung")) == ["Created"]  # nothing guessed
