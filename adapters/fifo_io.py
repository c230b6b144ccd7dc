"""Foreground stdio: FIFOs the shim writes the task's stdout/stderr into, pumped to ours.

The read ends are opened before Create (the shim's open blocks until a reader exists,
shim-protocol.md 0.7) together with a placeholder write end, so that we cannot see EOF
before the shim has opened its own. Once Create has returned, the placeholder is closed:
EOF then means the shim closed its end, i.e. all the task's output has been copied.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import BinaryIO

from shim.ports import Stdio

_CHUNK = 65536


class _Pump:
    def __init__(self, path: Path, sink: BinaryIO) -> None:
        os.mkfifo(path, 0o600)
        self.path = path
        self._sink = sink
        self._read_fd: int | None = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._placeholder: int | None = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self._loop.create_future()
        self._loop.add_reader(self._read_fd, self._on_readable)

    def _on_readable(self) -> None:
        assert self._read_fd is not None
        try:
            data = os.read(self._read_fd, _CHUNK)
        except BlockingIOError:
            return
        if data:
            self._sink.write(data)
            self._sink.flush()
            return
        self._stop()

    def release_placeholder(self) -> None:
        if self._placeholder is not None:
            os.close(self._placeholder)
            self._placeholder = None

    def _stop(self) -> None:
        if self._read_fd is not None:
            self._loop.remove_reader(self._read_fd)
            os.close(self._read_fd)
            self._read_fd = None
        if not self.done.done():
            self.done.set_result(None)

    def close(self) -> None:
        self.release_placeholder()
        self._stop()


class ForegroundIO:
    """The stdout and stderr of one foreground task, copied to this process's own."""

    def __init__(self, directory: Path, stdout: BinaryIO, stderr: BinaryIO) -> None:
        directory.mkdir(mode=0o700, parents=True)
        self._directory = directory
        try:
            self._out = _Pump(directory / "stdout", stdout)
            self._err = _Pump(directory / "stderr", stderr)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise

    @property
    def stdio(self) -> Stdio:
        return Stdio(stdout=str(self._out.path), stderr=str(self._err.path))

    def shim_attached(self) -> None:
        """Create has returned: the shim holds the write ends now."""
        self._out.release_placeholder()
        self._err.release_placeholder()

    async def drain(self, timeout: float) -> None:
        """Wait until the shim has copied everything (EOF), or give up after ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(self._out.done, self._err.done)
        except TimeoutError:
            pass  # a grandchild still holds the pipe: stop copying, as ctr does on exit

    def close(self) -> None:
        self._out.close()
        self._err.close()
        shutil.rmtree(self._directory, ignore_errors=True)
