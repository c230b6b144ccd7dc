"""The server against garbage, and both sides against a lost connection."""

from __future__ import annotations

import asyncio
import logging
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
)
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
