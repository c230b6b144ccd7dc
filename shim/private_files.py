"""Files only their owner reads, written whole or not at all, never through a planted link.

Everything shimledger writes (history, working bundles, state files, the audit page, a pid
file) can land in a directory other users write to: `audit --html /tmp/audit.html` is the
README's own example. A fixed temporary name opened with a plain open() there lets any
local user plant a symlink and have root overwrite the file it points at. So the temporary
file is made by ``tempfile.mkstemp`` in the target's own directory (a random name, opened
with O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600), filled, given its final mode, and renamed over
the target: rename replaces a link at the target instead of following it.

Here in ``shim`` (plain file I/O, like the working bundles') so that both the services and
the command line can use it under design.md's import rule.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

PRIVATE = 0o600
LOCK_POLL = 0.005  # seconds between tries for a flock another process holds


@asynccontextmanager
async def flocked(path: Path, *, shared: bool = False) -> AsyncIterator[None]:
    """Hold a flock on ``path`` (made 0600 if missing) for the block's duration.

    Polled, not blocking: a process's event loop must go on while another holds it. The
    kernel drops the lock with its holder, however that one ends.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE)
    try:
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(LOCK_POLL)
        yield
    finally:
        os.close(fd)  # releases the flock


def write_private(path: Path, data: str | bytes, *, mode: int = PRIVATE) -> None:
    """Replace ``path`` with ``data`` atomically: readers see the old file or the new one.

    ``mode`` is the file's final mode (0600 unless said otherwise); the temporary file is
    0600 from its creation, so the data is never readable by others, even for a moment.
    """
    payload = data.encode() if isinstance(data, str) else data
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(payload)
            if mode != PRIVATE:
                os.fchmod(file.fileno(), mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def create_private(path: Path, data: str | bytes) -> bool:
    """Create ``path`` (mode 0600) holding ``data``, only if nothing is there yet.

    False if something already is (a file, or a link, which is not followed). The file
    appears whole: it is written under a temporary name first and linked into place, so
    a reader racing the creator never reads it half written.
    """
    payload = data.encode() if isinstance(data, str) else data
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(payload)
        try:
            os.link(temporary, path, follow_symlinks=False)
        except FileExistsError:
            return False
        return True
    finally:
        Path(temporary).unlink(missing_ok=True)


def create_new_private(path: Path, data: str | bytes) -> None:
    """Write ``data`` into a new file ``path`` (mode 0600) in a directory we just made.

    O_EXCL|O_NOFOLLOW: an existing file or link is refused (FileExistsError), never
    written through. No temporary name, so a crash leaves the file torn rather than a
    stray ``.partial`` beside it: for files whose directory is removed whole on failure.
    """
    payload = data.encode() if isinstance(data, str) else data
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.fdopen(os.open(path, flags, PRIVATE), "wb") as file:
        file.write(payload)


def tighten(path: Path, mode: int) -> None:
    """Take away what ``mode`` does not grant from an existing file or directory of ours.

    For what an older shimledger made with wider modes. Only what this user owns (chmod
    would fail on anything else), and never through a symlink.
    """
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if st.st_uid == os.geteuid() and not path.is_symlink() and st.st_mode & 0o777 & ~mode:
        os.chmod(path, st.st_mode & 0o777 & mode)


def private_sqlite(database: Path) -> None:
    """A SQLite file (and its -wal, -shm, -journal) readable by its owner alone, made so
    before SQLite opens it: SQLite gives those side files the database's own mode.

    The event store and the view files both hold command lines (every event's Cause), so
    this is shared by adapters/ and projections/ (test_architecture.py lets both import
    this stdlib-only module). The file is created empty (a valid, empty SQLite database)
    with O_EXCL|O_NOFOLLOW; one an older shimledger made 0644 is narrowed to 0600. Nothing
    is done for what this user does not own, nor for SQLite's in-memory and URI names.
    """
    if str(database) == ":memory:" or str(database).startswith("file:"):
        return
    if database.parent.is_dir():
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            os.close(os.open(database, flags, PRIVATE))
        except FileExistsError:
            pass
    for suffix in ("", "-wal", "-shm", "-journal"):
        tighten(Path(f"{database}{suffix}"), PRIVATE)
