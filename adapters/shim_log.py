"""The shim's ``log`` FIFO: made before ``start``, held open and drained while we watch.

A shim whose log FIFO is missing dies right after ``start``, and one whose FIFO has no
reader blocks in open() (shim-protocol.md 0.1), so the read end is opened O_RDWR (it never
sees EOF, and never blocks) before the shim runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path

from adapters.file_lock import make_private_dirs

logger = logging.getLogger("shimledger.shim.log")

_CHUNK = 65536


class ShimLog:
    """Drains one bundle's log FIFO into the ``shimledger.shim.log`` logger, and keeps
    every line in ``keep`` (a file that outlives the bundle) when one is given."""

    def __init__(self, task_id: str, fd: int, keep: Path | None = None) -> None:
        self._task_id = task_id
        self._keep = keep
        self._fd: int | None = fd
        self._partial = b""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._drain)

    @classmethod
    def open(cls, bundle_path: str, task_id: str, keep: Path | None = None) -> ShimLog:
        """Make the FIFO if needed and start draining it."""
        path = Path(bundle_path) / "log"
        try:
            os.mkfifo(path, 0o600)
        except FileExistsError:
            if not stat.S_ISFIFO(path.lstat().st_mode):
                raise
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        return cls(task_id, fd, keep)

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
        try:
            make_private_dirs(self._keep.parent)
            fd = os.open(self._keep, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "ab") as kept:
                kept.write(data)
        except OSError as exc:  # a full disk must not stop the drain (the shim would block)
            logger.warning("cannot keep the shim log of %s: %s", self._task_id, exc)

    def close(self) -> None:
        if self._fd is not None:
            self._drain()
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
