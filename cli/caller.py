"""Who runs the command: this process, or the client that handed it to `serve`.

History says who did each thing (a Cause's uid, pid and command line). A command that serve
runs for a client is the client's: its uid and pid come from the control socket's peer
credentials, its command line from /proc, and cli/command_server.py sets them here, in the
process that runs the command, before the command starts.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Caller:
    uid: int
    pid: int
    argv: tuple[str, ...]  # without the program's name


_handed: Caller | None = None


def current() -> Caller:
    """The client that handed this command to serve, or else this process."""
    if _handed is not None:
        return _handed
    return Caller(uid=os.getuid(), pid=os.getpid(), argv=tuple(sys.argv[1:]))


def handed_by(caller: Caller) -> None:
    """Say that this process runs ``caller``'s command (once, before the command runs)."""
    global _handed
    _handed = caller


def handed() -> Caller | None:
    """The client that handed this command to serve, or None for a command of its own."""
    return _handed
