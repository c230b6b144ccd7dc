"""A detached task's log: read from its end, rotated by copy and truncate, read across files.

The shim itself writes the log: containerd-shim-runc-v2 opens the `file://` stdio path once,
``O_WRONLY|O_APPEND`` (seen in /proc/<shim>/fdinfo: flags 02102001), and never reopens it.
So the file cannot be renamed away (the shim would write on into the renamed file); it is
copied to ``<n>.log.1`` and truncated in place instead, as logrotate's ``copytruncate``
does. ``O_APPEND`` is what makes that safe: after the truncate the shim's next write lands
at the new end, offset 0, not at its old offset behind a hole. What the task writes in the
instant between the end of the copy and the truncate is lost (logrotate's caveat too).

Files, oldest first: ``<n>.log.<max_files-1>`` ... ``<n>.log.1``, then ``<n>.log`` (live),
so at most ``max_size * max_files`` bytes per incarnation, as docker's ``max-size`` and
``max-file``. Readers take a shared flock on the live file and rotators an exclusive,
non-blocking one, so a rotation never shifts the files under a reader; a rotator that finds
a reader simply tries again at its next round.

Every file of a log is 0600 (in 0700 dirs): a task's output is its owner's. The shim keeps
the mode of a file that exists, so the live log is made (``make_private_file``) before the
shim opens it; rotated copies are made 0600 whatever the live file's mode. Modes are set
explicitly, never left to the umask (which an exec'd process would inherit).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from domain.errors import InvalidArgumentError

logger = logging.getLogger(__name__)

BLOCK = 64 * 1024
MAX_SIZE_ENV = "SHIMLEDGER_LOG_MAX_SIZE"
MAX_FILES_ENV = "SHIMLEDGER_LOG_MAX_FILES"
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_SIZE = re.compile(r"(\d+)\s*([kmg]?)i?b?", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from ``10485760``, ``512k``, ``10M``, ``1GiB`` (binary units, as docker's)."""
    found = _SIZE.fullmatch(text.strip())
    if found is None:
        raise ValueError(text)
    return int(found.group(1)) * _UNITS[found.group(2).lower()]


@dataclass(frozen=True)
class LogRotation:
    """When a task's log rotates (``max_size`` bytes) and how many files it keeps in all."""

    max_size: int = 10 * 1024**2
    max_files: int = 3

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LogRotation:
        """The policy from SHIMLEDGER_LOG_MAX_SIZE and SHIMLEDGER_LOG_MAX_FILES (or defaults)."""
        env = os.environ if environ is None else environ
        default = cls()
        size_text = env.get(MAX_SIZE_ENV, "").strip()
        files_text = env.get(MAX_FILES_ENV, "").strip()
        try:
            size = parse_size(size_text) if size_text else default.max_size
        except ValueError:
            size = 0
        if size <= 0:
            raise InvalidArgumentError(
                f"{MAX_SIZE_ENV}={size_text!r} is not a size: use bytes or e.g. 512k, 10M, 1G"
            )
        files = int(files_text) if files_text.isdigit() else default.max_files
        if files_text and (not files_text.isdigit() or files < 1):
            raise InvalidArgumentError(
                f"{MAX_FILES_ENV}={files_text!r} is not a count of files: use 1 or more"
            )
        return cls(max_size=size, max_files=files)


def rotated_files(path: Path) -> list[tuple[int, Path]]:
    """The rotated files of the live log ``path`` that exist, newest (``.1``) first."""
    found = []
    for candidate in path.parent.glob(f"{path.name}.*"):
        suffix = candidate.name[len(path.name) + 1 :]
        if suffix.isdigit():
            found.append((int(suffix), candidate))
    return sorted(found)


def log_files(path: Path) -> list[Path]:
    """Every file of the log, oldest first, the live one last: the order it was written in."""
    return [p for _, p in reversed(rotated_files(path))] + [path]


def remove_logs(
    directory: Path, *, keep: str | None = None, only: Callable[[int], bool] | None = None
) -> None:
    """Remove the incarnation logs (``<n>.log`` and rotated ones) in ``directory``.

    ``keep`` names a live log to leave with its rotated files; ``only``, if given, picks
    the incarnation numbers whose logs go (the others' stay); the shim's own ``shim.log``
    is never touched.
    """
    for candidate in directory.glob("[0-9]*.log*"):
        live = candidate.name.split(".log", 1)[0] + ".log"
        number = live.removesuffix(".log")
        if live == keep or (only is not None and not (number.isdigit() and only(int(number)))):
            continue
        candidate.unlink(missing_ok=True)


def make_private_file(path: Path) -> None:
    """Create ``path`` empty and 0600, or narrow a regular file this user owns to 0600.

    Never through a symlink (O_NOFOLLOW), and an existing file is opened without blocking
    (a FIFO planted there does not wait for a writer) and refused unless it is ours.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            raise PermissionError(errno.EPERM, "not a regular file of this user", str(path))
        if info.st_mode & 0o777 != 0o600:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def rotate_all(directory: Path, rotation: LogRotation) -> int:
    """Rotate every live log under ``directory`` (one namespace's: ``<id>/<n>.log``) that
    reached the size; how many were. A stat per log: cheap enough for every command.

    A log that cannot be rotated (a full disk) is a warning, not the command's failure:
    the next command tries again.
    """
    rotated = 0
    for live in directory.glob("*/[0-9]*.log"):
        try:
            rotated += rotate(live, rotation)
        except OSError as exc:
            logger.warning("task log %s not rotated: %s", live, exc)
    return rotated


@contextlib.contextmanager
def _opened(path: Path, lock: int) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, lock)
        yield fd
    finally:
        os.close(fd)  # releases the flock too


def rotate(path: Path, rotation: LogRotation) -> bool:
    """Rotate the live log ``path`` if it reached the size; True if it did.

    Never waits: a reader or another rotator holding the log means "not now".
    """
    try:
        if path.stat().st_size < rotation.max_size:
            return False  # the common case, without opening anything
        with _opened(path, fcntl.LOCK_EX | fcntl.LOCK_NB) as fd:
            if os.fstat(fd).st_size < rotation.max_size:
                return False  # rotated by someone else just before us
            if rotation.max_files > 1:
                _shift(path, rotation.max_files)
                _copy_out(fd, path.with_name(f"{path.name}.1"))
            os.truncate(path, 0)
            return True
    except BlockingIOError:
        return False
    except FileNotFoundError:
        return False  # removed meanwhile (a new incarnation)


def _shift(path: Path, max_files: int) -> None:
    """Make room for a new ``.1``: ``.k`` becomes ``.k+1``, the oldest beyond the count go."""
    for number, old in reversed(rotated_files(path)):
        if number >= max_files - 1:
            old.unlink(missing_ok=True)
        else:
            old.replace(path.with_name(f"{path.name}.{number + 1}"))


def _copy_out(fd: int, target: Path) -> None:
    """Copy the whole live file (what was appended meanwhile too) to ``target`` atomically."""
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)  # a rotator killed half-way left it
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    out = os.open(partial, flags, 0o600)
    try:
        os.fchmod(out, 0o600)  # whatever the umask, and the live file's mode, were
        offset = 0
        while chunk := os.pread(fd, BLOCK * 16, offset):
            os.write(out, chunk)
            offset += len(chunk)
    except OSError:
        partial.unlink(missing_ok=True)  # a full disk: the live log stays as it was
        raise
    finally:
        os.close(out)
    partial.replace(target)


def _last_lines(data: bytes, lines: int) -> bytes | None:
    """The last ``lines`` lines of ``data`` (a final line without newline counts), or None if
    ``data`` does not reach back far enough to be sure where the first of them begins."""
    position = len(data) - 1 if data.endswith(b"\n") else len(data)
    for _ in range(lines):
        position = data.rfind(b"\n", 0, position)
        if position < 0:
            return None
    return data[position + 1 :]


def _tail(fds: list[int], sizes: list[int], lines: int) -> bytes:
    """Read blocks from the end of the newest file backwards until ``lines`` lines are in."""
    if lines <= 0:
        return b""
    blocks: list[bytes] = []
    newlines = 0
    for fd, size in zip(reversed(fds), reversed(sizes), strict=True):
        end = size
        while end > 0:
            start = max(0, end - BLOCK)
            block = os.pread(fd, end - start, start)
            blocks.append(block)
            newlines += block.count(b"\n")
            end = start
            if newlines > lines:  # one more than asked: the first one's start is known
                data = b"".join(reversed(blocks))
                found = _last_lines(data, lines)
                return data if found is None else found
    data = b"".join(reversed(blocks))  # the whole log is shorter than that
    found = _last_lines(data, lines)
    return data if found is None else found


def write_log(path: Path, out: BinaryIO, *, tail: int | None = None) -> int:
    """Write the log (or its last ``tail`` lines) to ``out``, oldest file first.

    Reads from the end for ``tail``: memory is that of the lines asked for, not the log's.
    Returns the live file's size it read up to, where following goes on from.
    """
    with _opened(path, fcntl.LOCK_SH) as live:
        fds = [live]
        try:
            for older in log_files(path)[:-1]:
                with contextlib.suppress(FileNotFoundError):
                    fds.insert(len(fds) - 1, os.open(older, os.O_RDONLY | os.O_CLOEXEC))
            sizes = [os.fstat(fd).st_size for fd in fds]
            if tail is not None:
                out.write(_tail(fds, sizes, tail))
            else:
                for fd, size in zip(fds, sizes, strict=True):
                    offset = 0
                    while offset < size and (chunk := os.pread(fd, min(BLOCK, size - offset),
                                                               offset)):  # fmt: skip
                        out.write(chunk)
                        offset += len(chunk)
            out.flush()
            return sizes[-1]
        finally:
            for fd in fds[:-1]:
                os.close(fd)


class LogFollower:
    """What is appended to a live log after ``offset``, across rotations.

    A rotation shows as a new ``.1`` file (a new inode) or a live file shorter than where
    we were: the rest of what we had not read is then in ``.1``, from our offset on.
    """

    def __init__(self, path: Path, offset: int) -> None:
        self._path = path
        self._offset = offset
        self._rotated = self._rotated_inode()

    def _rotated_inode(self) -> int | None:
        try:
            return self._path.with_name(f"{self._path.name}.1").stat().st_ino
        except FileNotFoundError:
            return None

    def copy_new(self, out: BinaryIO) -> None:
        """Write what was appended since the last call."""
        try:
            with _opened(self._path, fcntl.LOCK_SH) as live:
                self._copy_new(live, out)
        except FileNotFoundError:
            return  # the ID was created again: its old log is gone

    def _copy_new(self, live: int, out: BinaryIO) -> None:
        rotated = self._rotated_inode()
        if rotated != self._rotated or os.fstat(live).st_size < self._offset:
            self._rotated = rotated
            with contextlib.suppress(FileNotFoundError):
                self._copy_from(self._path.with_name(f"{self._path.name}.1"), out)
            self._offset = 0
        while chunk := os.pread(live, BLOCK, self._offset):
            out.write(chunk)
            self._offset += len(chunk)
        out.flush()

    def _copy_from(self, path: Path, out: BinaryIO) -> None:
        with open(path, "rb") as older:
            older.seek(self._offset)
            while chunk := older.read(BLOCK):
                out.write(chunk)
