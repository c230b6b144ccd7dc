"""Many tasks at once through one TaskManager: real runc, real shims, one event store.

64 lifecycles run concurrently on one event loop; each must come out with exactly its own
four events, carrying its own exit status, and nothing of any of them may be left.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cli.bootstrap import Settings
from domain.task import Task
from domain.values import Status
from shim.lifecycle.task_manager import TaskManager

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from busybox_bundle import make_bundle, make_rootfs  # noqa: E402

TASKS = 64


def bundles(directory: Path, count: int) -> list[Path]:
    """One bundle per task, all on one busybox rootfs: task N runs ``exit N``."""
    rootfs = directory / "rootfs"
    make_rootfs(rootfs)
    return [
        make_bundle(directory / f"b{n}", ["sh", "-c", f"exit {n}"], rootfs=rootfs)
        for n in range(1, count + 1)
    ]


async def lifecycle(manager: TaskManager, task_id: str, bundle: Path) -> int:
    """create, start, wait and delete one task; its exit status."""
    created = await manager.create(task_id, bundle)
    assert created.status is Status.CREATED
    await manager.start(task_id)
    exit_ = await manager.wait(task_id)
    deleted = await manager.delete(task_id)
    assert deleted is not None and deleted.status is Status.DELETED
    return exit_.status


async def test_64_lifecycles_at_once_each_keep_their_own_history(
    manager: TaskManager, settings: Settings, tmp_path: Path
) -> None:
    paths = bundles(tmp_path / "bundles", TASKS)
    ids = [f"c{n}" for n in range(1, TASKS + 1)]

    began = time.monotonic()
    # Every lifecycle runs to its end, failed or not, so that none is still going when the
    # fixtures tear down, and every failure is reported, not only the first.
    outcomes = await asyncio.gather(
        *(lifecycle(manager, task_id, path) for task_id, path in zip(ids, paths, strict=True)),
        return_exceptions=True,
    )
    elapsed = time.monotonic() - began
    # A figure for the report, not a threshold: speed belongs to bench/concurrency.py.
    print(f"\n{TASKS} concurrent lifecycles took {elapsed:.1f}s")

    failures = {
        i: repr(o) for i, o in zip(ids, outcomes, strict=True) if isinstance(o, BaseException)
    }
    assert not failures, f"{len(failures)} of {TASKS} lifecycles failed: {failures}"
    assert outcomes == list(range(1, TASKS + 1))
    for n, task_id in enumerate(ids, start=1):
        history = await manager.history(task_id)
        assert [type(e).__name__ for e in history] == ["Created", "Started", "Exited", "Deleted"]
        assert history[2].exit_status == n, f"{task_id} has another task's exit"
        assert history[0].task_id == task_id
        assert {e.originator_id for e in history} == {
            Task.create_id(settings.namespace, task_id, 1)
        }
    assert await manager.tasks() == []
    assert not (settings.state / settings.namespace).exists() or not any(
        (settings.state / settings.namespace).iterdir()
    ), "working bundles left in the state dir"


# --- a transition that races the task's own exit ------------------------------------------


async def test_delete_force_of_a_task_that_exits_meanwhile_still_deletes_it(
    manager: TaskManager, bundle: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """delete --force finds the task running and decides to kill it; the process dies just
    then (another command's kill, an OOM, its own end) and its exit is recorded before the
    kill gets the task's lock. --force must still delete it, and say nothing was killed.

    The window is hit every time: right where delete calls kill, the process is SIGKILLed
    from outside and the real event sink records its exit; then the real kill goes on.
    """
    await manager.create("dying", bundle("sleep", "300"))
    started = await manager.start("dying")
    real_kill = manager.kill

    async def kill_after_the_exit(task_id: str, signal_: int, *, all: bool = False) -> None:
        monkeypatch.setattr(manager, "kill", real_kill)  # once
        os.kill(started.pid, signal.SIGKILL)
        async with asyncio.timeout(30):
            while (await manager.get(task_id, reconcile=False)).status is not Status.STOPPED:
                await asyncio.sleep(0.01)
        await real_kill(task_id, signal_, all=all)

    monkeypatch.setattr(manager, "kill", kill_after_the_exit)
    deleted = await manager.delete("dying", force=True)

    assert deleted is not None and deleted.status is Status.DELETED
    history = await manager.history("dying")
    assert [type(e).__name__ for e in history] == ["Created", "Started", "Exited", "Deleted"]
    assert history[2].exit_status == 137
