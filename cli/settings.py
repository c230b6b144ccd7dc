"""Global settings of a command, kept free of heavy imports so `--help` stays quick."""

from __future__ import annotations

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
