"""Global settings of a command, kept free of heavy imports so `--help` stays quick."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = Path("/var/lib/shimledger")
DEFAULT_STATE = Path("/run/shimledger")


@dataclass(frozen=True)
class Settings:
    """Global options: where history lives, where ephemeral state lives, which namespace."""

    root: Path = DEFAULT_ROOT
    state: Path = DEFAULT_STATE
    namespace: str = "default"
    store: str | None = None  # an event-store URL; None: SQLite at <root>/events.db
    node: str = ""  # this node's name (see default_node); "" only before the CLI resolves it


def default_node() -> str:
    """The host name, cut at its first dot: what a NODE column should show of each host.

    Hosts that share one history need distinct names; where host names collide (cloned
    machines, containers called ``localhost``) ``--node``/``SHIMLEDGER_NODE`` sets one.
    """
    return socket.gethostname().split(".", 1)[0] or "localhost"
