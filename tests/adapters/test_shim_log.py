"""The shim's log FIFO drained into ``shim.log``: a real FIFO, a real loop, real files."""

from __future__ import annotations

import os
from pathlib import Path

from adapters.shim_log import ShimLog
from tests.waiting import wait_until_async


def kept(keep: Path) -> bytes:
    older = keep.with_name(f"{keep.name}.1")
    return (older.read_bytes() if older.exists() else b"") + (
        keep.read_bytes() if keep.exists() else b""
    )


def fifo_writer(bundle: Path) -> int:
    return os.open(bundle / "log", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)


async def test_the_kept_log_rotates_at_its_size_keeping_one_older_file(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    keep = tmp_path / "logs" / "ns" / "id" / "shim.log"
    log = ShimLog.open(str(bundle), "id", keep, max_size=1000)
    writer = fifo_writer(bundle)
    lines = [f"line {n:03} ".encode().ljust(99, b"x") + b"\n" for n in range(41)]
    try:
        for line in lines:  # one at a time: each drain appends one line
            os.write(writer, line)
            await wait_until_async(lambda line=line: kept(keep).endswith(line),
                                       "timed out waiting for the line kept", step=0.005)
    finally:
        os.close(writer)
        log.close()
    older = keep.with_name("shim.log.1")
    assert older.stat().st_size == 1000  # renamed once it reached the size
    assert keep.stat().st_size == 100
    assert kept(keep) == b"".join(lines[-11:])  # the latest, in order; the rest dropped
    assert {oct(p.stat().st_mode & 0o777) for p in (keep, older)} == {"0o600"}
    assert {oct(d.stat().st_mode & 0o777) for d in keep.parents[:3]} == {"0o700"}


async def test_the_kept_log_is_made_private_and_never_followed_through_a_link(
    tmp_path: Path,
) -> None:
    bundle = tmp_path / "bundles"
    for name in ("wide", "linked"):
        (bundle / name).mkdir(parents=True)
    wide = tmp_path / "wide" / "shim.log"
    wide.parent.mkdir()
    wide.write_bytes(b"from an older shimledger\n")
    wide.chmod(0o644)
    linked = tmp_path / "linked" / "shim.log"
    linked.parent.mkdir()
    target = tmp_path / "someone-elses-file"
    target.write_bytes(b"untouched\n")
    linked.symlink_to(target)
    logs = [ShimLog.open(str(bundle / keep.parent.name), "id", keep) for keep in (wide, linked)]
    writers = [fifo_writer(bundle / name) for name in ("wide", "linked")]
    try:
        for writer in writers:
            os.write(writer, b"news\n")
    finally:
        for writer in writers:
            os.close(writer)
        for log in logs:
            log.close()  # drains what is left first
    assert wide.read_bytes() == b"from an older shimledger\nnews\n"
    assert oct(wide.stat().st_mode & 0o777) == "0o600"
    assert target.read_bytes() == b"untouched\n"
