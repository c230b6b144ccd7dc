"""Foreground stdio: FIFOs between the shim and this process's own stdin, stdout and stderr.

stdout/stderr: the read ends are opened before Create (the shim's open blocks until a
reader exists, shim-protocol.md 0.7) together with a placeholder write end, so that we
cannot see EOF before the shim has opened its own. Once Create has returned, the
placeholder is closed: EOF then means the shim closed its end, i.e. all the task's output
has been copied.

stdin: the shim opens the FIFO twice, a reader that copies into the process's stdin and a
writer of its own that keeps the reader from seeing EOF until the CloseIO call (that is how
containerd's shim lets a client reattach). So we feed the FIFO, close our end at EOF, and
the caller then sends CloseIO: only then does the process read EOF.

A terminal (``terminal=True``) is another copy in the shim: stdin into the pty's master,
the master out to the stdout FIFO, and no stderr (a pty has one output). Its stdin needs
no CloseIO: the end of our input is the end of the shim's, and the task's output still
comes after it.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import threading
import time
from pathlib import Path
from typing import BinaryIO

from adapters.file_lock import make_private_dirs
from shim.ports import Stdio

_CHUNK = 65536
_OPEN_RETRY = 0.01  # seconds between tries to open the stdin FIFO before the shim reads it
_OPEN_GIVE_UP = 30.0  # the shim opens it right after Create: this long means it never will


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


class _Feeder:
    """Copies a file descriptor (our stdin) into the task's stdin FIFO until EOF.

    A daemon thread does the copy with blocking reads and writes: our stdin may be a
    terminal, a pipe or a regular file (which the event loop cannot watch), and a process
    that does not read its stdin must only hold up the thread, never the command.
    """

    def __init__(self, path: Path, source: int) -> None:
        os.mkfifo(path, 0o600)
        self.path = path
        self._source = source
        self._loop = asyncio.get_running_loop()
        self.eof: asyncio.Future[None] = self._loop.create_future()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._copy, name="stdin-feeder", daemon=True)
        self._thread.start()

    def _open_writer(self) -> int | None:
        """Our write end, once the shim's reader is there (before it, open fails: ENXIO)."""
        deadline = time.monotonic() + _OPEN_GIVE_UP
        while not self._closing.is_set() and time.monotonic() < deadline:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    return None
                time.sleep(_OPEN_RETRY)
                continue
            os.set_blocking(fd, True)
            return fd
        return None

    def _copy(self) -> None:
        fd = self._open_writer()
        try:
            while fd is not None and not self._closing.is_set():
                data = os.read(self._source, _CHUNK)
                if not data:
                    break
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
        except OSError:
            pass  # the process is gone (EPIPE) or our stdin failed: either way, input ends
        finally:
            if fd is not None:
                os.close(fd)
            try:
                self._loop.call_soon_threadsafe(self._finish)
            except RuntimeError:
                pass  # the command is over: nobody waits for EOF any more

    def _finish(self) -> None:
        if not self.eof.done():
            self.eof.set_result(None)

    def close(self) -> None:
        # A thread blocked reading a terminal cannot be woken; it is a daemon and dies with us.
        self._closing.set()


class ForegroundIO:
    """The stdio of one foreground task, connected to this process's own."""

    def __init__(
        self, directory: Path, stdout: BinaryIO, stderr: BinaryIO, stdin: int | None = None,
        *, terminal: bool = False,
    ) -> None:  # fmt: skip
        make_private_dirs(directory.parent)
        # Named after our pid: one left by a killed command whose pid we reuse is stale.
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(mode=0o700)
        self._directory = directory
        self._terminal = terminal
        self._in: _Feeder | None = None
        self._err: _Pump | None = None
        try:
            self._out = _Pump(directory / "stdout", stdout)
            if not terminal:
                self._err = _Pump(directory / "stderr", stderr)
            if stdin is not None:
                self._in = _Feeder(directory / "stdin", stdin)
        except BaseException:
            self._close_pumps()
            shutil.rmtree(directory, ignore_errors=True)
            raise

    @property
    def stdio(self) -> Stdio:
        return Stdio(
            stdin=str(self._in.path) if self._in else "",
            stdout=str(self._out.path),
            stderr=str(self._err.path) if self._err else "",
            terminal=self._terminal,
        )

    @property
    def stdin_eof(self) -> asyncio.Future[None] | None:
        """Done once all of our stdin is in the FIFO and our end is closed (None: no stdin)."""
        return self._in.eof if self._in else None

    def shim_attached(self) -> None:
        """Create has returned: the shim holds the write ends now, and reads stdin."""
        for pump in (self._out, self._err):
            if pump is not None:
                pump.release_placeholder()
        if self._in is not None:
            self._in.start()

    async def drain(self, timeout: float) -> None:
        """Wait until the shim has copied everything (EOF), or give up after ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(p.done for p in (self._out, self._err) if p))
        except TimeoutError:
            pass  # a grandchild still holds the pipe: stop copying, as ctr does on exit

    def _close_pumps(self) -> None:
        for pump in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if pump is not None:
                pump.close()

    def close(self) -> None:
        self._close_pumps()
        if self._in is not None:
            self._in.close()
        shutil.rmtree(self._directory, ignore_errors=True)
