"""What a view knows about its file: whose it is, whether it is damaged, what is left over.

A view file is a cache of the history, so nothing in it is worth keeping once it cannot be
trusted: a file SQLite cannot read (garbage, a torn copy) and a valid SQLite file of
another schema (someone else's, or an older release's) are both rebuilt from the events.
Which inode a connection has open matters too: a rebuild swaps in a new file with a
rename, and a long-running process must notice that and reopen, since SQLite refuses
writes to a database file that was moved away under it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from projections.schemas import SCHEMA_QUERY

# SQLite's primary result codes that say "this file's content is not a usable database".
_DAMAGED = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}

Identity = tuple[int, int]  # (st_dev, st_ino) of the file a connection has open
SchemaEntry = tuple[str, str, str, str | None]  # sqlite_master's type, name, tbl_name, sql



class ForeignViewError(sqlite3.DatabaseError):
    """The file is a database, but not of this view's schema."""


def damaged(exc: BaseException) -> bool:
    """Whether ``exc`` says the file itself is unusable (not a lock, a full disk, a typo)."""
    if isinstance(exc, ForeignViewError):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.DatabaseError) and code is not None and code & 0xFF in _DAMAGED


def expected_schema(script: str) -> set[SchemaEntry]:
    """The sqlite_master rows ``script`` makes, as this SQLite writes them (in memory)."""
    with contextlib.closing(sqlite3.connect(":memory:")) as db:
        db.executescript(script)
        return set(db.execute(SCHEMA_QUERY).fetchall())


def statements(script: str) -> list[str]:
    """The script's statements, to run one by one inside a transaction of ours.

    (executescript would commit first.) View schemas are CREATE statements only, with no
    semicolon inside a literal.
    """
    return [part.strip() for part in script.split(";") if part.strip()]


def identity(path: Path) -> Identity | None:
    """The inode at ``path`` now, or None when there is no file there."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return (stat.st_dev, stat.st_ino)


def rebuild_path(path: Path, pid: int) -> Path:
    """Where process ``pid`` builds a fresh copy of the view file ``path``."""
    return path.with_name(f".{path.name}.rebuild.{pid}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def remove_file(path: Path) -> None:
    """Remove a SQLite file and its rollback journal, if there."""
    for leftover in (path, path.with_name(f"{path.name}-journal")):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


def remove_stale_rebuilds(path: Path) -> list[Path]:
    """Remove the half-built copies of ``path`` that rebuilds of dead processes left.

    A rebuild killed midway leaves ``.<view>.db.rebuild.<pid>``, up to the size of the
    whole view; a live pid's copy is still being built and is left alone. Returns what
    was removed.
    """
    removed = []
    prefix = f".{path.name}.rebuild."
    try:
        candidates = list(path.parent.glob(f"{prefix}*"))
    except OSError:
        return []
    for candidate in candidates:
        pid = candidate.name.removeprefix(prefix).removesuffix("-journal")
        if not pid.isdigit() or _alive(int(pid)):
            continue
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()
            removed.append(candidate)
    return removed
