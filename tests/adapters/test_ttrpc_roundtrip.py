"""The client against our own server (and against raw peers) over real Unix sockets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from google.protobuf.empty_pb2 import Empty

from adapters.proto import task_pb2, ttrpc_pb2
from adapters.ttrpc.client import TtrpcClient, encode_request
from adapters.ttrpc.errors import ConnectionClosedError, ProtocolError
from adapters.ttrpc.framing import (
    MAX_MESSAGE_LENGTH,
    MAX_STREAM_ID,
    MESSAGE_TYPE_REQUEST,
    MESSAGE_TYPE_RESPONSE,
    FrameHeader,
    encode_frame,
    pack_header,
    read_frame,
)
from adapters.ttrpc.server import Metadata, TtrpcServer
from domain.errors import (
    AlreadyExistsError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidTransitionError,
    NotFoundError,
    NotImplementedError_,
    UnavailableError,
    UnknownError,
)

from .test_ttrpc_framing import GOLDEN_CONNECT_REPLY, GOLDEN_CONNECT_REQUEST

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


class TestCalls:
    async def test_connect_round_trip_with_metadata(
        self, served: Served, client: TtrpcClient
    ) -> None:
        response = await client.call(
            SERVICE,
            "Connect",
            task_pb2.ConnectRequest(id="sf1"),
            task_pb2.ConnectResponse,
            timeout=STEP,
            metadata={"Containerd-Namespace-TTRPC": "default"},
        )
        assert response == task_pb2.ConnectResponse(shim_pid=os.getpid(), version="sf1")
        assert served.task.metadata == [{"containerd-namespace-ttrpc": ["default"]}]

    async def test_empty_result_is_a_zero_byte_response(self, served: Served) -> None:
        payload = task_pb2.ShutdownRequest(id="x").SerializeToString()
        async with raw_connection(served.path) as (reader, writer):
            writer.write(encode_request(5, SERVICE, "Shutdown", payload))
            async with asyncio.timeout(STEP):
                header, body = await read_frame(reader)
        assert (header, body) == (FrameHeader(0, 5, MESSAGE_TYPE_RESPONSE, 0), b"")

    async def test_empty_result_decodes_as_empty(self, client: TtrpcClient) -> None:
        result = await client.call(
            SERVICE, "Shutdown", task_pb2.ShutdownRequest(id="x"), Empty, timeout=STEP
        )
        assert result == Empty()

    async def test_concurrent_calls_are_answered_out_of_order(
        self, served: Served, client: TtrpcClient
    ) -> None:
        # Wait can only finish after State ran, so a server handling requests one at a
        # time, or a client matching replies in order, fails here.
        wait = asyncio.create_task(
            client.call(
                SERVICE, "Wait", task_pb2.WaitRequest(id="c"), task_pb2.WaitResponse, timeout=STEP
            )
        )
        await asyncio.sleep(0.01)
        state = await client.call(
            SERVICE, "State", task_pb2.StateRequest(id="c"), task_pb2.StateResponse, timeout=STEP
        )
        assert not wait.done()
        assert state == task_pb2.StateResponse(id="c", pid=42)
        assert (await wait) == task_pb2.WaitResponse(exit_status=137)
        assert served.task.completed == ["State", "Wait"]
        assert "pending: 0" in repr(client)

    async def test_many_concurrent_calls_on_one_connection(self, client: TtrpcClient) -> None:
        ids = [f"t{i}" for i in range(50)]
        results = await asyncio.gather(
            *(
                client.call(
                    SERVICE,
                    "Connect",
                    task_pb2.ConnectRequest(id=i),
                    task_pb2.ConnectResponse,
                    timeout=STEP,
                )
                for i in ids
            )
        )
        assert [r.version for r in results] == ids


class TestErrors:
    async def test_not_found_arrives_as_not_found(self, client: TtrpcClient) -> None:
        with pytest.raises(NotFoundError) as caught:
            await client.call(
                SERVICE,
                "Delete",
                task_pb2.DeleteRequest(id="x"),
                task_pb2.DeleteResponse,
                timeout=STEP,
            )
        assert str(caught.value) == "container not created"
        assert caught.value.grpc_code == 5  # type: ignore[attr-defined]

    async def test_class_text_is_stripped_like_from_grpc(self, client: TtrpcClient) -> None:
        with pytest.raises(NotFoundError, match=r"^process does not exist e1$"):
            await client.call(
                SERVICE,
                "Delete",
                task_pb2.DeleteRequest(id="x", exec_id="e1"),
                task_pb2.DeleteResponse,
                timeout=STEP,
            )

    async def test_invalid_transition_arrives_as_failed_precondition(
        self, client: TtrpcClient
    ) -> None:
        with pytest.raises(FailedPreconditionError) as caught:
            await client.call(SERVICE, "Pause", task_pb2.PauseRequest(id="x"), Empty, timeout=STEP)
        assert caught.value.grpc_code == 9  # type: ignore[attr-defined]
        assert str(caught.value) == "cannot pause a stopped task"

    async def test_handler_bug_is_logged_and_answered_unknown(
        self, client: TtrpcClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.ERROR, logger="adapters.ttrpc.server"):
            with pytest.raises(UnknownError, match="handler bug") as caught:
                await client.call(
                    SERVICE, "Pause", task_pb2.PauseRequest(id="bug"), Empty, timeout=STEP
                )
        assert caught.value.grpc_code == 2  # type: ignore[attr-defined]
        assert any(record.exc_info for record in caplog.records)

    async def test_unknown_method_is_not_implemented(self, client: TtrpcClient) -> None:
        with pytest.raises(NotImplementedError_, match=r"^method Stats$"):
            await client.call(
                SERVICE,
                "Stats",
                task_pb2.StatsRequest(id="x"),
                task_pb2.StatsResponse,
                timeout=STEP,
            )

    async def test_unknown_service_is_not_implemented(self, client: TtrpcClient) -> None:
        with pytest.raises(NotImplementedError_, match=r"^service /containerd.task.v2.Task$"):
            await client.call(
                "/" + SERVICE, "Connect", task_pb2.ConnectRequest(), Empty, timeout=STEP
            )

    async def test_even_stream_id_gets_invalid_argument(self, served: Served) -> None:
        async with raw_connection(served.path) as (reader, writer):
            writer.write(connect_frame(2))
            header, response = await read_response(reader)
        assert header.stream_id == 2
        assert (response.status.code, response.status.message) == (
            3,
            "StreamID must be odd for client initiated streams",
        )

    async def test_undecodable_request_gets_invalid_argument(self, served: Served) -> None:
        async with raw_connection(served.path) as (reader, writer):
            writer.write(encode_frame(7, MESSAGE_TYPE_REQUEST, b"\xff\xff\xff"))
            header, response = await read_response(reader)
        assert header.stream_id == 7
        assert response.status.code == 3
        assert response.status.message.startswith("unmarshal request error: ")

    async def test_undecodable_payload_gets_internal(self, served: Served) -> None:
        async with raw_connection(served.path) as (reader, writer):
            writer.write(encode_request(9, SERVICE, "Connect", b"\x0a\x05ab"))
            _, response = await read_response(reader)
        assert response.status.code == 13
        assert response.status.message.startswith("ttrpc: error unmarshalling payload: ")

    async def test_oversized_frame_gets_resource_exhausted_and_connection_survives(
        self, served: Served
    ) -> None:
        length = MAX_MESSAGE_LENGTH + 1
        async with raw_connection(served.path) as (reader, writer):
            writer.write(pack_header(FrameHeader(length, 11, MESSAGE_TYPE_REQUEST, 0)))
            writer.write(bytes(length))
            header, response = await read_response(reader)
            assert header.stream_id == 11
            assert (response.status.code, response.status.message) == (
                8,
                "message length 4194305 exceed maximum message size of 4194304",
            )
            writer.write(connect_frame(13))
            header, response = await read_response(reader)
        assert header.stream_id == 13
        assert not response.HasField("status")
        assert task_pb2.ConnectResponse.FromString(response.payload).version == "sf1"

    async def test_unknown_message_types_are_ignored(self, served: Served) -> None:
        async with raw_connection(served.path) as (reader, writer):
            writer.write(encode_frame(15, 0x03, b"stream data"))
            writer.write(connect_frame(17))
            header, response = await read_response(reader)
        assert header.stream_id == 17
        assert not response.HasField("status")

    async def test_server_enforces_timeout_nano(self, served: Served) -> None:
        payload = task_pb2.KillRequest(id="x").SerializeToString()
        async with raw_connection(served.path) as (reader, writer):
            writer.write(encode_request(19, SERVICE, "Kill", payload, timeout_nano=50_000_000))
            _, response = await read_response(reader)
        assert (response.status.code, response.status.message) == (4, "context deadline exceeded")
        assert served.task.cancelled.is_set()


class TestGarbage:
    @pytest.mark.parametrize(
        "junk",
        [
            b"GET / HTTP/1.1\r\nHost: shim\r\n\r\n",
            b"\x00\x00\x00",
            pack_header(FrameHeader(100, 1, MESSAGE_TYPE_REQUEST, 0)) + b"short",
            pack_header(FrameHeader(0, 1, MESSAGE_TYPE_RESPONSE, 0)),
        ],
        ids=["http", "half-header", "half-payload", "response-to-server"],
    )
    async def test_server_survives_junk_then_serves(self, served: Served, junk: bytes) -> None:
        async with raw_connection(served.path) as (_, writer):
            writer.write(junk)
            await writer.drain()
        async with await TtrpcClient.connect(served.path) as client:
            response = await client.call(
                SERVICE,
                "Connect",
                task_pb2.ConnectRequest(id="after"),
                task_pb2.ConnectResponse,
                timeout=STEP,
            )
        assert response.version == "after"

    async def test_peer_leaving_cancels_its_handlers(self, served: Served) -> None:
        payload = task_pb2.KillRequest(id="x").SerializeToString()
        async with raw_connection(served.path) as (_, writer):
            writer.write(encode_request(1, SERVICE, "Kill", payload))
            async with asyncio.timeout(STEP):
                await served.task.blocked.wait()
        async with asyncio.timeout(STEP):
            await served.task.cancelled.wait()


class TestConnectionLoss:
    async def test_server_close_fails_pending_calls(
        self, served: Served, client: TtrpcClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        pending = asyncio.create_task(
            client.call(SERVICE, "Kill", task_pb2.KillRequest(id="x"), Empty, timeout=STEP)
        )
        async with asyncio.timeout(STEP):
            await served.task.blocked.wait()
        await served.server.aclose()
        with pytest.raises(ConnectionClosedError) as caught:
            await pending
        assert isinstance(caught.value.__cause__, asyncio.IncompleteReadError)
        assert isinstance(caught.value, UnavailableError)
        with pytest.raises(ConnectionClosedError):
            await client.call(SERVICE, "Connect", task_pb2.ConnectRequest(), Empty)
        assert "CLOSED" in repr(client)
        assert served.task.cancelled.is_set()
        await asyncio.sleep(0.01)  # let asyncio's own done-callbacks run
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

    async def test_client_close_fails_pending_calls(self, served: Served) -> None:
        client = await TtrpcClient.connect(served.path)
        pending = asyncio.create_task(
            client.call(SERVICE, "Kill", task_pb2.KillRequest(id="x"), Empty, timeout=STEP)
        )
        async with asyncio.timeout(STEP):
            await served.task.blocked.wait()
        await client.aclose()
        with pytest.raises(ConnectionClosedError):
            await pending
        await client.aclose()  # idempotent

    async def test_client_deadline(self, tmp_path: Path) -> None:
        path = str(tmp_path / "silent.sock")
        async with raw_server(path, reply=None) as frames:
            async with await TtrpcClient.connect(path) as client:
                with pytest.raises(DeadlineExceededError) as caught:
                    await client.call(
                        SERVICE,
                        "Wait",
                        task_pb2.WaitRequest(id="x"),
                        task_pb2.WaitResponse,
                        timeout=0.2,
                    )
                assert caught.value.grpc_code == 4  # type: ignore[attr-defined]
                assert "pending: 0" in repr(client)
        request = ttrpc_pb2.Request.FromString(frames[0][1])
        assert request.timeout_nano == 200_000_000

    async def test_late_reply_after_deadline_is_dropped(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        path = str(tmp_path / "late.sock")
        empty_reply = encode_frame(0, MESSAGE_TYPE_RESPONSE, b"")
        with caplog.at_level(logging.DEBUG, logger="adapters.ttrpc.client"):
            async with raw_server(path, reply=empty_reply, delay=0.3):
                async with await TtrpcClient.connect(path) as client:
                    with pytest.raises(DeadlineExceededError):
                        await client.call(
                            SERVICE, "Shutdown", task_pb2.ShutdownRequest(), Empty, timeout=0.05
                        )
                    # The late reply to stream 1 arrives first and must not answer stream 3.
                    result = await client.call(
                        SERVICE, "Shutdown", task_pb2.ShutdownRequest(), Empty, timeout=STEP
                    )
        assert result == Empty()
        assert "dropping response for unknown stream 1" in caplog.text


class TestWireCompatibility:
    async def test_client_sends_the_golden_connect_frame(self, tmp_path: Path) -> None:
        path = str(tmp_path / "golden.sock")
        async with raw_server(path, reply=GOLDEN_CONNECT_REPLY) as frames:
            async with await TtrpcClient.connect(f"unix://{path}") as client:
                response = await client.call(
                    SERVICE, "Connect", task_pb2.ConnectRequest(id="sf1"), task_pb2.ConnectResponse
                )  # no timeout: a timeout would add timeout_nano and change the bytes
        header, payload = frames[0]
        assert pack_header(header) + payload == GOLDEN_CONNECT_REQUEST
        assert response.shim_pid == 11084

    async def test_undecodable_response_is_a_protocol_error(self, tmp_path: Path) -> None:
        path = str(tmp_path / "bad.sock")
        truncated = ttrpc_pb2.Response(payload=b"\x0a\x05ab").SerializeToString()
        async with raw_server(path, reply=encode_frame(0, MESSAGE_TYPE_RESPONSE, truncated)):
            async with await TtrpcClient.connect(path) as client:
                with pytest.raises(ProtocolError, match="ConnectResponse"):
                    await client.call(
                        SERVICE,
                        "Connect",
                        task_pb2.ConnectRequest(),
                        task_pb2.ConnectResponse,
                        timeout=STEP,
                    )

    async def test_stream_ids_are_odd_and_wrap_inside_uint32(self, tmp_path: Path) -> None:
        path = str(tmp_path / "ids.sock")
        empty_reply = encode_frame(0, MESSAGE_TYPE_RESPONSE, b"")
        async with raw_server(path, reply=empty_reply) as frames:
            async with await TtrpcClient.connect(path) as client:
                for _ in range(2):
                    await client.call(
                        SERVICE, "Shutdown", task_pb2.ShutdownRequest(), Empty, timeout=STEP
                    )
                client._next_stream_id = MAX_STREAM_ID  # jump to the end of the id space
                for _ in range(2):
                    await client.call(
                        SERVICE, "Shutdown", task_pb2.ShutdownRequest(), Empty, timeout=STEP
                    )
        assert [h.stream_id for h, _ in frames] == [1, 3, MAX_STREAM_ID, 1]


class TestConnect:
    async def test_missing_socket_is_unavailable(self, tmp_path: Path) -> None:
        address = f"unix://{tmp_path}/nothing.sock"
        with pytest.raises(UnavailableError, match="nothing.sock"):
            await TtrpcClient.connect(address)

    async def test_empty_address_is_unavailable(self) -> None:
        with pytest.raises(UnavailableError, match="missing address"):
            await TtrpcClient.connect("")

    async def test_abstract_socket_without_scheme(self) -> None:
        name = f"shimledger-test-{uuid.uuid4().hex}"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind("\0" + name)
        listener.listen()
        server = TtrpcServer()
        FakeTask().register(server)
        async with server:
            await server.start_socket(listener)
            async with await TtrpcClient.connect(name) as client:
                response = await client.call(
                    SERVICE,
                    "Connect",
                    task_pb2.ConnectRequest(id="abs"),
                    task_pb2.ConnectResponse,
                    timeout=STEP,
                )
        assert response.version == "abs"


class TestServerSocket:
    async def test_socket_mode_and_removal(self, tmp_path: Path) -> None:
        path = tmp_path / "mode.sock"
        async with TtrpcServer() as server:
            await server.start_unix(str(path))
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert not path.exists()

    async def test_refuses_a_live_socket(self, served: Served) -> None:
        with pytest.raises(AlreadyExistsError, match="already listening"):
            await TtrpcServer().start_unix(served.path)
        async with await TtrpcClient.connect(served.path) as client:
            await client.call(SERVICE, "Connect", task_pb2.ConnectRequest(), Empty, timeout=STEP)

    async def test_replaces_a_stale_socket(self, tmp_path: Path) -> None:
        path = str(tmp_path / "stale.sock")
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dead.bind(path)
        dead.close()
        server = TtrpcServer()
        FakeTask().register(server)
        async with server:
            await server.start_unix(path)
            async with await TtrpcClient.connect(path) as client:
                await client.call(
                    SERVICE, "Connect", task_pb2.ConnectRequest(), Empty, timeout=STEP
                )

    async def test_refuses_a_regular_file(self, tmp_path: Path) -> None:
        path = tmp_path / "file"
        path.write_text("keep me")
        with pytest.raises(AlreadyExistsError):
            await TtrpcServer().start_unix(str(path))
        assert path.read_text() == "keep me"

    @pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another uid")
    @pytest.mark.skipif(
        SYSTEM_PYTHON is None, reason="no interpreter another uid can run (/usr/bin/python3)"
    )
    async def test_rejects_peers_of_another_uid(self, caplog: pytest.LogCaptureFixture) -> None:
        name = f"shimledger-test-{uuid.uuid4().hex}"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind("\0" + name)  # abstract: no file permissions stand in the way
        listener.listen()
        server = TtrpcServer()
        FakeTask().register(server)
        script = (
            "import socket,sys\n"
            "s=socket.socket(socket.AF_UNIX)\n"
            "s.connect('\\0'+sys.argv[1])\n"
            "s.sendall(bytes.fromhex(sys.argv[2]))\n"
            "s.settimeout(5)\n"
            "try:\n"
            "    data=s.recv(100)\n"
            "except ConnectionResetError:\n"
            "    data=b''\n"
            "sys.stdout.write(data.hex())\n"
        )
        async with server:
            await server.start_socket(listener)
            proc = await asyncio.create_subprocess_exec(
                SYSTEM_PYTHON,
                "-I",
                "-c",
                script,
                name,
                connect_frame(1).hex(),
                user=65534,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            async with asyncio.timeout(STEP * 2):
                out, err = await proc.communicate()
        assert proc.returncode == 0, err
        assert out == b""  # closed (or reset) without an answer
        assert "rejecting peer" in caplog.text
