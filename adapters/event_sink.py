"""The event sink: an Events.Forward ttrpc server on one stable socket in the state dir.

Every shim is started with TTRPC_ADDRESS pointing here. Whichever shimledger process is
running serves the socket; the others find it taken and leave it. When nobody serves it,
the socket refuses connections, so a shim's publish fails fast instead of stalling
(shim-protocol.md 0.10), and reconciliation records what was missed. Each event is handed
on with its sender, the connection's SO_PEERCRED pid: any process of our user can connect,
and only the task's own shim may speak for it (shim/recording/shim_events.py checks).
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from adapters.file_lock import file_lock
from adapters.proto import events_pb2, forward_pb2
from adapters.task_client import exited_at
from adapters.ttrpc.server import PEER_PID, TtrpcServer
from domain.errors import AlreadyExistsError, InvalidArgumentError
from shim.ports import (
    ShimEvent,
    TaskCheckpointedEvent,
    TaskCreateEvent,
    TaskDeleteEvent,
    TaskExecAddedEvent,
    TaskExecStartedEvent,
    TaskExitEvent,
    TaskOOMEvent,
    TaskPausedEvent,
    TaskResumedEvent,
    TaskStartEvent,
)

logger = logging.getLogger(__name__)

SERVICE = "containerd.services.events.ttrpc.v1.Events"

DRAIN_TIMEOUT = 5.0

EventHandler = Callable[[ShimEvent], Awaitable[None]]


def _exit(namespace: str, event: events_pb2.TaskExit) -> TaskExitEvent:
    return TaskExitEvent(
        namespace=namespace,
        container_id=event.container_id,
        exec_id=event.id,
        pid=event.pid,
        exit_status=event.exit_status,
        exited_at=_exit_time(event) or datetime.now(UTC),
    )


def _exit_time(event: events_pb2.TaskExit | events_pb2.TaskDelete) -> datetime | None:
    """When the event says the process ended; None if it does not say.

    A created task killed before it started is reported with Go's zero time; an event
    with no ``exited_at`` at all would otherwise read as the epoch (1970-01-01): both are
    taken as "not said", and an exit then gets the time it was heard.
    """
    if not event.HasField("exited_at"):
        return None
    return exited_at(event.exited_at)


def _delete(namespace: str, event: events_pb2.TaskDelete) -> TaskDeleteEvent:
    return TaskDeleteEvent(
        namespace=namespace,
        container_id=event.container_id,
        exec_id="" if event.id == event.container_id else event.id,
        pid=event.pid,
        exit_status=event.exit_status,
        exited_at=_exit_time(event),
    )


M = TypeVar("M", bound=Message)
#: ``(namespace, serialized payload) -> domain record``; raises DecodeError.
_Decoder = Callable[[str, bytes], ShimEvent]


def _decoder(payload_class: type[M], make: Callable[[str, M], ShimEvent]) -> _Decoder:
    """Pairs a payload class with its record maker, so each maker is checked against its
    own message type; the table below then holds them all under one type."""
    return lambda namespace, value: make(namespace, payload_class.FromString(value))


# type URL (the bare full name of the payload) -> its decoder
_DECODERS: dict[str, _Decoder] = {
    "containerd.events.TaskCreate": _decoder(
        events_pb2.TaskCreate,
        lambda ns, e: TaskCreateEvent(ns, e.container_id, e.pid),
    ),
    "containerd.events.TaskStart": _decoder(
        events_pb2.TaskStart,
        lambda ns, e: TaskStartEvent(ns, e.container_id, e.pid),
    ),
    "containerd.events.TaskExit": _decoder(events_pb2.TaskExit, _exit),
    "containerd.events.TaskDelete": _decoder(events_pb2.TaskDelete, _delete),
    "containerd.events.TaskOOM": _decoder(
        events_pb2.TaskOOM,
        lambda ns, e: TaskOOMEvent(ns, e.container_id),
    ),
    "containerd.events.TaskExecAdded": _decoder(
        events_pb2.TaskExecAdded,
        lambda ns, e: TaskExecAddedEvent(ns, e.container_id, e.exec_id),
    ),
    "containerd.events.TaskExecStarted": _decoder(
        events_pb2.TaskExecStarted,
        lambda ns, e: TaskExecStartedEvent(ns, e.container_id, e.exec_id, e.pid),
    ),
    "containerd.events.TaskPaused": _decoder(
        events_pb2.TaskPaused,
        lambda ns, e: TaskPausedEvent(ns, e.container_id),
    ),
    "containerd.events.TaskResumed": _decoder(
        events_pb2.TaskResumed,
        lambda ns, e: TaskResumedEvent(ns, e.container_id),
    ),
    "containerd.events.TaskCheckpointed": _decoder(
        events_pb2.TaskCheckpointed,
        lambda ns, e: TaskCheckpointedEvent(ns, e.container_id, e.checkpoint),
    ),
}


def decode_event(envelope: forward_pb2.Envelope) -> ShimEvent | None:
    """The task event inside an envelope, or None for a topic that is not about tasks."""
    type_url = envelope.event.type_url
    decode = _DECODERS.get(type_url)
    if decode is None:
        return None
    try:
        return decode(envelope.namespace, envelope.event.value)
    except DecodeError as exc:
        raise InvalidArgumentError(f"undecodable {type_url}: {exc}") from exc


class EventSink:
    """Receives shim events for as long as this process serves the socket."""

    def __init__(self, path: Path, on_event: EventHandler) -> None:
        self.path = path
        self._on_event = on_event
        self._server: TtrpcServer | None = None
        self._recording: set[asyncio.Future[None]] = set()

    @property
    def address(self) -> str:
        """What shims get as TTRPC_ADDRESS."""
        return f"unix://{self.path}"

    @property
    def serving(self) -> bool:
        return self._server is not None

    async def start(self) -> bool:
        """Serve the socket unless another live process does; True if we serve it."""
        server = TtrpcServer()
        server.register(SERVICE, "Forward", forward_pb2.ForwardRequest, self._forward)
        self.path.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
        # start_unix probes the path, unlinks a stale socket (remove_stale_socket) and binds:
        # three steps, so one process at a time.
        async with file_lock(self._lock_path):
            try:
                await server.start_unix(str(self.path))
            except (AlreadyExistsError, FileExistsError):
                logger.debug("event sink %s is served by another process", self.path)
                return False
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                return False
        self._server = server
        return True

    @property
    def _lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    async def leave_refusing_socket(self) -> None:
        """Make sure the path exists while nobody serves it, so that shims fail fast.

        A socket file nobody listens on refuses connections at once; a missing path makes
        the shim retry every event for 5 s and linger 10-15 s after Shutdown.
        """
        async with file_lock(self._lock_path):
            self._bind_placeholder()

    def _bind_placeholder(self) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as placeholder:
            try:
                placeholder.bind(str(self.path))
            except OSError:
                return  # a file is there already: someone serves it, or it refuses
            os.chmod(self.path, 0o600)

    async def _forward(
        self, request: forward_pb2.ForwardRequest, metadata: dict[str, list[str]]
    ) -> None:
        envelope = request.envelope
        logger.debug("event %s from namespace %s", envelope.topic, envelope.namespace)
        event = decode_event(envelope)
        if event is not None:
            # Who sent it, for the recorder to check against the task's own shim.
            event = dataclasses.replace(event, sender=PEER_PID.get())
            # An error here goes back to the shim, which retries: recording is idempotent.
            # Shielded: a shim hanging up must not cut a recording in half; aclose() waits.
            recording = asyncio.ensure_future(self._on_event(event))
            self._recording.add(recording)
            recording.add_done_callback(self._recording.discard)
            await asyncio.shield(recording)

    async def aclose(self) -> None:
        """Stop serving, let recordings in flight finish, leave a refusing socket."""
        async with file_lock(self._lock_path):
            if self._server is not None:
                await self._server.aclose()
                self._server = None
            self._bind_placeholder()
        if self._recording:
            _, late = await asyncio.wait(self._recording, timeout=DRAIN_TIMEOUT)
            for recording in late:
                logger.warning("an event recording did not finish in %ss", DRAIN_TIMEOUT)
                recording.cancel()
