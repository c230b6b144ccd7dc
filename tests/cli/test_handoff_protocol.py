"""The control socket's messages (cli/handoff.py), on a real socket pair: what a request
carries, what is refused, and that a refused request's descriptors are closed."""

from __future__ import annotations

import os
import socket

import pytest

from cli import handoff


def pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def test_a_request_arrives_whole_with_its_descriptors() -> None:
    client, server = pair()
    read_end, write_end = os.pipe()
    try:
        request = handoff.Request(handoff.version(), ["list", "-q"], "/tmp", {"TERM": "xterm"},
                                  [1], 0o027)  # fmt: skip
        handoff.send_bytes(client, request.encode(), (write_end,))
        got, fds = handoff.receive_request(server)
        assert (got.argv, got.cwd, got.env, got.stdio, got.umask) == (
            ["list", "-q"], "/tmp", {"TERM": "xterm"}, [1], 0o027)  # fmt: skip
        (passed,) = fds
        os.write(passed, b"through")  # the client's own pipe, in this process
        os.close(passed)
        assert os.read(read_end, 16) == b"through"
    finally:
        for fd in (read_end, write_end):
            os.close(fd)
        client.close()
        server.close()


@pytest.mark.parametrize(
    "data",
    [b"[]", b"{}", b"not json",
     b'{"version":"1","argv":[],"cwd":"/","env":{},"stdio":[3],"umask":18}',
     b'{"version":"1","argv":[],"cwd":"/","env":{},"stdio":[1,1],"umask":18}',
     b'{"version":"1","argv":[],"cwd":"/","env":{},"stdio":[0,1],"umask":18}',
     b"[" * 100000],
    ids=["list", "empty", "garbage", "not-stdio", "twice", "fds-missing", "too-deep"],
)
def test_a_malformed_request_is_refused_and_its_descriptors_closed(data: bytes) -> None:
    client, server = pair()
    read_end, write_end = os.pipe()
    try:
        handoff.send_bytes(client, data, (write_end,))
        os.close(write_end)  # the one sent along is now the only write end
        with pytest.raises(ValueError):
            handoff.receive_request(server)
        assert os.read(read_end, 1) == b""  # EOF: the receiver closed what came along
    finally:
        os.close(read_end)
        client.close()
        server.close()


def test_a_client_that_closes_before_its_request_is_told_apart() -> None:
    client, server = pair()
    client.close()
    with pytest.raises(EOFError):
        handoff.receive_request(server)
    server.close()


def test_the_version_changes_with_the_code_on_disk(tmp_path) -> None:
    for package in handoff.PACKAGES:
        (tmp_path / package / "sub").mkdir(parents=True)
    module = tmp_path / "shim" / "sub" / "m.py"
    module.write_text("")
    os.utime(module, ns=(1, 1_000_000_000))
    before = handoff.code_version(str(tmp_path))
    os.utime(module, ns=(1, 2_000_000_000))  # edited, or upgraded in place
    edited = handoff.code_version(str(tmp_path))
    (tmp_path / "cli" / "new.py").write_text("")
    added = handoff.code_version(str(tmp_path))
    assert len({before, edited, added}) == 3
    assert before == "1:1000000000"
