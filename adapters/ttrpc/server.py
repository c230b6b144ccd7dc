"""An asyncio ttrpc server, answering the way ttrpc v1.1.1 does.

Each request runs in its own task, because a caller keeps a blocking ``Wait`` in flight
on the same connection as its other calls; replies go out in completion order, with
writes serialized per connection. Whatever a peer sends (garbage, half frames, a sudden
close) ends at most that peer's connection, never the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar, cast

from google.protobuf.message import DecodeError, Message

from adapters.proto import ttrpc_pb2
from adapters.ttrpc.errors import (
    CODE_DEADLINE_EXCEEDED,
    CODE_INTERNAL,
    CODE_INVALID_ARGUMENT,
    CODE_RESOURCE_EXHAUSTED,
    CODE_UNIMPLEMENTED,
    CODE_UNKNOWN,
    status_from_error,
)
from adapters.ttrpc.framing import (
    MESSAGE_TYPE_REQUEST,
    MESSAGE_TYPE_RESPONSE,
    FrameTooLargeError,
    encode_frame,
    read_frame,
)
from domain.errors import AlreadyExistsError, ShimledgerError

__all__ = ["Handler", "Metadata", "TtrpcServer"]

logger = logging.getLogger(__name__)

Metadata = dict[str, list[str]]
#: ``async (request, metadata) -> response``; None stands for google.protobuf.Empty.
Handler = Callable[[Message, Metadata], Awaitable[Message | None]]

RequestT = TypeVar("RequestT", bound=Message)

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True, slots=True)
class _Method:
    request_type: type[Message]
    handler: Handler


class _Connection:
    """One accepted peer: its writer, its write lock and its in-flight handler tasks."""

    def __init__(self, writer: asyncio.StreamWriter, peer: str) -> None:
        self.writer = writer
        self.peer = peer
        self.write_lock = asyncio.Lock()
        self.handlers: set[asyncio.Task[None]] = set()

    async def send(self, stream_id: int, response: ttrpc_pb2.Response) -> None:
        payload = response.SerializeToString()
        try:
            frame = encode_frame(stream_id, MESSAGE_TYPE_RESPONSE, payload)
        except FrameTooLargeError as exc:
            # ttrpc 1.1.1 clients cannot skip an oversized response; fail the call instead.
            logger.error("ttrpc server: response on stream %d too large: %s", stream_id, exc)
            response = _status_response(CODE_RESOURCE_EXHAUSTED, str(exc))
            frame = encode_frame(stream_id, MESSAGE_TYPE_RESPONSE, response.SerializeToString())
        async with self.write_lock:
            if self.writer.is_closing():
                return
            try:
                self.writer.write(frame)
                await self.writer.drain()
            except (ConnectionError, RuntimeError) as exc:
                # The peer left before its answer; nothing else to tell it.
                logger.debug("ttrpc server: cannot reply to %s: %s", self.peer, exc)

    async def send_status(self, stream_id: int, code: int, message: str) -> None:
        await self.send(stream_id, _status_response(code, message))


def _status_response(code: int, message: str) -> ttrpc_pb2.Response:
    return ttrpc_pb2.Response(status=ttrpc_pb2.Status(code=code, message=message))


class TtrpcServer:
    """Serves registered (service, method) handlers on a Unix socket."""

    def __init__(self) -> None:
        self._methods: dict[str, dict[str, _Method]] = {}
        self._server: asyncio.Server | None = None
        self._path: str | None = None
        self._inode: tuple[int, int] | None = None
        self._connections: set[asyncio.Task[object]] = set()
        self._closing = False

    def __repr__(self) -> str:
        state = "closed" if self._closing else "serving" if self._server is not None else "idle"
        return f"<TtrpcServer [{self._path!r}, {state}, connections: {len(self._connections)}]>"

    def register(
        self,
        service: str,
        method: str,
        request_type: type[RequestT],
        handler: Callable[[RequestT, Metadata], Awaitable[Message | None]],
    ) -> None:
        """Route ``service``/``method`` to ``handler``; requests decode as ``request_type``."""
        methods = self._methods.setdefault(service, {})
        if method in methods:
            raise ValueError(f"{service}/{method} is already registered")
        # The pairing of request_type and handler is checked here, once; _Method erases it.
        methods[method] = _Method(request_type, cast(Handler, handler))

    async def start_unix(self, path: str, *, mode: int = 0o600) -> None:
        """Listen on the filesystem socket ``path`` with permissions ``mode``.

        A socket file left by a dead server is replaced; a live one raises
        AlreadyExistsError, so two servers never fight over one address.
        """
        if self._server is not None or self._closing:
            raise RuntimeError(f"{self!r} was already started")
        await _remove_stale_socket(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            st = os.stat(path)
            self._path = path
            self._inode = (st.st_dev, st.st_ino)
            # chmod before listen(): until listen() nobody can connect, so there is no
            # window in which the umask's looser mode is usable.
            os.chmod(path, mode)
            sock.listen(socket.SOMAXCONN)
            sock.setblocking(False)
            await self._serve(sock)
        except BaseException:
            sock.close()
            self._remove_socket_file()
            raise

    async def start_socket(self, sock: socket.socket) -> None:
        """Serve an already bound and listening Unix socket (say, one inherited as fd 3).

        The socket file, if any, is left in place by aclose(): its owner decides.
        """
        if self._server is not None or self._closing:
            raise RuntimeError(f"{self!r} was already started")
        sock.setblocking(False)
        await self._serve(sock)

    async def _serve(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_unix_server(self._on_connection, sock=sock)

    async def aclose(self) -> None:
        """Stop accepting, end every connection (cancelling its handlers), unlink the socket."""
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(list(self._connections))
        if self._server is not None:
            await self._server.wait_closed()
        self._remove_socket_file()

    async def __aenter__(self) -> TtrpcServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _remove_socket_file(self) -> None:
        # Only unlink the file we bound: a successor may already have replaced it.
        if self._path is None or self._inode is None:
            return
        with contextlib.suppress(OSError):
            st = os.stat(self._path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self._path)

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._closing:
            writer.close()
            return
        self._connections.add(task)
        try:
            peer = _peer_description(writer)
            if peer is not None:
                await self._serve_connection(reader, _Connection(writer, peer))
        except asyncio.CancelledError:
            # Only aclose() cancels this task, and it is ending anyway. Ending normally
            # matters: Python 3.11's start_unix_server calls task.exception() on this task
            # and logs a spurious error when the task ends cancelled.
            pass
        except Exception:
            logger.exception("ttrpc server: connection handler failed")
        finally:
            self._connections.discard(task)
            writer.close()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await writer.wait_closed()

    async def _serve_connection(self, reader: asyncio.StreamReader, conn: _Connection) -> None:
        try:
            while True:
                try:
                    header, payload = await read_frame(reader)
                except FrameTooLargeError as exc:
                    assert exc.header is not None
                    await conn.send_status(exc.header.stream_id, CODE_RESOURCE_EXHAUSTED, str(exc))
                    continue
                if header.stream_id % 2 != 1:
                    await conn.send_status(
                        header.stream_id,
                        CODE_INVALID_ARGUMENT,
                        "StreamID must be odd for client initiated streams",
                    )
                    continue
                if header.message_type != MESSAGE_TYPE_REQUEST:
                    continue  # ignored for forward compatibility, as ttrpc does
                handler_task = asyncio.create_task(
                    self._handle_request(conn, header.stream_id, payload),
                    name=f"ttrpc-request {conn.peer} stream {header.stream_id}",
                )
                conn.handlers.add(handler_task)
                handler_task.add_done_callback(conn.handlers.discard)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            logger.debug("ttrpc server: %s went away: %r", conn.peer, exc)
        finally:
            # Like ttrpc's per-connection context: handlers die with their connection.
            for handler_task in list(conn.handlers):
                handler_task.cancel()
            if conn.handlers:
                await asyncio.wait(list(conn.handlers))

    async def _handle_request(self, conn: _Connection, stream_id: int, payload: bytes) -> None:
        try:
            request = ttrpc_pb2.Request.FromString(payload)
        except DecodeError as exc:
            await conn.send_status(
                stream_id, CODE_INVALID_ARGUMENT, f"unmarshal request error: {exc}"
            )
            return
        methods = self._methods.get(request.service)
        if methods is None:
            await conn.send_status(stream_id, CODE_UNIMPLEMENTED, f"service {request.service}")
            return
        entry = methods.get(request.method)
        if entry is None:
            await conn.send_status(stream_id, CODE_UNIMPLEMENTED, f"method {request.method}")
            return
        try:
            message = entry.request_type.FromString(request.payload)
        except DecodeError as exc:
            await conn.send_status(
                stream_id, CODE_INTERNAL, f"ttrpc: error unmarshalling payload: {exc}"
            )
            return
        metadata: Metadata = {}
        for pair in request.metadata:
            metadata.setdefault(pair.key, []).append(pair.value)
        await conn.send(stream_id, await self._invoke(entry, request, message, metadata))

    async def _invoke(
        self,
        entry: _Method,
        request: ttrpc_pb2.Request,
        message: Message,
        metadata: Metadata,
    ) -> ttrpc_pb2.Response:
        """Run the handler under the request's deadline and turn its outcome into a Response."""
        deadline = request.timeout_nano / 1e9 if request.timeout_nano > 0 else None
        name = f"{request.service}/{request.method}"
        try:
            async with asyncio.timeout(deadline) as scope:
                result = await entry.handler(message, metadata)
        except TimeoutError as exc:
            if scope.expired():
                return _status_response(CODE_DEADLINE_EXCEEDED, "context deadline exceeded")
            logger.exception("ttrpc server: handler %s failed", name)
            return _status_response(CODE_UNKNOWN, status_from_error(exc)[1])
        except ShimledgerError as exc:
            code, text = status_from_error(exc)
            logger.debug("ttrpc server: %s returned code %d: %s", name, code, text)
            return _status_response(code, text)
        except Exception as exc:
            logger.exception("ttrpc server: handler %s failed", name)
            return _status_response(CODE_UNKNOWN, status_from_error(exc)[1])
        if result is None:
            return ttrpc_pb2.Response()
        try:
            return ttrpc_pb2.Response(payload=result.SerializeToString())
        except Exception as exc:  # e.g. a required-field or type error in the result
            logger.exception("ttrpc server: cannot encode the result of %s", name)
            return _status_response(CODE_UNKNOWN, status_from_error(exc)[1])


def _peer_description(writer: asyncio.StreamWriter) -> str | None:
    """Who is on the other end, or None (connection to be closed) if not our own user.

    The shim socket is the container runtime's control plane; ttrpc's
    UnixSocketRequireSameUser keeps other users off it even if the file mode is loosened.
    """
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    try:
        pid, uid, gid = _PEERCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        )
    except OSError as exc:
        logger.warning("ttrpc server: cannot read peer credentials: %s", exc)
        return None
    if uid != os.geteuid():
        logger.warning(
            "ttrpc server: rejecting peer pid %d uid %d (we are uid %d)", pid, uid, os.geteuid()
        )
        return None
    return f"pid {pid}"


async def _remove_stale_socket(path: str) -> None:
    """Unlink ``path`` if it is a socket nobody listens on; refuse if someone does."""
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
