"""Shared pieces of the ttrpc tests: a fake Task service served on a real socket, raw peers."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from adapters.proto import task_pb2, ttrpc_pb2
from adapters.ttrpc.client import TtrpcClient, encode_request
from adapters.ttrpc.framing import (
    FrameHeader,
    encode_frame,
    read_frame,
)
from adapters.ttrpc.server import Metadata, TtrpcServer
from domain.errors import (
    InvalidTransitionError,
    NotFoundError,
)

SERVICE = "containerd.task.v2.Task"
# The venv's interpreter may sit under /root, out of reach of an unprivileged uid.
SYSTEM_PYTHON = next(
    (p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.access(p, os.X_OK)), None
)
# Every await on the network is bounded so that a bug fails the test instead of hanging it.
STEP = 5.0


@dataclass
class FakeTask:
    """Handlers for a few Task methods, instrumented for the tests."""

    release_slow: asyncio.Event = field(default_factory=asyncio.Event)
    blocked: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    completed: list[str] = field(default_factory=list)
    metadata: list[Metadata] = field(default_factory=list)

    def register(self, server: TtrpcServer) -> None:
        server.register(SERVICE, "Connect", task_pb2.ConnectRequest, self.connect)
        server.register(SERVICE, "Wait", task_pb2.WaitRequest, self.wait)
        server.register(SERVICE, "State", task_pb2.StateRequest, self.state)
        server.register(SERVICE, "Kill", task_pb2.KillRequest, self.kill)
        server.register(SERVICE, "Delete", task_pb2.DeleteRequest, self.delete)
        server.register(SERVICE, "Pause", task_pb2.PauseRequest, self.pause)
        server.register(SERVICE, "Shutdown", task_pb2.ShutdownRequest, self.shutdown)

    async def connect(
        self, request: task_pb2.ConnectRequest, metadata: Metadata
    ) -> task_pb2.ConnectResponse:
        self.metadata.append(metadata)
        return task_pb2.ConnectResponse(shim_pid=os.getpid(), version=request.id)

    async def wait(
        self, request: task_pb2.WaitRequest, metadata: Metadata
    ) -> task_pb2.WaitResponse:
        """Slow: returns only once a State call has released it."""
        await self.release_slow.wait()
        self.completed.append("Wait")
        return task_pb2.WaitResponse(exit_status=137)

    async def state(
        self, request: task_pb2.StateRequest, metadata: Metadata
    ) -> task_pb2.StateResponse:
        """Fast: answers at once and lets the slow Wait finish afterwards."""
        self.completed.append("State")
        asyncio.get_running_loop().call_later(0.05, self.release_slow.set)
        return task_pb2.StateResponse(id=request.id, pid=42)

    async def kill(self, request: task_pb2.KillRequest, metadata: Metadata) -> None:
        """Blocks until cancelled."""
        self.blocked.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def delete(self, request: task_pb2.DeleteRequest, metadata: Metadata) -> None:
        if request.exec_id:
            raise NotFoundError(f"process does not exist {request.exec_id}: not found")
        raise NotFoundError("container not created")

    async def pause(self, request: task_pb2.PauseRequest, metadata: Metadata) -> None:
        if request.id == "bug":
            raise RuntimeError("handler bug")
        raise InvalidTransitionError("cannot pause a stopped task")

    async def shutdown(self, request: task_pb2.ShutdownRequest, metadata: Metadata) -> None:
        return None


@dataclass
class Served:
    server: TtrpcServer
    path: str
    task: FakeTask


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    server = TtrpcServer()
    task = FakeTask()
    task.register(server)
    path = str(tmp_path / "shim.sock")
    await server.start_unix(path)
    try:
        yield Served(server, path, task)
    finally:
        await server.aclose()


@pytest.fixture
async def client(served: Served) -> AsyncIterator[TtrpcClient]:
    async with await TtrpcClient.connect(served.path) as client:
        yield client


@contextlib.asynccontextmanager
async def raw_connection(
    path: str,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def read_response(reader: asyncio.StreamReader) -> tuple[FrameHeader, ttrpc_pb2.Response]:
    async with asyncio.timeout(STEP):
        header, payload = await read_frame(reader)
    return header, ttrpc_pb2.Response.FromString(payload)


def connect_frame(stream_id: int) -> bytes:
    payload = task_pb2.ConnectRequest(id="sf1").SerializeToString()
    return encode_request(stream_id, SERVICE, "Connect", payload)


@contextlib.asynccontextmanager
async def raw_server(
    path: str, reply: bytes | None, *, delay: float = 0.0
) -> AsyncIterator[list[tuple[FrameHeader, bytes]]]:
    """A hand-written peer: records every frame; answers each with ``reply`` if given,
    rewritten onto the request's stream id, ``delay`` seconds after reading it."""
    frames: list[tuple[FrameHeader, bytes]] = []
    writers: list[asyncio.StreamWriter] = []
    tasks: list[asyncio.Task[object]] = []

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                header, payload = await read_frame(reader)
                frames.append((header, payload))
                if reply is not None:
                    await asyncio.sleep(delay)
                    writer.write(encode_frame(header.stream_id, reply[8], reply[10:]))

    server = await asyncio.start_unix_server(on_connection, path=path)
    try:
        yield frames
    finally:
        server.close()
        for writer in writers:
            writer.close()
        if tasks:  # closing the transport feeds EOF, which ends each on_connection
            await asyncio.wait(tasks, timeout=STEP)
        await server.wait_closed()
