"""The shim's ``log`` FIFO: made before ``start``, held open and drained while we watch.

A shim whose log FIFO is missing dies right after ``start``, and one whose FIFO has no
reader blocks in open() (shim-protocol.md 0.1), so the read end is opened O_RDWR (it never
sees EOF, and never blocks) before the shim runs.

The kept copy (``shim.log``) is 0600 and bounded: once it reaches ``SHIM_LOG_MAX_SIZE``
(1 MiB) it is renamed to ``shim.log.1`` (replacing the one before), so a task keeps at most
2 MiB of its shim's log. A rename is safe here, unlike for task logs: this file is opened
anew for each append, by us, never held open by the shim.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import stat
from pathlib import Path

from adapters.file_lock import make_private_dirs

logger = logging.getLogger("shimledger.shim.log")

_CHUNK = 65536
SHIM_LOG_MAX_SIZE = 1024**2  # then shim.log becomes shim.log.1: 2 MiB per task at most


class ShimLog:
    """Drains one bundle's log FIFO into the ``shimledger.shim.log`` logger, and keeps
    every line in ``keep`` (a file that outlives the bundle) when one is given."""

    def __init__(
        self, task_id: str, fd: int, keep: Path | None = None, max_size: int = SHIM_LOG_MAX_SIZE
    ) -> None:
        self._task_id = task_id
        self._keep = keep
        self._max_size = max_size
        self._fd: int | None = fd
        self._partial = b""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._drain)

    @classmethod
    def open(
        cls,
        bundle_path: str,
        task_id: str,
        keep: Path | None = None,
        max_size: int = SHIM_LOG_MAX_SIZE,
    ) -> ShimLog:
        """Make the FIFO if needed and start draining it."""
        path = Path(bundle_path) / "log"
        try:
            os.mkfifo(path, 0o600)
        except FileExistsError:
            if not stat.S_ISFIFO(path.lstat().st_mode):
                raise
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        return cls(task_id, fd, keep, max_size)

    def _drain(self) -> None:
        if self._fd is None:
            return
        try:
            data = os.read(self._fd, _CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:  # pragma: no cover - the FIFO vanished under us
            logger.debug("shim log of %s: %s", self._task_id, exc)
            self.close()
            return
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            logger.debug("[shim %s] %s", self._task_id, line.decode(errors="replace"))
        if lines and self._keep is not None:
            self._append(b"".join(line + b"\n" for line in lines))

    def _append(self, data: bytes) -> None:
        assert self._keep is not None
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            make_private_dirs(self._keep.parent)
            fd = os.open(self._keep, flags, 0o600)
            with os.fdopen(fd, "ab") as kept:
                if os.fstat(fd).st_mode & 0o777 != 0o600:
                    os.fchmod(fd, 0o600)  # one an older shimledger made 0644
                kept.write(data)
                kept.flush()
                if os.fstat(fd).st_size >= self._max_size:
                    self._rotate(fd)
        except OSError as exc:  # a full disk must not stop the drain (the shim would block)
            logger.warning("cannot keep the shim log of %s: %s", self._task_id, exc)

    def _rotate(self, fd: int) -> None:
        """``shim.log`` -> ``shim.log.1``, once: two commands draining one shim's FIFO both
        append here, and the second to get the lock finds its file renamed already."""
        assert self._keep is not None
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when the caller closes fd
        if os.stat(self._keep).st_ino == os.fstat(fd).st_ino:
            os.replace(self._keep, self._keep.with_name(f"{self._keep.name}.1"))

    def close(self) -> None:
        if self._fd is not None:
            self._drain()
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
