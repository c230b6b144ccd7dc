"""Calls and their errors: our client against our own server on a real Unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

import pytest
from google.protobuf.empty_pb2 import Empty
from google.protobuf.wrappers_pb2 import BytesValue, UInt64Value

from adapters.proto import task_pb2, ttrpc_pb2
from adapters.ttrpc.client import TtrpcClient, encode_request
from adapters.ttrpc.framing import (
    MAX_MESSAGE_LENGTH,
    MESSAGE_TYPE_REQUEST,
    MESSAGE_TYPE_RESPONSE,
    FrameHeader,
    encode_frame,
    pack_header,
    read_frame,
)
from adapters.ttrpc.metadata import NAMESPACE_HEADER, namespace_from
from adapters.ttrpc.server import Metadata
from domain.errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    NotFoundError,
    NotImplementedError_,
    UnknownError,
)
from tests.adapters.conftest import (
    SERVICE,
    STEP,
    Served,
    connect_frame,
    raw_connection,
    raw_server,
    read_response,
)

BLOB = "shimledger.test.Blob"
LIMIT_TEXT = "exceed maximum message size of 4194304"


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
            writer.write(connect_frame(3))  # the connection is still good
            header, response = await read_response(reader)
        assert header.stream_id == 3
        assert not response.HasField("status")

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


async def measure(request: BytesValue, metadata: Metadata) -> UInt64Value:
    return UInt64Value(value=len(request.value))


async def huge(request: BytesValue, metadata: Metadata) -> BytesValue:
    return BytesValue(value=bytes(MAX_MESSAGE_LENGTH))


@pytest.fixture
async def blob_served(served: Served) -> Served:
    served.server.register(BLOB, "Measure", BytesValue, measure)
    served.server.register(BLOB, "Huge", BytesValue, huge)
    return served


def value_filling_the_envelope(extra: int) -> BytesValue:
    """A request whose Request envelope to BLOB/Measure is exactly MAX + ``extra`` bytes."""

    def envelope_size(size: int) -> int:
        body = BytesValue(value=bytes(size)).SerializeToString()
        envelope = ttrpc_pb2.Request(
            service=BLOB, method="Measure", payload=body, timeout_nano=int(STEP * 1e9)
        )
        return envelope.ByteSize()

    size = MAX_MESSAGE_LENGTH - 64
    for _ in range(3):  # the varint length prefixes settle after a step or two
        size += MAX_MESSAGE_LENGTH + extra - envelope_size(size)
    assert envelope_size(size) == MAX_MESSAGE_LENGTH + extra
    return BytesValue(value=bytes(size))


async def connect_call(client: TtrpcClient, tag: str) -> str:
    reply = await client.call(
        SERVICE, "Connect", task_pb2.ConnectRequest(id=tag), task_pb2.ConnectResponse,
        timeout=STEP,
    )  # fmt: skip
    return reply.version


class TestMessageSizeLimit:
    async def test_a_request_of_exactly_4_mib_is_served(
        self, blob_served: Served, client: TtrpcClient
    ) -> None:
        value = value_filling_the_envelope(0)
        reply = await client.call(BLOB, "Measure", value, UInt64Value, timeout=STEP)
        assert reply.value == len(value.value)

    async def test_one_byte_more_is_refused_before_the_wire(self, tmp_path: Path) -> None:
        path = str(tmp_path / "limit.sock")
        empty_reply = encode_frame(0, MESSAGE_TYPE_RESPONSE, b"")
        async with raw_server(path, reply=empty_reply) as frames:
            async with await TtrpcClient.connect(path) as client:
                with pytest.raises(UnknownError, match=LIMIT_TEXT) as caught:
                    await client.call(
                        BLOB, "Measure", value_filling_the_envelope(1), UInt64Value, timeout=STEP
                    )
                assert caught.value.grpc_code == 8  # type: ignore[attr-defined]
                # Still usable, and the refused request never reached the peer.
                await client.call(BLOB, "Measure", BytesValue(), Empty, timeout=STEP)
        assert len(frames) == 1
        assert ttrpc_pb2.Request.FromString(frames[0][1]).payload == b""

    async def test_an_oversized_reply_becomes_resource_exhausted(
        self, blob_served: Served, client: TtrpcClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.ERROR, logger="adapters.ttrpc.server"):
            with pytest.raises(UnknownError, match=LIMIT_TEXT) as caught:
                await client.call(BLOB, "Huge", BytesValue(), BytesValue, timeout=STEP)
        assert caught.value.grpc_code == 8  # type: ignore[attr-defined]
        assert "too large" in caplog.text  # a server bug worth a log line
        assert await connect_call(client, "after") == "after"

    async def test_client_discards_an_oversized_frame_and_stays_usable(
        self, tmp_path: Path
    ) -> None:
        # A peer that does send one (Go's 1.1.1 client would choke): header, 4 MiB + 1 of
        # payload on stream 1, then a good reply to stream 3.
        path = str(tmp_path / "big.sock")
        length = MAX_MESSAGE_LENGTH + 1

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                await read_frame(reader)
                writer.write(pack_header(FrameHeader(length, 1, MESSAGE_TYPE_RESPONSE, 0)))
                writer.write(bytes(length))
                await read_frame(reader)
                reply = task_pb2.ConnectResponse(version="second")
                response = ttrpc_pb2.Response(payload=reply.SerializeToString())
                writer.write(encode_frame(3, MESSAGE_TYPE_RESPONSE, response.SerializeToString()))
                await reader.read()
            writer.close()

        server = await asyncio.start_unix_server(answer, path=path)
        try:
            async with await TtrpcClient.connect(path) as client:
                with pytest.raises(UnknownError, match="message length 4194305 " + LIMIT_TEXT):
                    await connect_call(client, "first")
                assert await connect_call(client, "second") == "second"
        finally:
            server.close()
            await server.wait_closed()


class TestDeadlineAndNamespace:
    async def test_every_call_gets_the_default_deadline(self, tmp_path: Path) -> None:
        path = str(tmp_path / "silent.sock")
        async with raw_server(path, reply=None) as frames:
            async with await TtrpcClient.connect(path, default_timeout=0.2) as client:
                with pytest.raises(DeadlineExceededError):
                    await client.call(SERVICE, "State", task_pb2.StateRequest(), Empty)
                assert "pending: 0" in repr(client)
        assert ttrpc_pb2.Request.FromString(frames[0][1]).timeout_nano == 200_000_000

    async def test_timeout_none_opts_out_and_sends_no_deadline(self, tmp_path: Path) -> None:
        path = str(tmp_path / "late.sock")
        empty_reply = encode_frame(0, MESSAGE_TYPE_RESPONSE, b"")
        async with raw_server(path, reply=empty_reply, delay=0.3) as frames:
            async with await TtrpcClient.connect(path, default_timeout=0.1) as client:
                async with asyncio.timeout(STEP):  # the test's own bound
                    await client.call(SERVICE, "Wait", task_pb2.WaitRequest(), Empty, timeout=None)
        assert ttrpc_pb2.Request.FromString(frames[0][1]).timeout_nano == 0

    async def test_default_timeout_must_be_positive(self, served: Served) -> None:
        with pytest.raises(ValueError, match="default_timeout"):
            await TtrpcClient.connect(served.path, default_timeout=0)

    async def test_namespace_goes_with_every_call(self, served: Served) -> None:
        async with await TtrpcClient.connect(served.path, namespace="ns1") as client:
            await connect_call(client, "a")
            await client.call(
                SERVICE, "Connect", task_pb2.ConnectRequest(id="b"), task_pb2.ConnectResponse,
                timeout=STEP, metadata={"X-Trace": "t1"},
            )  # fmt: skip
            await client.call(
                SERVICE, "Connect", task_pb2.ConnectRequest(id="c"), task_pb2.ConnectResponse,
                timeout=STEP, metadata={NAMESPACE_HEADER: "other"},
            )  # fmt: skip
        assert served.task.metadata == [
            {"containerd-namespace-ttrpc": ["ns1"]},
            {"containerd-namespace-ttrpc": ["ns1"], "x-trace": ["t1"]},
            {"containerd-namespace-ttrpc": ["other"]},
        ]
        assert [namespace_from(m) for m in served.task.metadata] == ["ns1", "ns1", "other"]

    async def test_no_namespace_no_header(self, served: Served, client: TtrpcClient) -> None:
        await connect_call(client, "x")
        assert served.task.metadata == [{}]
        assert namespace_from(served.task.metadata[0]) is None
