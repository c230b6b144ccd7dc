"""The cgroup parents shimledger puts tasks under, removed again once nothing uses them.

A task's default cgroupsPath is ``<parent>/<namespace>/<id>`` (bundle.py). runc makes every
directory of it in each hierarchy, and its delete removes the task's own, but never the
parents: without this, every state dir and namespace left ``<parent>/<ns>`` behind in every
controller (about 400 empty directories after 90 containers on a v1 host).

After a task goes, ``release`` removes ``<parent>/<ns>/<id>``, ``<parent>/<ns>`` and
``<parent>`` in every hierarchy, each with rmdir only: the kernel refuses to remove a
cgroup that holds a process or a child (EBUSY), so another task's cgroup is never touched.
What rmdir cannot see is a create between runc's mkdir of ``<parent>/<ns>`` and of
``<parent>/<ns>/<id>``: removing the parent then would fail that create. So creates hold a
shared flock on the state dir's ``locks/cgroups.lock`` while runc makes the directories, and a
release takes it exclusively or, when a create holds it, leaves the parents to the next
release (they are in use then anyway).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from shim.private_files import flocked

logger = logging.getLogger(__name__)

MOUNTINFO = Path("/proc/self/mountinfo")
_LEFT = {errno.ENOENT, errno.EBUSY, errno.ENOTEMPTY}  # gone already, or still in use


def hierarchies(mountinfo: Path = MOUNTINFO) -> list[Path]:
    """Where each cgroup hierarchy is mounted (v1: one per controller; v2: the one)."""
    found = []
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields, _, rest = line.partition(" - ")
        parts, kind = fields.split(), rest.split(" ", 1)[0]
        if kind in ("cgroup", "cgroup2") and len(parts) > 4:
            found.append(Path(parts[4].replace("\\040", " ")))
    return found


class CgroupParents:
    """The parent of one state dir's task cgroups, in every hierarchy of this host."""

    def __init__(self, lock: Path, parent: str, mountinfo: Path = MOUNTINFO) -> None:
        self._lock = lock
        self._parent = parent.strip("/")
        self._mountinfo = mountinfo

    @contextlib.asynccontextmanager
    async def creating(self) -> AsyncIterator[None]:
        """Hold off releases while runc makes a task's cgroup directories."""
        self._lock.parent.mkdir(mode=0o700, exist_ok=True)
        async with flocked(self._lock, shared=True):
            yield

    def release(self, namespace: str, task_id: str) -> list[Path]:
        """Remove the task's cgroup and the parents nothing uses any more; what was removed."""
        if not self._parent:
            return []
        self._lock.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(self._lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return []  # a create is making its directories under them: they stay
            removed = []
            for mount in hierarchies(self._mountinfo):
                base = mount / self._parent
                for path in (base / namespace / task_id, base / namespace, base):
                    if _rmdir(path):
                        removed.append(path)
            return removed
        finally:
            os.close(fd)


def _rmdir(path: Path) -> bool:
    try:
        os.rmdir(path)
    except OSError as exc:
        if exc.errno not in _LEFT:
            logger.info("cgroup %s not removed: %s", path, exc.strerror)
        return False
    return True
