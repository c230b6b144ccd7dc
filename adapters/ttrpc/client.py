"""An asyncio ttrpc client: many concurrent unary calls over one Unix connection.

A shim answers calls in completion order, not request order (a blocking ``Wait`` shares
the connection with everything else), so each call parks a future under its stream id and
a single reader task resolves futures as responses arrive. When the connection drops,
every parked call fails with ConnectionClosedError, chained to the cause.

Every call has a client-side deadline (the client's ``default_timeout`` unless the call
names its own), because a shim treats ``timeout_nano`` as advisory; only a call that may
legitimately block without bound (the shim's ``Wait``) opts out with ``timeout=None``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from adapters.proto import ttrpc_pb2
from adapters.ttrpc.address import socket_path
from adapters.ttrpc.errors import (
    CODE_DEADLINE_EXCEEDED,
    CODE_RESOURCE_EXHAUSTED,
    ConnectionClosedError,
    ProtocolError,
    error_from_status,
)
from adapters.ttrpc.framing import (
    MAX_STREAM_ID,
    MESSAGE_TYPE_REQUEST,
    MESSAGE_TYPE_RESPONSE,
    FrameTooLargeError,
    encode_frame,
    read_frame,
)
from adapters.ttrpc.metadata import NAMESPACE_HEADER
from domain.errors import UnavailableError

__all__ = [
    "DEFAULT_CALL_TIMEOUT",
    "UNSET",
    "ClientState",
    "TtrpcClient",
    "encode_request",
    "socket_path",
]

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

#: The deadline of a call that names none (seconds); containerd's own shim calls are
#: bounded the same way, by the caller's context.
DEFAULT_CALL_TIMEOUT = 30.0


class _Unset(enum.Enum):
    """Marks ``timeout`` as not given, which is different from ``timeout=None``."""

    TOKEN = 0


UNSET = _Unset.TOKEN


class ClientState(enum.IntEnum):
    """Lifecycle of a client connection; calls are accepted only while OPEN."""

    OPEN = 0
    CLOSING = 1
    CLOSED = 2


def encode_request(
    stream_id: int,
    service: str,
    method: str,
    payload: bytes,
    *,
    timeout_nano: int = 0,
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """The complete request frame the client writes for one call.

    Metadata keys are lower-cased because Go's ttrpc does so and servers look them up
    lower-case (``containerd-namespace-ttrpc``).
    """
    request = ttrpc_pb2.Request(
        service=service, method=method, payload=payload, timeout_nano=timeout_nano
    )
    for key, value in (metadata or {}).items():
        request.metadata.add(key=key.lower(), value=value)
    return encode_frame(stream_id, MESSAGE_TYPE_REQUEST, request.SerializeToString())


def _check_default_timeout(value: float) -> None:
    if not value > 0:
        raise ValueError(f"default_timeout must be positive, not {value!r}")


class TtrpcClient:
    """A connection to one ttrpc server (a shim, or containerd's event socket)."""

    def __init__(
        self,
        address: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        default_timeout: float = DEFAULT_CALL_TIMEOUT,
        namespace: str | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        """Wrap an open stream pair; most callers want ``await TtrpcClient.connect(...)``.

        ``namespace``, if given, goes with every call as ``containerd-namespace-ttrpc``.
        ``on_close`` is called once if the peer goes away (not when we close): for a
        shim, the sign that it died or shut down.
        """
        _check_default_timeout(default_timeout)
        self._address = address
        self._default_timeout = default_timeout
        self._metadata: dict[str, str] = {NAMESPACE_HEADER: namespace} if namespace else {}
        self._reader = reader
        self._writer = writer
        self._state = ClientState.OPEN
        self._write_lock = asyncio.Lock()
        self._pending: dict[int, asyncio.Future[ttrpc_pb2.Response]] = {}
        self._next_stream_id = 1
        self._close_cause: BaseException | None = None
        self._on_close = on_close
        self._reader_task = asyncio.create_task(
            self._read_loop(), name=f"ttrpc-client-reader {address}"
        )
        self._reader_task.add_done_callback(self._on_reader_done)

    @classmethod
    async def connect(
        cls,
        address: str,
        *,
        timeout: float = 5.0,
        default_timeout: float = DEFAULT_CALL_TIMEOUT,
        namespace: str | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> TtrpcClient:
        """Dial ``address``; any failure (missing, refused, slow) raises UnavailableError.

        ``timeout`` bounds the dial; ``default_timeout`` and ``namespace`` are for calls.
        """
        _check_default_timeout(default_timeout)  # before dialling: nothing to clean up
        if not address:
            raise UnavailableError("cannot connect to ttrpc server: missing address")
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(socket_path(address))
        except (OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise UnavailableError(f"cannot connect to ttrpc server {address}: {reason}") from exc
        return cls(
            address,
            reader,
            writer,
            default_timeout=default_timeout,
            namespace=namespace,
            on_close=on_close,
        )

    @property
    def address(self) -> str:
        return self._address

    @property
    def state(self) -> ClientState:
        return self._state

    def __repr__(self) -> str:
        return (
            f"<TtrpcClient [{self._address!r}, {self._state.name}, pending: {len(self._pending)}]>"
        )

    async def __aenter__(self) -> TtrpcClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def call(
        self,
        service: str,
        method: str,
        request: Message,
        response_type: type[M],
        *,
        timeout: float | None | _Unset = UNSET,
        metadata: Mapping[str, str] | None = None,
    ) -> M:
        """Make one unary call and decode its response as ``response_type``.

        ``timeout`` (seconds; the client's default when not given) is sent to the server as
        ``timeout_nano`` and also enforced here, because servers treat it as advisory (the
        runc shim's Wait ignores it). ``timeout=None`` means no deadline at all. Per-call
        ``metadata`` is added to the client's (the namespace) and wins on equal keys.
        Raises the ShimledgerError matching a non-OK status (ResourceExhausted, code 8,
        for a request or response over 4 MiB), DeadlineExceededError,
        ConnectionClosedError, or ProtocolError for an undecodable response.
        """
        if not isinstance(request, Message):
            raise TypeError(f"request must be a protobuf message, not {type(request).__name__}")
        if self._state is not ClientState.OPEN:
            raise self._closed_error()
        deadline = self._default_timeout if isinstance(timeout, _Unset) else timeout
        timeout_nano = 0 if deadline is None else max(1, int(deadline * 1e9))
        if metadata is None:
            metadata = self._metadata
        elif self._metadata:
            metadata = {**self._metadata, **{k.lower(): v for k, v in metadata.items()}}
        stream_id = self._allocate_stream_id()
        try:
            frame = encode_request(
                stream_id,
                service,
                method,
                request.SerializeToString(),
                timeout_nano=timeout_nano,
                metadata=metadata,
            )
        except FrameTooLargeError as exc:
            # The server would only discard it; say so without touching the wire.
            raise error_from_status(CODE_RESOURCE_EXHAUSTED, str(exc)) from exc
        future: asyncio.Future[ttrpc_pb2.Response] = asyncio.get_running_loop().create_future()
        self._pending[stream_id] = future
        try:
            async with asyncio.timeout(deadline):
                await self._write(frame)
                response = await future
        except TimeoutError as exc:
            raise error_from_status(
                CODE_DEADLINE_EXCEEDED,
                f"ttrpc call {service}/{method} exceeded its deadline of {deadline}s",
            ) from exc
        finally:
            self._pending.pop(stream_id, None)
            # A failed write can leave a future the connection loss already resolved;
            # consume it so asyncio does not report "exception was never retrieved".
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()
        if response.HasField("status") and response.status.code != 0:
            raise error_from_status(response.status.code, response.status.message)
        try:
            return response_type.FromString(response.payload)
        except DecodeError as exc:
            raise ProtocolError(
                f"cannot decode {service}/{method} response as "
                f"{response_type.DESCRIPTOR.full_name}: {exc}"
            ) from exc

    async def aclose(self) -> None:
        """Close the connection; calls still pending fail with ConnectionClosedError.

        Safe to call more than once and after the peer has gone.
        """
        if self._state is ClientState.OPEN:
            self._state = ClientState.CLOSING
        self._reader_task.cancel()
        try:
            # asyncio.wait neither raises the reader's outcome nor swallows our own
            # cancellation.
            await asyncio.wait([self._reader_task])
        finally:
            self._shutdown(None)
            self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError as exc:
            logger.debug("ttrpc client %s: error while closing: %s", self._address, exc)

    def _allocate_stream_id(self) -> int:
        # Odd ids only (the server rejects even ones); wrap inside uint32 and skip ids
        # whose calls are still in flight.
        for _ in range(len(self._pending) + 1):
            stream_id = self._next_stream_id
            self._next_stream_id = stream_id + 2 if stream_id + 2 <= MAX_STREAM_ID else 1
            if stream_id not in self._pending:
                return stream_id
        raise AssertionError("no free stream id")  # unreachable: pending ids are finite

    async def _write(self, frame: bytes) -> None:
        async with self._write_lock:
            if self._state is not ClientState.OPEN:
                raise self._closed_error()
            try:
                self._writer.write(frame)
                await self._writer.drain()
            except (ConnectionError, RuntimeError) as exc:
                # RuntimeError: the transport was closed under us (peer went away).
                raise self._closed_error() from exc

    async def _read_loop(self) -> None:
        cause: BaseException | None = None
        try:
            while True:
                try:
                    header, payload = await read_frame(self._reader)
                except FrameTooLargeError as exc:
                    assert exc.header is not None
                    self._resolve_error(
                        exc.header.stream_id, error_from_status(CODE_RESOURCE_EXHAUSTED, str(exc))
                    )
                    continue
                if header.message_type != MESSAGE_TYPE_RESPONSE:
                    logger.debug(
                        "ttrpc client %s: ignoring frame of type %d on stream %d",
                        self._address,
                        header.message_type,
                        header.stream_id,
                    )
                    continue
                future = self._pending.get(header.stream_id)
                if future is None or future.done():
                    logger.debug(
                        "ttrpc client %s: dropping response for unknown stream %d",
                        self._address,
                        header.stream_id,
                    )
                    continue
                try:
                    future.set_result(ttrpc_pb2.Response.FromString(payload))
                except DecodeError as exc:
                    future.set_exception(
                        ProtocolError(f"cannot decode ttrpc response envelope: {exc}")
                    )
        except (asyncio.IncompleteReadError, OSError) as exc:
            cause = exc  # the peer closed or reset the connection: an ordinary end
        except Exception as exc:
            cause = exc
            raise  # a bug here; _on_reader_done logs it
        finally:
            self._shutdown(cause)

    def _resolve_error(self, stream_id: int, error: BaseException) -> None:
        future = self._pending.get(stream_id)
        if future is not None and not future.done():
            future.set_exception(error)

    def _shutdown(self, cause: BaseException | None) -> None:
        """Mark the connection dead and fail every pending call."""
        if self._state is ClientState.CLOSED:
            return
        closed_by_us = self._state is ClientState.CLOSING
        self._state = ClientState.CLOSED
        self._close_cause = cause
        if not closed_by_us:
            logger.debug("ttrpc client %s: connection lost: %r", self._address, cause)
            # Release the socket now; aclose() still awaits wait_closed() later.
            self._writer.close()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(self._closed_error())
        # Futures are removed by their callers; this keeps "pending" honest for __repr__.
        if not closed_by_us and self._on_close is not None:
            try:
                self._on_close()
            except Exception:  # a watcher's bug must not break the connection's teardown
                logger.exception("ttrpc client %s: on_close callback failed", self._address)

    def _closed_error(self) -> ConnectionClosedError:
        cause = self._close_cause
        if isinstance(cause, asyncio.IncompleteReadError):
            reason = "closed by peer mid-frame" if cause.partial else "closed by peer"
            error = ConnectionClosedError(f"ttrpc: closed ({self._address}: {reason})")
        elif cause is not None:
            reason = str(cause) or type(cause).__name__
            error = ConnectionClosedError(f"ttrpc: closed ({self._address}: {reason})")
        else:
            error = ConnectionClosedError(f"ttrpc: closed ({self._address})")
        error.__cause__ = self._close_cause
        return error

    def _on_reader_done(self, task: asyncio.Task[None]) -> None:
        # Retrieving the exception here also keeps asyncio from reporting it at GC time.
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("ttrpc client %s: reader failed", self._address, exc_info=exc)
