"""An asyncio ttrpc server, answering the way ttrpc v1.1.1 does.

Each request runs in its own task, because a caller keeps a blocking ``Wait`` in flight
on the same connection as its other calls; replies go out in completion order, with
writes serialized per connection. Whatever a peer sends (garbage, half frames, a sudden
close) ends at most that peer's connection, never the server.

Shutting down is graceful: ``shutdown(grace)`` stops accepting connections and refuses new
requests, lets the calls in flight finish and answer, and only then closes connections;
``aclose()`` is the same with no grace (calls in flight are cancelled).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar, cast

from google.protobuf.message import DecodeError, Message

from adapters.proto import ttrpc_pb2
from adapters.ttrpc.address import socket_path
from adapters.ttrpc.errors import (
    CODE_DEADLINE_EXCEEDED,
    CODE_INTERNAL,
    CODE_INVALID_ARGUMENT,
    CODE_RESOURCE_EXHAUSTED,
    CODE_UNAVAILABLE,
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
from adapters.ttrpc.listener import (
    SocketFile,
    bind_unix,
    peer_description,
    peer_pid,
)
from adapters.ttrpc.metadata import Metadata
from domain.errors import ShimledgerError

__all__ = ["PEER_PID", "SERVER_CLOSED", "Handler", "Metadata", "ServerState", "TtrpcServer"]

logger = logging.getLogger(__name__)

#: The pid of the peer whose request a handler serves (SO_PEERCRED), None outside one: for a
#: handler that must know who speaks (the event sink believes a task's events only from
#: that task's shim). Set per connection; each request's task inherits it.
PEER_PID: ContextVar[int | None] = ContextVar("ttrpc_peer_pid", default=None)

#: The Unavailable message for a request that arrives while the server shuts down
#: (ttrpc's ErrServerClosed).
SERVER_CLOSED = "ttrpc: server closed"
#: ``async (request, metadata) -> response``; None stands for google.protobuf.Empty.
Handler = Callable[[Message, Metadata], Awaitable[Message | None]]

RequestT = TypeVar("RequestT", bound=Message)

#: How long a closing connection may take to flush its last replies before it is aborted.
_FLUSH_TIMEOUT = 1.0


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


class ServerState(enum.IntEnum):
    """IDLE until started; DRAINING while shutdown() waits for calls in flight."""

    IDLE = 0
    SERVING = 1
    DRAINING = 2
    CLOSED = 3


class TtrpcServer:
    """Serves registered (service, method) handlers on a Unix socket."""

    def __init__(self) -> None:
        self._methods: dict[str, dict[str, _Method]] = {}
        self._server: asyncio.Server | None = None
        self._path: str | None = None
        self._socket_file: SocketFile | None = None  # only for a file we bound ourselves
        self._connections: set[asyncio.Task[object]] = set()
        # Every handler task of every connection: what a graceful shutdown waits for.
        self._handlers: set[asyncio.Task[None]] = set()
        self._state = ServerState.IDLE
        self._closed = asyncio.Event()

    @property
    def state(self) -> ServerState:
        return self._state

    def __repr__(self) -> str:
        return (
            f"<TtrpcServer [{self._path!r}, {self._state.name}, "
            f"connections: {len(self._connections)}, in flight: {len(self._handlers)}]>"
        )

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

    async def start(self, address: str, *, mode: int = 0o600) -> None:
        """Listen on a shim-style address: ``unix:///p`` or ``/p`` (a file), else abstract."""
        await self.start_unix(socket_path(address), mode=mode)

    async def start_unix(self, path: str, *, mode: int = 0o600) -> None:
        """Listen on the Unix socket ``path`` (a file with permissions ``mode``, or, with a
        leading NUL, an abstract name).

        A socket file left by a dead server is replaced; a live one (file or abstract name)
        raises AlreadyExistsError, so two servers never fight over one address.
        """
        self._check_idle()
        sock, self._socket_file = await bind_unix(path, mode)
        self._path = path
        try:
            await self._serve(sock)
        except BaseException:
            sock.close()
            self._remove_socket_file()
            raise

    async def start_socket(self, sock: socket.socket) -> None:
        """Serve an already bound and listening Unix socket (say, one inherited as fd 3).

        The socket file, if any, is left in place by aclose(): its owner decides.
        """
        self._check_idle()
        sock.setblocking(False)
        await self._serve(sock)

    def _check_idle(self) -> None:
        if self._state is not ServerState.IDLE:
            raise RuntimeError(f"{self!r} was already started")

    async def _serve(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_unix_server(self._on_connection, sock=sock)
        self._state = ServerState.SERVING

    async def shutdown(self, grace: float = 5.0) -> None:
        """Stop taking work, let calls in flight finish for up to ``grace`` s, then close.

        At once: the listener closes and the socket file goes, so new connections are
        refused, and a request that arrives on an open connection is answered Unavailable
        (``ttrpc: server closed``). Calls already running finish and their answers are
        written. After ``grace`` seconds whatever still runs is cancelled; then every
        connection is closed. Idempotent; a second caller waits for the first.
        """
        if self._state in (ServerState.DRAINING, ServerState.CLOSED):
            await self._closed.wait()
            return
        self._state = ServerState.DRAINING
        try:
            self._remove_socket_file()  # first, so that nobody new can even connect
            await self._stop_accepting()
            if self._handlers and grace > 0:
                await asyncio.wait(set(self._handlers), timeout=grace)
        finally:
            # Even if our caller gave up (cancelled us), nothing may be left running.
            if self._server is not None:
                self._server.close()
            for task in list(self._connections):
                task.cancel()  # cancels the connection's handlers that outlived the grace
            if self._connections:
                await asyncio.wait(list(self._connections))
            if self._server is not None:
                await self._server.wait_closed()
            self._state = ServerState.CLOSED
            self._closed.set()

    async def aclose(self) -> None:
        """Stop accepting, end every connection (cancelling its handlers), unlink the socket."""
        await self.shutdown(grace=0)

    async def _stop_accepting(self) -> None:
        """Close the listener without stranding a connection accepted a moment before.

        Python 3.11's Server.close() strands a connection whose accept() already ran but
        whose transport is not built yet: ``Server._attach()`` asserts, and the socket is
        neither handed over nor closed, so its client hangs. Stop watching the listener
        first, let the accepts already scheduled build their transports (one loop turn;
        _on_connection then closes them), and only then close.
        """
        if self._server is None:
            return
        loop = asyncio.get_running_loop()
        for listener in self._server.sockets:
            loop.remove_reader(listener.fileno())
        await asyncio.sleep(0)
        self._server.close()

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
        if self._socket_file is not None:
            self._socket_file.remove()

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._state is not ServerState.SERVING:
            writer.close()
            return
        self._connections.add(task)
        try:
            peer = peer_description(writer)
            if peer is not None:
                PEER_PID.set(peer_pid(writer))
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
        # close() first flushes replies already written, which is what a graceful end
        # wants; but a peer that never reads would hold the socket (and shutdown) forever.
        try:
            async with asyncio.timeout(_FLUSH_TIMEOUT):
                await writer.wait_closed()
        except (Exception, asyncio.CancelledError):
            writer.transport.abort()

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
                if self._state is not ServerState.SERVING:
                    await conn.send_status(header.stream_id, CODE_UNAVAILABLE, SERVER_CLOSED)
                    continue
                handler_task = asyncio.create_task(
                    self._handle_request(conn, header.stream_id, payload),
                    name=f"ttrpc-request {conn.peer} stream {header.stream_id}",
                )
                conn.handlers.add(handler_task)
                handler_task.add_done_callback(conn.handlers.discard)
                self._handlers.add(handler_task)
                handler_task.add_done_callback(self._handlers.discard)
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
