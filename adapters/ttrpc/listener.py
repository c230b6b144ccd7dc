"""The server's side of the Unix socket: binding, the socket file, and who may connect.

Kept apart from the protocol handling in server.py: these are the file-system and kernel
facts (stale socket files, abstract names, SO_PEERCRED) a ttrpc server must get right
before the first byte of a frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
import struct
from dataclasses import dataclass

from adapters.ttrpc.address import abstract_name, is_abstract
from domain.errors import AlreadyExistsError

__all__ = ["SocketFile", "bind_unix", "peer_description", "peer_pid", "remove_stale_socket"]

logger = logging.getLogger(__name__)

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True, slots=True)
class SocketFile:
    """A socket file this process bound, remembered by inode."""

    path: str
    device: int
    inode: int

    def remove(self) -> None:
        """Unlink it, unless a successor has already put its own socket at the path.

        The owner's cleanup on close, not stale-socket removal: no probe is needed, since
        we know the socket is ours and closing. The inode check keeps a successor that
        found ours refusing once our listener closed, and replaced it, from losing its
        socket to us.
        """
        with contextlib.suppress(OSError):
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == (self.device, self.inode):
                os.unlink(self.path)


async def bind_unix(path: str, mode: int) -> tuple[socket.socket, SocketFile | None]:
    """A listening, non-blocking socket at ``path``, and its file (None if abstract).

    A file left by a dead server is replaced; a live server at the path, file or abstract
    name, raises AlreadyExistsError.
    """
    abstract = is_abstract(path)
    await remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    socket_file: SocketFile | None = None
    try:
        try:
            sock.bind(path)
        except OSError as exc:
            if abstract and exc.errno == errno.EADDRINUSE:
                raise AlreadyExistsError(
                    f"a server is already listening on @{abstract_name(path)}"
                ) from exc
            raise
        if not abstract:
            st = os.stat(path)
            socket_file = SocketFile(path, st.st_dev, st.st_ino)
            # chmod before listen(): until listen() nobody can connect, so there is no
            # window in which the umask's looser mode is usable.
            os.chmod(path, mode)
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        if socket_file is not None:
            socket_file.remove()
        raise
    return sock, socket_file


async def remove_stale_socket(path: str) -> None:
    """Unlink the socket file at ``path`` if nobody listens on it; refuse if someone does.

    Why this is needed: a server that dies without cleaning up (SIGKILL, a crash; a shim
    killed with its container) leaves its socket file behind, and ``bind()`` on an
    existing path fails with EADDRINUSE although nothing answers there.
    The file alone cannot tell a dead socket from a live one: only connecting can. A
    refused connection means nobody listens, so the file is stale and safe to unlink.
    Anything else is someone's: a live listener, a path that is not a socket, or one that
    cannot be probed raises AlreadyExistsError saying which, and the path is left alone.

    Abstract names have no file and vanish with their owner: nothing to remove. Probing
    and unlinking are two steps: callers that race for one path (the event sink) hold a
    lock around this and the bind that follows.
    """
    if is_abstract(path):
        return
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise AlreadyExistsError(f"{path} exists and is not a socket")
    try:
        async with asyncio.timeout(1.0):
            _, writer = await asyncio.open_unix_connection(path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except (OSError, TimeoutError) as exc:
        raise AlreadyExistsError(f"socket {path} exists and cannot be probed: {exc}") from exc
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    raise AlreadyExistsError(f"a server is already listening on {path}")


def peer_pid(writer: asyncio.StreamWriter) -> int | None:
    """The pid of the process that connected (SO_PEERCRED), or None if it cannot be read."""
    try:
        credentials = _peer_credentials(writer)
    except OSError:
        return None
    return None if credentials is None else credentials[0]


def _peer_credentials(writer: asyncio.StreamWriter) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of the connected process, or None without a socket; OSError if the
    kernel will not say."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    pid, uid, gid = _PEERCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    )
    return int(pid), int(uid), int(gid)


def peer_description(writer: asyncio.StreamWriter) -> str | None:
    """Who is on the other end, or None (connection to be closed) if not our own user.

    The shim socket is the container runtime's control plane; like ttrpc's
    UnixSocketRequireSameUser (effective uid and gid both ours), this keeps other users off
    it even if the file mode is loosened, and guards abstract sockets, which have no mode.
    """
    try:
        credentials = _peer_credentials(writer)
    except OSError as exc:
        logger.warning("ttrpc server: cannot read peer credentials: %s", exc)
        return None
    if credentials is None:
        return None
    pid, uid, gid = credentials
    if uid != os.geteuid() or gid != os.getegid():
        logger.warning(
            "ttrpc server: rejecting peer pid %d uid %d gid %d (we are uid %d gid %d)",
            pid,
            uid,
            gid,
            os.geteuid(),
            os.getegid(),
        )
        return None
    return f"pid {pid}"
