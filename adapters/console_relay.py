"""The shim's logging binary for a terminal process whose pty goes to a --console-socket.

runc's ``--console-socket`` hands the container's pty master to a receiver (runc's
``recvtty``). Through containerd-shim-runc-v2 the master never leaves the shim: it copies
the console out to the stdout URI of CreateTaskRequest / ExecProcessRequest and in from the
stdin FIFO. Given a ``binary://`` stdout, the shim starts that program with the console's
output on fd 3 (fd 4, stderr, is unused with a terminal), the write end of a pipe on fd 5
that it reads once before it goes on, its cwd the working bundle, and ``CONTAINER_ID`` (the
task's or the exec's ID) and ``CONTAINER_NAMESPACE`` as its whole environment
(containerd v1.6 runtime/v2/runc/platform.go, pkg/process/io_util.go).

This is that program. It makes a pty pair of its own, sends the master to the console
socket as runc does (SCM_RIGHTS, the pty's name as the message), says how that went in
``console-<id>.status`` before it lets the shim go on, then relays for as long as the
console lasts: its output into the task's log (``logs``) and onto the pty (the receiver
reads it from the master), and what the receiver writes into the master into the stdin
FIFO (the shim writes it into the container's pty). Stdlib alone: it starts in
milliseconds, once per console, from a bare environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import tty
from pathlib import Path

CONSOLE_OUT, READY = 3, 5  # the fds the shim gives a logging binary


def binary_uri() -> str:
    """The stdout URI that makes the shim start this module with our own interpreter.

    The shim passes each query key and value as arguments, in Go's map order: one pair only.
    """
    return f"binary://{sys.executable}?-m=adapters.console_relay"


def send_master(socket_path: str, master: int, name: str) -> None:
    """As runc's utils.SendFd: one message, the pty's name, with the master's fd."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.connect(socket_path)
        socket.send_fds(connection, [name.encode()], [master])


def _copy_out(log_path: str, slave: int) -> None:
    """The console's output into the log and onto the pty, until the console closes."""
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC) if log_path else -1
    to_pty = True
    while chunk := os.read(CONSOLE_OUT, 65536):
        if log >= 0:
            with contextlib.suppress(OSError):  # a full disk loses log lines, not the task
                os.write(log, chunk)
        if to_pty:
            try:
                _write_all(slave, chunk)
            except OSError:
                to_pty = False  # the receiver closed the master: the log still gets it all


def _copy_in(slave: int, stdin_fifo: str) -> None:
    """What the receiver types, into the shim's stdin FIFO. When the receiver closes the
    master the FIFO is closed too, and the shim closes the console: the container's pty
    hangs up, as it does under runc when the last holder of the master closes it."""
    fifo = os.open(stdin_fifo, os.O_WRONLY | os.O_CLOEXEC)
    try:
        while True:
            try:
                chunk = os.read(slave, 65536)
            except OSError:  # EIO: the master is closed
                return
            if not chunk:
                return
            _write_all(fifo, chunk)
    finally:
        os.close(fifo)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main() -> int:
    process_id = os.environ.get("CONTAINER_ID", "")
    status = Path(f"console-{process_id}.status")
    try:
        config = json.loads(Path(f"console-{process_id}.json").read_text())
        master, slave = os.openpty()
        tty.setraw(slave)  # the receiver's own terminal edits lines; this pty passes bytes
        send_master(config["socket"], master, os.ttyname(slave))
        os.close(master)
    except (OSError, ValueError, KeyError) as error:
        status.write_text(f"{type(error).__name__}: {error}\n")
        os.close(READY)
        return 1
    status.write_text("ok\n")
    os.close(READY)  # the shim reads EOF and goes on with Create (or Start)
    threading.Thread(target=_copy_in, args=(slave, config["stdin"]), daemon=True).start()
    with contextlib.suppress(OSError):
        _copy_out(config.get("log", ""), slave)
    return 0


if __name__ == "__main__":
    sys.exit(main())
