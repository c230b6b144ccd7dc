"""A person at a terminal, for tests: the real CLI on a real pty that is its controlling
terminal, driven by typing and by waiting for what it prints (never by sleeping).

The CLI is a session leader with the pty as its controlling terminal, as under a shell:
so a resize of the pty (TIOCSWINSZ on its master) sends SIGWINCH to it, as a terminal
emulator's does.
"""

from __future__ import annotations

import codecs
import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Mapping
from typing import Any

DEADLINE = 60.0  # seconds for an expected output to come: longer means it never will


class PtySession:
    """``argv`` running on a fresh pty of ``rows`` x ``columns``."""

    def __init__(self, argv: list[str], env: Mapping[str, str], rows: int = 24,
                 columns: int = 80) -> None:  # fmt: skip
        self.master, self.slave = os.openpty()
        self.resize(rows, columns)
        self.before: list[Any] = termios.tcgetattr(self.slave)
        self.output = ""  # printed since the last match
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.process = subprocess.Popen(
            argv, env=dict(env), stdin=self.slave, stdout=self.slave, stderr=self.slave,
            start_new_session=True, preexec_fn=_take_controlling_terminal,
        )  # fmt: skip

    def resize(self, rows: int, columns: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, pattern: str) -> re.Match[str]:
        """Wait for ``pattern`` in what was printed since the last match; return the match."""
        deadline = time.monotonic() + DEADLINE
        while True:
            found = re.search(pattern, self.output)
            if found is not None:
                self.output = self.output[found.end() :]
                return found
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                raise AssertionError(f"never printed {pattern!r}; printed: {self.output!r}")

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return False
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: every holder of the slave is gone
            return False
        self.output += self._decoder.decode(chunk)
        return bool(chunk)

    def modes(self) -> list[Any]:
        """The pty's termios now, as the CLI left it (or set it)."""
        return termios.tcgetattr(self.slave)

    def wait(self) -> int:
        """The CLI's exit status, once it exits; what it printed after is still readable."""
        code = self.process.wait(timeout=DEADLINE)
        while self._read(0):
            pass
        return code

    def close(self) -> None:
        """Kill the CLI if it still runs (a failed test); its task is the teardown's."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


def _take_controlling_terminal() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
