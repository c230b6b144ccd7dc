"""The server against garbage, and both sides against a lost connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from google.protobuf.empty_pb2 import Empty

from adapters.proto import task_pb2, ttrpc_pb2
from adapters.ttrpc.client import TtrpcClient, encode_request
from adapters.ttrpc.errors import ConnectionClosedError
from adapters.ttrpc.framing import (
    MESSAGE_TYPE_REQUEST,
    MESSAGE_TYPE_RESPONSE,
    FrameHeader,
    encode_frame,
    pack_header,
    read_frame,
)
from adapters.ttrpc.server import SERVER_CLOSED, Metadata, ServerState
from domain.errors import (
    DeadlineExceededError,
    UnavailableError,
)
from tests.adapters.conftest import (
    SERVICE,
    STEP,
    Served,
    raw_connection,
    raw_server,
)


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

    async def test_server_close_fails_every_pending_call(
        self, served: Served, client: TtrpcClient
    ) -> None:
        kills = [
            asyncio.create_task(
                client.call(SERVICE, "Kill", task_pb2.KillRequest(id=f"k{i}"), Empty)
            )
            for i in range(8)
        ]
        wait = asyncio.create_task(
            client.call(SERVICE, "Wait", task_pb2.WaitRequest(), task_pb2.WaitResponse)
        )
        async with asyncio.timeout(STEP):
            await served.task.blocked.wait()
            while "pending: 9" not in repr(client):
                await asyncio.sleep(0.01)
        await served.server.aclose()
        async with asyncio.timeout(STEP):
            outcomes = await asyncio.gather(*kills, wait, return_exceptions=True)
        assert [type(o) for o in outcomes] == [ConnectionClosedError] * 9
        assert "pending: 0" in repr(client)

    async def test_peer_closing_mid_reply_fails_every_pending_call(self, tmp_path: Path) -> None:
        path = str(tmp_path / "torn.sock")
        half_reply = encode_frame(1, MESSAGE_TYPE_RESPONSE, b"\x12\x05hello")[:-3]

        async def tear(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                for _ in range(3):
                    await read_frame(reader)
                writer.write(half_reply)
                await writer.drain()
            writer.close()

        server = await asyncio.start_unix_server(tear, path=path)
        try:
            async with await TtrpcClient.connect(path) as client:
                calls = [
                    client.call(SERVICE, "State", task_pb2.StateRequest(), Empty, timeout=STEP)
                    for _ in range(3)
                ]
                outcomes = await asyncio.gather(*calls, return_exceptions=True)
        finally:
            server.close()
            await server.wait_closed()
        assert [type(o) for o in outcomes] == [ConnectionClosedError] * 3
        assert all("closed by peer mid-frame" in str(o) for o in outcomes)
        assert all(isinstance(o.__cause__, asyncio.IncompleteReadError) for o in outcomes)


@dataclass
class Gate:
    """A handler that holds its call until released: a call in flight, on demand."""

    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    async def hold(self, request: task_pb2.StateRequest, metadata: Metadata) -> Empty:
        self.entered.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return Empty()


@pytest.fixture
def gate(served: Served) -> Gate:
    gate = Gate()
    served.server.register("shimledger.test.Gate", "Hold", task_pb2.StateRequest, gate.hold)
    return gate


async def hold(client: TtrpcClient) -> Empty:
    return await client.call(
        "shimledger.test.Gate", "Hold", task_pb2.StateRequest(), Empty, timeout=STEP
    )


class TestGracefulShutdown:
    async def test_in_flight_calls_finish_and_new_ones_are_refused(
        self, served: Served, client: TtrpcClient, gate: Gate
    ) -> None:
        in_flight = asyncio.create_task(hold(client))
        async with asyncio.timeout(STEP):
            await gate.entered.wait()
        shutdown = asyncio.create_task(served.server.shutdown(grace=STEP))
        await asyncio.sleep(0)
        assert served.server.state is ServerState.DRAINING
        # A new connection is refused: the socket file is already gone.
        with pytest.raises(UnavailableError):
            await TtrpcClient.connect(served.path)
        # A new request on an open connection is answered Unavailable.
        with pytest.raises(UnavailableError, match=f"^{SERVER_CLOSED}$") as caught:
            await client.call(SERVICE, "Connect", task_pb2.ConnectRequest(), Empty, timeout=STEP)
        assert type(caught.value) is UnavailableError  # an answer, not a lost connection
        assert caught.value.grpc_code == 14  # type: ignore[attr-defined]
        assert not shutdown.done() and not in_flight.done()
        # The call in flight finishes and its answer arrives; then the server closes.
        gate.release.set()
        async with asyncio.timeout(STEP):
            assert await in_flight == Empty()
            await shutdown
        assert served.server.state is ServerState.CLOSED
        assert not gate.cancelled.is_set()
        with pytest.raises(ConnectionClosedError):
            await client.call(SERVICE, "Connect", task_pb2.ConnectRequest(), Empty, timeout=STEP)

    async def test_calls_outliving_the_grace_are_cancelled(
        self, served: Served, client: TtrpcClient, gate: Gate
    ) -> None:
        in_flight = asyncio.create_task(hold(client))
        async with asyncio.timeout(STEP):
            await gate.entered.wait()
            await served.server.shutdown(grace=0.1)
        assert gate.cancelled.is_set()
        with pytest.raises(ConnectionClosedError):
            await in_flight

    async def test_shutdown_is_idempotent_and_waits_for_the_first(
        self, served: Served, client: TtrpcClient, gate: Gate
    ) -> None:
        in_flight = asyncio.create_task(hold(client))
        async with asyncio.timeout(STEP):
            await gate.entered.wait()
        first = asyncio.create_task(served.server.shutdown(grace=STEP))
        second = asyncio.create_task(served.server.shutdown(grace=0))
        await asyncio.sleep(0.05)
        assert not second.done()  # the second caller waits for the first one's drain
        gate.release.set()
        async with asyncio.timeout(STEP):
            await asyncio.gather(first, second, in_flight)
            await served.server.aclose()
        assert served.server.state is ServerState.CLOSED

    async def test_a_server_that_never_started_shuts_down(self) -> None:
        from adapters.ttrpc.server import TtrpcServer

        server = TtrpcServer()
        await server.shutdown()
        assert server.state is ServerState.CLOSED
        with pytest.raises(RuntimeError, match="already started"):
            await server.start_unix("/nonexistent/never.sock")

    async def test_a_cancelled_shutdown_still_leaves_nothing_running(
        self, served: Served, client: TtrpcClient, gate: Gate
    ) -> None:
        in_flight = asyncio.create_task(hold(client))
        async with asyncio.timeout(STEP):
            await gate.entered.wait()
        shutdown = asyncio.create_task(served.server.shutdown(grace=STEP * 10))
        await asyncio.sleep(0.05)
        shutdown.cancel()
        async with asyncio.timeout(STEP):
            with pytest.raises(asyncio.CancelledError):
                await shutdown
        assert served.server.state is ServerState.CLOSED
        assert gate.cancelled.is_set()
        with pytest.raises(ConnectionClosedError):
            await in_flight
