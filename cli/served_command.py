"""One command that serve runs for a client: the in-process CLI, in a fork of serve's
command server, on the client's stdio, cwd and environment, as the client (cli/caller.py).

Everything a command imports is imported already, so what is left is the command's own
work; the process then ends as the daemonless CLI does, with os._exit once output and log
are flushed.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import socket
import sys
import time
from typing import NoReturn

from cli import handoff
from cli.caller import Caller, handed_by
from cli.common import ClickCommand, report_bug, run_click


def run_served(
    request: handoff.Request, fds: list[int], caller: Caller, client: socket.socket,
    command: ClickCommand,
) -> NoReturn:  # fmt: skip
    """Run ``request`` here; says its exit status to the client, and ends the process."""
    os.setsid()  # the client's signals come through the server; serve's terminal is not ours
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGWINCH):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())  # those relayed meanwhile come now
    _take_stdio(request.stdio, fds)
    code = 1
    try:
        os.environ.clear()  # the client's environment, whole, as its own process has it
        os.environ.update(request.env)
        time.tzset()
        os.umask(request.umask)
        handed_by(caller)
        _markup(command, "rich" if os.isatty(1) else None)  # as cli/main.py decides
        sys.argv = ["shimledger", *request.argv]
        try:
            os.chdir(request.cwd)
        except OSError as exc:
            sys.stderr.write(f"shimledger: cannot work in {request.cwd}: {exc.strerror}\n")
        else:
            code = run_click(command, request.argv)
    except KeyboardInterrupt:
        code = 130  # before the command's own handling began
    except BaseException as exc:  # a bug here, outside the command: said as the CLI says it
        code = report_bug(exc)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nobody reads what is left
            pass
    logging.shutdown()  # the log file complete before the client (and its caller) go on
    try:
        handoff.send(client, {"exit": code})  # last: the client exits as it hears this
    except OSError:
        pass  # the client is gone; nobody waits for the status
    os._exit(code)


def _take_stdio(present: list[int], fds: list[int]) -> None:
    """The client's descriptors become 0, 1 and 2 (/dev/null for one it had closed), and
    sys.std* are made anew on them: buffering as Python makes it, for a terminal or not."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for target in handoff.STDIO:
        source = fds[present.index(target)] if target in present else devnull
        os.dup2(source, target)
    for fd in {devnull, *fds} - set(handoff.STDIO):
        os.close(fd)
    encoding = sys.stdout.encoding
    sys.stdin = io.TextIOWrapper(open(0, "rb", closefd=False), encoding=encoding)
    sys.stdout = io.TextIOWrapper(
        open(1, "wb", closefd=False), encoding=encoding, line_buffering=os.isatty(1)
    )
    sys.stderr = io.TextIOWrapper(
        open(2, "wb", 0, closefd=False), encoding=encoding, errors="backslashreplace",
        line_buffering=True, write_through=True,
    )  # fmt: skip


def _markup(command: ClickCommand, mode: str | None) -> None:
    """Boxes and colour in --help for a terminal, plain text for a pipe: on every command
    of the tree, which typer built for serve's own stderr."""
    if hasattr(command, "rich_markup_mode"):
        command.rich_markup_mode = mode
    for sub in getattr(command, "commands", {}).values():
        _markup(sub, mode)
