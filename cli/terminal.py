"""Our own terminal while a task's pty is attached to it: raw, sized as the task's, restored.

With a pty in the task, the line discipline that matters is the task's: Ctrl-C, Ctrl-D,
echo and line editing must reach it as keystrokes. So our terminal goes raw (no echo of its
own, no signals from keys) for as long as the task is attached, and goes back to exactly
what it was however the command ends: a return, an exception, or a signal we handle (each
of those unwinds through ``__exit__``). Only SIGKILL cannot be undone here; a command
handed to serve has the launcher restore the terminal too (cli/launcher.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import termios
import tty
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from domain.errors import ShimledgerError

logger = logging.getLogger(__name__)


class LocalTerminal:
    """Raw mode on our stdin's terminal for the block's length; nothing when not a terminal."""

    def __init__(self, stdin: int, stdout: int) -> None:
        self._stdin = stdin
        self._stdout = stdout
        self._saved: list[Any] | None = None  # tcgetattr's list, as tcsetattr takes it

    def __enter__(self) -> LocalTerminal:
        if os.isatty(self._stdin):
            self._saved = termios.tcgetattr(self._stdin)
            tty.setraw(self._stdin, termios.TCSANOW)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._saved is not None:
            saved, self._saved = self._saved, None
            try:
                # TCSADRAIN: what the task wrote last is shown as it was, then modes change.
                termios.tcsetattr(self._stdin, termios.TCSADRAIN, saved)
            except termios.error as exc:  # hung up: no terminal left to restore
                logger.debug("terminal modes not restored: %s", exc)

    def size(self) -> tuple[int, int] | None:
        """(columns, rows) of our terminal, for the task's pty; None with no terminal."""
        for fd in (self._stdout, self._stdin):
            try:
                columns, rows = os.get_terminal_size(fd)
            except OSError:
                continue
            if columns and rows:
                return columns, rows
        return None


class SizeFollower:
    """Keeps the task's pty the size of our terminal: once attached, and at every SIGWINCH.

    Each resize is its own future (held here until done): a SIGWINCH handler cannot
    await, and a resize that fails (the process just exited) changes nothing worth saying.
    """

    def __init__(self, local: LocalTerminal, resize: Callable[[int, int], Awaitable[None]]) -> None:
        self._local = local
        self._resize = resize
        self._pending: set[asyncio.Future[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def follow(self) -> None:
        """Size the pty now (done when this returns: a process started next starts at our
        size), and again whenever ours changes."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_signal_handler(signal.SIGWINCH, self._changed)
        if (size := self._local.size()) is not None:
            await self._send(*size)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.remove_signal_handler(signal.SIGWINCH)
            self._loop = None
        for future in self._pending:
            future.cancel()

    def _changed(self) -> None:
        size = self._local.size()
        if size is None:
            return
        future = asyncio.ensure_future(self._send(*size))
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    async def _send(self, columns: int, rows: int) -> None:
        try:
            await self._resize(columns, rows)
        except ShimledgerError as exc:
            logger.debug("pty not resized to %sx%s: %s", columns, rows, exc)
