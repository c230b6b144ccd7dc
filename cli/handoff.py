"""How a command is handed to `serve`: the control socket's messages, in the stdlib alone.

The `shimledger` entry point (cli/launcher.py) imports this module and nothing heavier, so
a command handed to a running serve costs about what starting Python costs; serve's side
(cli/command_server.py) speaks the same messages. The socket is a unix SOCK_SEQPACKET one,
so each message arrives whole, with its file descriptors attached:

    client -> serve   Request: argv, cwd, environment, umask, which of stdin, stdout and
                      stderr come along (their descriptors, by SCM_RIGHTS)
    serve  -> client  {"accepted": true} or {"refused": why}  (the client then runs the
                      command itself, as if no serve were there)
    client -> serve   {"signal": n} for each SIGINT, SIGTERM, SIGHUP, SIGWINCH it gets
    serve  -> client  {"exit": code} or {"signal": n} (the command died of signal n)

The whole environment goes along, as chg sends it: PATH finds the runtime and the shim,
PG* variables reach libpq, TZ reads times, as they would in the client's own process.
A client that goes away (its socket closes) cancels its command the way SIGKILL of the
in-process CLI would. version() is compared whole: a serve of another version, another
install or older code refuses, and nothing is lost but speed.
"""

from __future__ import annotations

import array
import json
import os
import socket
import struct
from collections.abc import Mapping

PACKAGES = ("domain", "adapters", "shim", "projections", "cli")


def code_version(root: str) -> str:
    """Which code is installed under ``root``: its modules' count and newest mtime. A serve
    that imported older code (an upgrade in place, an edit) then refuses, and the command
    runs with what is on disk now (about a millisecond: a stat per module)."""
    newest, count = 0, 0
    folders = [os.path.join(root, package) for package in PACKAGES]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != "__pycache__":
                        folders.append(entry.path)
                elif entry.name.endswith(".py"):
                    count += 1
                    newest = max(newest, entry.stat().st_mtime_ns)
    return f"{count}:{newest}"


_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
_version: list[str] = []


def version() -> str:
    """The protocol, which code, and of when: compared whole by serve (taken once, and only
    by a command that reaches a serve)."""
    if not _version:
        _version.append(f"1 {_ROOT} {code_version(_ROOT)}")
    return _version[0]


_PEERCRED = struct.Struct("3i")


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end (SO_PEERCRED); OSError if unknown."""
    pid, uid, gid = _PEERCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    )
    return int(pid), int(uid), int(gid)
DEFAULT_ROOT = "/var/lib/shimledger"  # cli/settings.py's defaults, as strings
DEFAULT_STATE = "/run/shimledger"
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes, the last one a NUL
CONTROL_SOCKET = "control.sock"  # in the state dir, beside events.sock
NO_SERVE = "SHIMLEDGER_NO_SERVE"  # "1": never hand a command to serve
MAX_MESSAGE = 1 << 20  # argv and environment: far below; a longer one is refused
STDIO = (0, 1, 2)

class Request:
    """One command as the client would have run it. (A plain class: dataclasses would add
    their import to every handed-off command's start.)"""

    def __init__(
        self, version: str, argv: list[str], cwd: str, env: dict[str, str], stdio: list[int],
        umask: int = 0o022,
    ) -> None:  # fmt: skip
        self.version = version
        self.argv = argv
        self.cwd = cwd
        self.env = env
        self.stdio = stdio  # which of 0, 1, 2 were open (and so sent along, in this order)
        self.umask = umask

    def encode(self) -> bytes:
        return json.dumps(vars(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Request:
        """The request in ``data``; ValueError if it is not one."""
        fields = json.loads(data)
        if not isinstance(fields, dict):
            raise ValueError("not a JSON object")
        request = cls(
            version=str(fields["version"]),
            argv=[str(a) for a in fields["argv"]],
            cwd=str(fields["cwd"]),
            env={str(k): str(v) for k, v in dict(fields["env"]).items()},
            stdio=[int(fd) for fd in fields["stdio"]],
            umask=int(fields["umask"]) & 0o777,
        )
        if not set(request.stdio) <= set(STDIO) or len(set(request.stdio)) != len(request.stdio):
            raise ValueError(f"stdio {request.stdio} is not a subset of 0, 1, 2")
        return request


def control_socket(state: str) -> str:
    return os.path.join(state, CONTROL_SOCKET)


def send(sock: socket.socket, message: Mapping[str, object], fds: tuple[int, ...] = ()) -> None:
    """One message; ``fds`` go with it (SCM_RIGHTS)."""
    data = json.dumps(message, separators=(",", ":")).encode()
    send_bytes(sock, data, fds)


def send_bytes(sock: socket.socket, data: bytes, fds: tuple[int, ...]) -> None:
    """One message of ``data`` as it is (what ``send`` and ``send_request`` encode)."""
    if fds:
        rights = array.array("i", fds).tobytes()
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
    else:
        sock.send(data)


def send_request(sock: socket.socket, request: Request) -> None:
    send_bytes(sock, request.encode(), tuple(request.stdio))


def receive(sock: socket.socket) -> dict[str, object] | None:
    """The next message, or None once the other end has closed."""
    data = sock.recv(MAX_MESSAGE)
    if not data:
        return None
    message = json.loads(data)
    if not isinstance(message, dict):
        raise ValueError("not a JSON object")
    return message


def receive_request(sock: socket.socket) -> tuple[Request, list[int]]:
    """A request and the descriptors that came with it (the receiver's to close);
    ValueError if the message is not a request, or EOFError if there is none."""
    data, ancillary, flags, _ = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(4 * len(STDIO)))
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            rights = array.array("i")
            rights.frombytes(payload[: len(payload) - len(payload) % rights.itemsize])
            fds.extend(rights)
    try:
        if not data:
            raise EOFError("the client closed before its request")
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise ValueError("the request is too long")
        request = Request.decode(data)
        if len(fds) != len(request.stdio):
            raise ValueError(f"{len(fds)} descriptors came with {len(request.stdio)} stdio")
    except Exception as exc:  # anything a client can send: JSON nested too deep, too
        for fd in fds:
            os.close(fd)
        if isinstance(exc, EOFError):
            raise
        raise ValueError(f"{type(exc).__name__}: {exc}"[:200]) from None
    return request, fds
