"""Connections to the shims of live tasks, kept for the life of one process.

There is no daemon holding a map of shims: a command finds a task's shim from the
``address`` file in its working bundle and connects. A process that talks to the same
shim several times (a `run`, or serve) keeps the connection here, and drops it the moment
it closes, so that a new incarnation's healthy shim is never taken for the old dead one.
"""

from __future__ import annotations

from domain.errors import NotFoundError, UnavailableError
from domain.task import Task
from domain.values import Status
from shim.lifecycle.bundle import Bundles
from shim.lifecycle.shim_manager import ShimManager, ShimProcess

Key = tuple[str, str]


class ShimConnections:
    """A cache of Task clients, one per live task, reconnected on demand."""

    def __init__(self, shims: ShimManager, bundles: Bundles) -> None:
        self._shims = shims
        self._bundles = bundles
        self._live: dict[Key, ShimProcess] = {}

    async def connect(self, task: Task) -> ShimProcess:
        """The shim serving the task; UnavailableError if it has no bundle or does not answer."""
        key = (task.namespace, task.task_id)
        shim = self._live.get(key)
        if shim is not None and shim.client.closed:
            # That shim went away (deleted by another command, or dead): never reuse its
            # connection, or a new incarnation's healthy shim would be taken for dead.
            del self._live[key]
            await shim.client.aclose()
            shim = None
        if shim is None:
            bundle = self._bundles.load(task.namespace, task.task_id)
            if bundle is None:
                raise UnavailableError(f"task {task.task_id} has no bundle in the state dir")
            shim = await self._shims.get(bundle, task.runtime)
            self._live[key] = shim
        return shim

    def remember(self, shim: ShimProcess) -> None:
        """A shim this process just started: its connection serves the next calls."""
        self._live[(shim.namespace, shim.id)] = shim

    def forget(self, task: Task) -> ShimProcess | None:
        """Stop using the task's connection (its shim is gone, or being deleted)."""
        return self._live.pop((task.namespace, task.task_id), None)

    async def probe(self, task: Task) -> Status | None:
        """What the shim says the task's init is doing, or None if it cannot be asked."""
        try:
            return (await (await self.connect(task)).client.state(task.task_id)).status
        except (UnavailableError, NotFoundError, OSError):
            return None

    async def shim_pid(self, task: Task) -> int | None:
        """The pid of the shim serving the task (its Connect reply), None if none answers."""
        try:
            return (await self.connect(task)).shim_pid
        except (UnavailableError, NotFoundError, OSError):
            return None

    async def aclose(self) -> None:
        """Drop every connection; the shims and their tasks keep running."""
        live, self._live = list(self._live.values()), {}
        for shim in live:
            await shim.client.aclose()
