"""Locks that hold across processes: flock() on a file, polled without blocking the loop.

Per-task locks keep one lifecycle step at a time per task.

Each CLI command is its own process, and whichever one serves the event sink records the
shims' events. Without a shared lock, a shim's /tasks/exit could be recorded by one
process between another's Start RPC and the Started it caused. flock() on a small file
per task in the state dir serializes them; the kernel drops the lock if a holder dies.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from domain.state_dir import StateDir
from shim.private_files import flocked


def make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and any missing parent with mode 0700 (mkdir's ``parents``
    would give the parents the umask's 0755)."""
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    for each in reversed(missing):
        each.mkdir(mode=0o700, exist_ok=True)


@asynccontextmanager
async def file_lock(path: Path) -> AsyncIterator[None]:
    """Hold an exclusive flock on ``path`` (created if missing) for the block's duration."""
    make_private_dirs(path.parent)
    async with flocked(path):
        yield


class TaskLocks:
    """Implements shim.ports.TaskLocks: ``hold`` excludes every other holder, anywhere.

    With ``root``, the root dir's lock of the task is held too (after the state dir's, so
    the order is the same everywhere): state dirs that share one root (and its task logs,
    named by incarnation number) then number a new incarnation one at a time. Roots on
    other hosts are kept apart by the store's conflict check instead.
    """

    def __init__(self, state: StateDir, root: Path | None = None) -> None:
        self._state = state
        self._root = root
        # flock() is per open file, so tasks of one process queue on an asyncio.Lock first.
        self._local: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)

    @asynccontextmanager
    async def hold(self, namespace: str, task_id: str) -> AsyncIterator[None]:
        async with self._local[(namespace, task_id)]:
            async with file_lock(self._state.lock_file(namespace, task_id)):
                if self._root is None:
                    yield
                    return
                async with file_lock(self._root / "locks" / namespace / f"{task_id}.lock"):
                    yield
