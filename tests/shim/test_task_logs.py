"""Task logs on disk: the tail from the end, copy-truncate rotation, reading across files."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import pytest

from domain.errors import InvalidArgumentError
from shim.lifecycle.task_logs import (
    BLOCK,
    LogFollower,
    LogRotation,
    log_files,
    make_private_file,
    parse_size,
    remove_logs,
    rotate,
    rotate_all,
    write_log,
)


def lines(first: int, last: int) -> bytes:
    return b"".join(b"line %d\n" % n for n in range(first, last + 1))


def read(path: Path, tail: int | None = None) -> bytes:
    out = io.BytesIO()
    write_log(path, out, tail=tail)
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "tail", "expected"),
    [
        (b"a\nb\nc\n", 1, b"c\n"),
        (b"a\nb\nc\n", 2, b"b\nc\n"),
        (b"a\nb\nc\n", 9, b"a\nb\nc\n"),
        (b"a\nb\nc", 1, b"c"),  # a last line without its newline yet counts
        (b"a\nb\nc", 2, b"b\nc"),
        (b"a\r\nb\r\n", 1, b"b\r\n"),  # lines end at \n, as tail(1) counts them
        (b"", 3, b""),
        (b"a\nb\n", 0, b""),
    ],
)
def test_tail_counts_lines_like_tail(tmp_path: Path, data: bytes, tail: int, expected: bytes):
    log = tmp_path / "1.log"
    log.write_bytes(data)
    assert read(log, tail) == expected


def test_tail_reaches_back_across_blocks_and_rotated_files(tmp_path: Path) -> None:
    log = tmp_path / "1.log"
    long_line = b"x" * (BLOCK * 2 + 5) + b"\n"  # one line longer than two blocks
    (tmp_path / "1.log.2").write_bytes(b"first\nsec")  # a rotation may cut a line in two
    (tmp_path / "1.log.1").write_bytes(b"ond\n" + long_line)
    log.write_bytes(b"last\n")
    assert read(log, 2) == long_line + b"last\n"
    assert read(log, 4) == b"first\nsecond\n" + long_line + b"last\n"
    assert read(log) == b"first\nsecond\n" + long_line + b"last\n"


def test_rotation_copies_truncates_and_keeps_max_files(tmp_path: Path) -> None:
    log = tmp_path / "1.log"
    rotation = LogRotation(max_size=100, max_files=3)
    written = b""
    # The shim's own descriptor: O_APPEND, opened once, never reopened.
    shim = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for batch in range(5):
            chunk = lines(batch * 20 + 1, batch * 20 + 20)
            os.write(shim, chunk)
            written += chunk
            assert rotate(log, rotation)
            assert not rotate(log, rotation)  # empty now: under the size
        os.write(shim, b"tail\n")  # lands at offset 0 of the truncated file: no hole
    finally:
        os.close(shim)
    assert log.read_bytes() == b"tail\n"
    assert [p.name for p in log_files(log)] == ["1.log.2", "1.log.1", "1.log"]
    assert read(log) == lines(61, 100) + b"tail\n"  # the two newest rotations, then live


def test_one_file_means_truncate_only(tmp_path: Path) -> None:
    log = tmp_path / "1.log"
    log.write_bytes(lines(1, 50))
    assert rotate(log, LogRotation(max_size=10, max_files=1))
    assert log.read_bytes() == b"" and log_files(log) == [log]


def test_a_reader_holding_the_log_defers_rotation(tmp_path: Path) -> None:
    import fcntl

    log = tmp_path / "1.log"
    log.write_bytes(lines(1, 50))
    with open(log, "rb") as reader:
        fcntl.flock(reader, fcntl.LOCK_SH)
        assert not rotate(log, LogRotation(max_size=10))  # not now: never waits
    assert rotate(log, LogRotation(max_size=10))


def test_following_goes_on_across_a_rotation(tmp_path: Path) -> None:
    log = tmp_path / "1.log"
    log.write_bytes(lines(1, 10))
    out = io.BytesIO()
    follower = LogFollower(log, write_log(log, out))
    with open(log, "ab") as shim:
        shim.write(lines(11, 20))
        shim.flush()
        rotate(log, LogRotation(max_size=10))
        shim.write(lines(21, 22))
    follower.copy_new(out)
    assert out.getvalue() == lines(1, 22)


def test_a_new_incarnation_removes_the_old_logs_not_the_shims(tmp_path: Path) -> None:
    for name in ("1.log", "1.log.1", "2.log", "shim.log"):
        (tmp_path / name).write_bytes(b"x")
    remove_logs(tmp_path, keep="2.log")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2.log", "shim.log"]


def test_the_policy_from_the_environment() -> None:
    assert LogRotation.from_env({}) == LogRotation(10 * 1024**2, 3)
    env = {"SHIMLEDGER_LOG_MAX_SIZE": "512k", "SHIMLEDGER_LOG_MAX_FILES": "5"}
    assert LogRotation.from_env(env) == LogRotation(512 * 1024, 5)
    assert parse_size("10M") == parse_size("10MiB") == 10 * 1024**2 and parse_size("7") == 7
    with pytest.raises(InvalidArgumentError, match="SHIMLEDGER_LOG_MAX_SIZE='ten' is not"):
        LogRotation.from_env({"SHIMLEDGER_LOG_MAX_SIZE": "ten"})
    with pytest.raises(InvalidArgumentError, match="SHIMLEDGER_LOG_MAX_FILES='0' is not"):
        LogRotation.from_env({"SHIMLEDGER_LOG_MAX_FILES": "0"})


def mode(path: Path) -> str:
    return oct(path.lstat().st_mode & 0o777)


def test_a_rotated_copy_is_private_whatever_the_live_files_mode(tmp_path: Path) -> None:
    live = tmp_path / "ns" / "id" / "1.log"
    live.parent.mkdir(parents=True)
    live.write_bytes(lines(1, 100))
    live.chmod(0o644)  # as an older shimledger left it
    (tmp_path / "ns" / "id" / ".1.log.1.partial").write_bytes(b"a rotator killed half-way")
    assert rotate_all(tmp_path / "ns", LogRotation(max_size=100, max_files=2)) == 1
    assert mode(live.with_name("1.log.1")) == "0o600"
    assert live.with_name("1.log.1").read_bytes() == lines(1, 100)
    assert sorted(p.name for p in live.parent.iterdir()) == ["1.log", "1.log.1"]


def test_a_log_file_is_made_private_and_nothing_else_is_opened_for_it(tmp_path: Path) -> None:
    made = tmp_path / "1.log"
    make_private_file(made)
    assert (mode(made), made.read_bytes()) == ("0o600", b"")
    wide = tmp_path / "2.log"
    wide.write_bytes(b"kept")
    wide.chmod(0o644)
    make_private_file(wide)
    assert (mode(wide), wide.read_bytes()) == ("0o600", b"kept")
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    target.chmod(0o644)
    (tmp_path / "3.log").symlink_to(target)
    with pytest.raises(OSError) as link:
        make_private_file(tmp_path / "3.log")
    assert link.value.errno == errno.ELOOP and mode(target) == "0o644"
    os.mkfifo(tmp_path / "4.log")
    with pytest.raises(PermissionError):  # at once: a FIFO's open does not wait for a writer
        make_private_file(tmp_path / "4.log")
