"""Faults of the environment, said in one line that names the path: never "internal error".

A full disk, a read-only mount, a directory this user may not write, a file that is not a
database, a PostgreSQL server that refuses the password or does not answer: none of them
is shimledger's bug, and each deserves what runc would print, the path (or the store's
URL, its password redacted) and the reason. OSError carries both; so does libpq's message,
which psycopg carries (eventsourcing wraps it in its own class, psycopg's as the cause).
SQLite does not: it says "database or disk is full" or "unable to open database file" and
names no file (and eventsourcing wraps its errors too, the sqlite3 one as the cause). So
for an SQLite fault we look at the files the history lives in (the store, the views) and
name the one the filesystem refuses, and why, with SQLite's own words after it.
"""

from __future__ import annotations

import errno
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from adapters.url_redaction import redact_url

# SQLite's primary result codes that a machine, not a program, causes (sqlite3.h).
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_NOMEM = 3, 5, 6, 7
_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL = 8, 10, 11, 13
_SQLITE_CANTOPEN, _SQLITE_NOLFS, _SQLITE_NOTADB = 14, 22, 26
_ENVIRONMENT = {
    _SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_NOMEM, _SQLITE_READONLY,
    _SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOLFS,
    _SQLITE_NOTADB,
}  # fmt: skip
_NOT_A_DATABASE = {_SQLITE_CORRUPT, _SQLITE_NOTADB}
_SQLITE_HEADER = b"SQLite format 3\x00"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it was raised from (``raise X(e) from e``), outermost first.

    Only explicit causes: an exception merely raised while another was being handled may
    be a bug of its own, and must not pass for the fault it happened near.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__


def os_error_line(exc: OSError) -> str:
    """``PATH: reason`` (runc's way), or the error's own words when it names no path."""
    if exc.filename is not None and exc.strerror:
        where = os.fsdecode(exc.filename)
        if exc.filename2 is not None:
            where += f" -> {os.fsdecode(exc.filename2)}"
        return f"{where}: {exc.strerror}"
    return str(exc) or type(exc).__name__


def store_file(root: Path, store: str | None) -> Path | None:
    """The SQLite file of the event store (None: the history is not in SQLite here)."""
    if not store:
        return root / "events.db"
    parts = urlsplit(store)
    return Path(parts.path) if parts.scheme == "sqlite" and parts.path else None


def _history_files(root: Path, store: str | None) -> list[Path]:
    """Where the history lives, the directories first: the root, the store, the views."""
    views = root / "projections"
    events = store_file(root, store)
    files = [root, views, *([events.parent, events] if events else [])]
    files += sorted(views.glob("*.db")) if _can_list(views) else []
    unique: list[Path] = []
    for path in files:
        if path not in unique:
            unique.append(path)
    return unique


def _can_list(directory: Path) -> bool:
    try:
        return directory.is_dir() and os.access(directory, os.R_OK | os.X_OK)
    except OSError:
        return False


def _refusal(path: Path) -> int | None:
    """Why the filesystem would refuse to let us write ``path``, as an errno (None: it
    would not)."""
    try:
        info = os.statvfs(path)
    except FileNotFoundError:
        return None  # not made yet: its directory is looked at on its own
    except OSError as exc:
        return exc.errno
    if info.f_flag & os.ST_RDONLY:
        return errno.EROFS
    if not os.access(path, os.R_OK | os.W_OK | (os.X_OK if path.is_dir() else 0)):
        return errno.EACCES
    free = info.f_bavail if os.geteuid() else info.f_bfree
    if free == 0 or (info.f_files and info.f_favail == 0):
        return errno.ENOSPC
    return None


def _not_a_database(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            head = file.read(len(_SQLITE_HEADER))
    except OSError:
        return False
    return bool(head) and head != _SQLITE_HEADER


def sqlite_error_line(exc: sqlite3.Error, root: Path | None, store: str | None) -> str:
    """The history's file the filesystem refuses, and why; SQLite's words in brackets."""
    said = f"(SQLite: {exc})"
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    files = _history_files(root, store) if root is not None else []
    if code in _NOT_A_DATABASE:
        for path in files:
            if path.is_file() and _not_a_database(path):
                return f"{path}: not an SQLite database; move it away to start afresh {said}"
    for path in files:
        refused = _refusal(path)
        if refused is not None:
            return f"{path}: {os.strerror(refused)} {said}"
    where = f"{root}: " if root is not None else "the history's database: "
    return f"{where}{exc}"


# libpq names each address it tried: '... port 5432 failed: FATAL:  the reason'.
_LIBPQ_REASON = re.compile(r".*failed: ((?:FATAL|ERROR):\s+)?(.+)$")
# psycopg's SQLSTATE classes a machine, not a program, causes, besides OperationalError
# (connection faults, timeouts, a server shutting down, no disk): no privilege, read only.
_PG_ENVIRONMENT = ("InsufficientPrivilege", "ReadOnlySqlTransaction", "InterfaceError")


def _is_postgres_fault(exc: BaseException) -> bool:
    """A psycopg (or psycopg_pool) error the server or the network caused. psycopg is not
    imported here: a module that raised one has loaded it already."""
    if not type(exc).__module__.startswith("psycopg"):
        return False
    import psycopg

    named = any(cls.__name__ in _PG_ENVIRONMENT for cls in type(exc).__mro__)
    return isinstance(exc, psycopg.OperationalError) or named


def postgres_reason(exc: BaseException) -> str:
    """libpq's reason, alone, on one line. libpq names every attempt it made (each address
    of a host; with sslmode=prefer, with TLS and then without): what the server said
    (FATAL) comes first, the first of it; else the last attempt's failure."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    found = [m for line in lines if (m := _LIBPQ_REASON.match(line))]
    said = [m.group(2) for m in found if m.group(1)]
    reasons = said[:1] or [m.group(2) for m in found[-1:]]
    reason = reasons[0] if reasons else (lines[0] if lines else type(exc).__name__)
    reason = reason.removeprefix("connection failed: ").rstrip(".")
    if reason[:1].isupper() and reason[1:2].islower():
        reason = reason[0].lower() + reason[1:]  # libpq's "Connection refused", as errno's
    if any(line.startswith("Is the server running") for line in lines):
        reason += " (is the server running?)"  # libpq's hint, shortened
    return reason


def postgres_error_line(exc: BaseException, store: str | None) -> str:
    """``store URL: reason``, the URL's password redacted."""
    where = f"store {redact_url(store)}" if store else "the store"
    return f"{where}: {postgres_reason(exc)}"


def environment_fault(
    exc: BaseException, root: Path | None = None, store: str | None = None
) -> str | None:
    """One line for a fault of the environment (OS, SQLite or PostgreSQL), or None if
    ``exc`` is not.

    ``root`` and ``store`` (the --root and --store of the command) say where to look for
    the file an SQLite error is about; without them the line names no file.
    """
    for cause in _causes(exc):
        if isinstance(cause, OSError):
            return os_error_line(cause)
        if _is_postgres_fault(cause):
            return postgres_error_line(cause, store)
        if isinstance(cause, sqlite3.Error):
            code = getattr(cause, "sqlite_errorcode", 0) & 0xFF
            if code in _ENVIRONMENT:
                return sqlite_error_line(cause, root, store)
            return None  # a bad statement or a closed connection: ours to fix
    return None
