"""What `shimledger serve` does while it runs: watch every shim, keep the views current.

On start it reconciles the whole state dir (exits and lost shims from while nobody was
listening, bundles no record knows). Then it holds a connection to every shim, which
drains the shim's log and tells, by closing, when the shim goes away; a task whose shim
vanished is reconciled at once instead of at the next command. The read models are caught
up continuously, so `events --follow` and `list` see what happened within a moment.
Each rescan also rotates the watched tasks' logs that reached their size.
Stopping never touches a task: shims and containers keep running without us.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from domain.errors import ShimledgerError
from shim.lifecycle.shim_manager import ShimManager, ShimProcess
from shim.lifecycle.task_logs import LogRotation, rotate
from shim.lifecycle.task_manager import TaskManager
from shim.recovery.report import Reconciliation

logger = logging.getLogger(__name__)

Key = tuple[str, str]


class Supervisor:
    """Watches the shims of one state dir on behalf of a long-running process."""

    def __init__(
        self,
        manager: TaskManager,
        shims: ShimManager,
        catch_up: Callable[[], Awaitable[Any]],
        *,
        interval: float = 0.2,
        rescan: float = 1.0,
        rotation: LogRotation | None = None,
    ) -> None:
        self._manager = manager
        self._shims = shims
        self._catch_up = catch_up
        self._interval = interval
        self._rescan = rescan
        # Task logs are rotated at each rescan; the policy comes from the environment
        # (SHIMLEDGER_LOG_MAX_SIZE, SHIMLEDGER_LOG_MAX_FILES) unless one is handed in.
        self._rotation = rotation or LogRotation.from_env()
        self._watched: dict[Key, ShimProcess] = {}
        self._gone: asyncio.Queue[Key] = asyncio.Queue()

    @property
    def watched(self) -> set[Key]:
        return set(self._watched)

    async def start(self) -> list[Reconciliation]:
        """Reconcile everything, then connect to every shim still there."""
        report = await self._manager.reconcile_all(all_namespaces=True)
        await self.watch_new()
        await self._catch_up()
        return report

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set: reconcile lost shims, watch new ones, catch up the views."""
        loop = asyncio.get_running_loop()
        next_scan = loop.time() + self._rescan
        while not stop.is_set():
            try:
                await self._reconcile_gone()
                if loop.time() >= next_scan:
                    await self.watch_new()
                    await asyncio.to_thread(self.rotate_logs, list(self._watched))
                    next_scan = loop.time() + self._rescan
                await self._catch_up()
            except Exception:  # the service goes on; the next round tries again
                logger.exception("serve: a round of watching failed")
            try:
                async with asyncio.timeout(self._interval):
                    await stop.wait()
            except TimeoutError:
                pass

    async def watch_new(self) -> None:
        """Connect to the shim of every working bundle not watched yet.

        A bundle whose shim does not answer (being created right now, dead, or hung) is
        left to reconciliation: a task with a record is reconciled by the next command or
        `reconcile`, and a shim that answers later is picked up by a later scan.
        """
        alive, _ = await self._shims.load_existing_shims(self._lost, skip=self._watched)
        for shim in alive:
            self._watched[(shim.namespace, shim.id)] = shim
            logger.info("watching the shim of %s/%s (pid %d)", shim.namespace, shim.id,
                        shim.shim_pid)  # fmt: skip

    def rotate_logs(self, tasks: list[Key]) -> None:
        """Rotate the logs of these tasks that reached the size (see task_logs).

        Runs in a thread (a copy of 10 MB should not stall the loop): ``tasks`` is taken
        on the loop, where the set of watched shims changes.
        """
        log_dir = self._shims.config.log_dir
        if log_dir is None:
            return
        for namespace, task_id in tasks:
            for live in (log_dir / namespace / task_id).glob("[0-9]*.log"):
                rotate(live, self._rotation)

    def _lost(self, shim: ShimProcess) -> None:
        key = (shim.namespace, shim.id)
        if self._watched.get(key) is shim:  # not a newer incarnation's watcher
            del self._watched[key]
            self._gone.put_nowait(key)

    async def _reconcile_gone(self) -> None:
        """A watched shim closed its connection: deleted on purpose, or died."""
        while not self._gone.empty():
            namespace, task_id = self._gone.get_nowait()
            task = await self._manager.current(namespace, task_id)
            if task is None or not task.is_live:
                continue
            try:
                if await self._manager.reconcile(task):
                    logger.warning("task %s/%s: its shim went away; recorded", namespace, task_id)
            except (ShimledgerError, OSError) as exc:
                logger.warning("reconciling %s/%s failed: %s", namespace, task_id, exc)

    async def aclose(self) -> None:
        """Drop the connections; the shims and their tasks keep running."""
        watched, self._watched = self._watched, {}
        for shim in watched.values():
            await shim.client.aclose()
