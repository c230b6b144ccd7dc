"""Global settings of a command, kept free of heavy imports so `--help` stays quick."""

from __future__ import annotations

import hashlib
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cli import handoff

if TYPE_CHECKING:
    from domain.values import Owner

DEFAULT_ROOT = Path(handoff.DEFAULT_ROOT)
DEFAULT_STATE = Path(handoff.DEFAULT_STATE)


def default_node() -> str:
    """The host name, cut at its first dot: what a NODE column should show of each host.

    Hosts that share one history need distinct names; where host names collide (cloned
    machines, containers called ``localhost``) ``--node``/``SHIMLEDGER_NODE`` sets one.
    """
    return socket.gethostname().split(".", 1)[0] or "localhost"


@dataclass(frozen=True)
class Settings:
    """Global options: where history lives, where ephemeral state lives, which namespace."""

    root: Path = DEFAULT_ROOT
    state: Path = DEFAULT_STATE
    namespace: str = "default"
    store: str | None = None  # an event-store URL; None: SQLite at <root>/events.db
    # This node's name. The CLI's default too, so that settings made in a program (a test)
    # own the tasks the CLI run with them creates.
    node: str = field(default_factory=default_node)

    @property
    def owner(self) -> Owner:
        """The owner of the tasks made with these settings (as ManagerConfig.owner says)."""
        from domain.values import Owner

        return Owner(self.node, str(self.state))


def state_digest(state: Path) -> str:
    """A short name for a state dir that is not the default one: what its cgroup parent
    and its state_files view are called after."""
    return hashlib.sha256(str(state).encode()).hexdigest()[:12]
