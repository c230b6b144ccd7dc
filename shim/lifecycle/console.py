"""runc's --console-socket through a shim: a detached terminal process's pty, handed over.

runc sends the pty master itself to the socket. containerd-shim-runc-v2 keeps the master
and copies it to the stdout URI instead, so the process is given a ``binary://`` stdout:
the shim then starts a relay (adapters/console_relay.py, named by the composition root)
that sends a pty of its own to the socket and copies between the two, and into the task's
log. What the relay needs, and what it says back, are files in the working bundle (its
cwd), removed with the bundle: ``console-<id>.json``, ``console-<id>.stdin`` (the FIFO the
shim reads input from) and ``console-<id>.status``, where ``<id>`` is the task's ID or the
exec's.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from domain.errors import InvalidArgumentError
from domain.values import Bundle
from shim.ports import Stdio
from shim.private_files import create_new_private


@dataclass(frozen=True)
class ConsoleSocket:
    """Where a detached terminal process's pty goes (runc's ``--console-socket PATH``)."""

    path: Path
    relay: str  # the relay's binary:// URI

    def stdio(self, bundle: Bundle, process_id: str) -> Stdio:
        """The process's stdio: input from the FIFO, output through the relay."""
        fifo = Path(bundle.path) / f"console-{process_id}.stdin"
        return Stdio(stdin=str(fifo), stdout=self.relay, terminal=True)

    def prepare(self, bundle: Bundle, process_id: str, log: str = "") -> Stdio:
        """Make the FIFO and the relay's config (before the shim opens the console: Create,
        or an exec's Start), the relay to copy output into the file ``log`` too; refused if
        ``path`` is no socket, as runc's connect would be. The process's stdio, returned."""
        try:
            is_socket = stat.S_ISSOCK(os.stat(self.path).st_mode)
        except OSError as error:
            raise InvalidArgumentError(f"--console-socket {self.path}: {error.strerror}") from None
        if not is_socket:
            raise InvalidArgumentError(f"--console-socket {self.path}: not a socket")
        stdio = self.stdio(bundle, process_id)
        os.mkfifo(stdio.stdin, 0o600)
        config = {"socket": str(self.path.absolute()), "stdin": stdio.stdin, "log": log}
        create_new_private(Path(bundle.path) / f"console-{process_id}.json", json.dumps(config))
        return stdio

    def check(self, bundle: Bundle, process_id: str) -> None:
        """After Create (or an exec's Start), by which time the shim has waited for the
        relay: InvalidArgumentError unless the master reached the socket."""
        status = Path(bundle.path) / f"console-{process_id}.status"
        try:
            said = status.read_text().strip()
        except OSError:
            said = "the shim started no console relay"
        if said != "ok":
            raise InvalidArgumentError(f"--console-socket {self.path}: {said}")
