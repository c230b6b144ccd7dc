"""Byte-level tests: headers, frames, envelopes and error mapping, with no socket."""

from __future__ import annotations

import asyncio

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from adapters.proto import (
    events_pb2,
    forward_pb2,
    runc_options_pb2,
    task_pb2,
    task_types_pb2,
    ttrpc_pb2,
)
from adapters.ttrpc.client import encode_request, socket_path
from adapters.ttrpc.errors import (
    ConnectionClosedError,
    ProtocolError,
    error_from_status,
    status_from_error,
)
from adapters.ttrpc.framing import (
    HEADER_LENGTH,
    MAX_MESSAGE_LENGTH,
    MESSAGE_TYPE_REQUEST,
    MESSAGE_TYPE_RESPONSE,
    FrameHeader,
    FrameTooLargeError,
    encode_frame,
    pack_header,
    read_frame,
    unpack_header,
)
from domain.errors import (
    AlreadyExistsError,
    CanceledError,
    ConflictError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    InvalidTransitionError,
    NotFoundError,
    NotImplementedError_,
    ShimledgerError,
    UnavailableError,
    UnknownError,
)

# shim-protocol.md 1.6, captured from containerd-shim-runc-v2 1.6.20.
GOLDEN_CONNECT_REQUEST = (
    bytes.fromhex("00000029 00000001 01 00")
    + bytes.fromhex("0a17")
    + b"containerd.task.v2.Task"
    + bytes.fromhex("1207")
    + b"Connect"
    + bytes.fromhex("1a05 0a03")
    + b"sf1"
)
GOLDEN_CONNECT_REPLY = bytes.fromhex("00000005 00000001 02 00 12 03 08 cc 56")
GOLDEN_DELETE_RESPONSE = bytes.fromhex("08 e256 10 07 1a0c 089adcb0d806 109ce7f8c802")
GO_ZERO_TIME = bytes.fromhex("08 80 92 b8 c3 98 fe ff ff ff 01")


def reader_with(data: bytes, *, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


class TestHeader:
    @pytest.mark.parametrize(
        "header",
        [
            FrameHeader(0, 1, MESSAGE_TYPE_REQUEST, 0),
            FrameHeader(MAX_MESSAGE_LENGTH, 2**32 - 1, MESSAGE_TYPE_RESPONSE, 0x80),
            FrameHeader(2**32 - 1, 0, 0xFF, 0xFF),
        ],
    )
    def test_round_trips(self, header: FrameHeader) -> None:
        packed = pack_header(header)
        assert len(packed) == HEADER_LENGTH
        assert unpack_header(packed) == header

    def test_is_big_endian_length_stream_type_flags(self) -> None:
        assert pack_header(FrameHeader(0x29, 1, 1, 0)) == bytes.fromhex("00000029 00000001 01 00")

    def test_rejects_values_that_do_not_fit(self) -> None:
        with pytest.raises(ValueError):
            pack_header(FrameHeader(0, 2**32, 1, 0))
        with pytest.raises(ValueError):
            unpack_header(b"\x00" * 9)


class TestEncodeFrame:
    def test_connect_request_matches_the_shim_capture(self) -> None:
        payload = task_pb2.ConnectRequest(id="sf1").SerializeToString()
        frame = encode_request(1, "containerd.task.v2.Task", "Connect", payload)
        assert frame == GOLDEN_CONNECT_REQUEST

    def test_metadata_keys_are_lower_cased(self) -> None:
        frame = encode_request(
            3, "s", "m", b"", timeout_nano=5, metadata={"Containerd-Namespace-TTRPC": "ns"}
        )
        request = ttrpc_pb2.Request.FromString(frame[HEADER_LENGTH:])
        assert request.timeout_nano == 5
        assert [(kv.key, kv.value) for kv in request.metadata] == [
            ("containerd-namespace-ttrpc", "ns")
        ]

    def test_accepts_exactly_the_maximum(self) -> None:
        frame = encode_frame(1, MESSAGE_TYPE_REQUEST, b"x" * MAX_MESSAGE_LENGTH)
        assert unpack_header(frame[:HEADER_LENGTH]).length == MAX_MESSAGE_LENGTH

    def test_refuses_one_byte_more(self) -> None:
        with pytest.raises(FrameTooLargeError, match="message length 4194305 exceed"):
            encode_frame(1, MESSAGE_TYPE_REQUEST, b"x" * (MAX_MESSAGE_LENGTH + 1))

    def test_empty_response_is_a_bare_header(self) -> None:
        payload = ttrpc_pb2.Response().SerializeToString()
        assert encode_frame(7, MESSAGE_TYPE_RESPONSE, payload) == bytes.fromhex(
            "00000000 00000007 02 00"
        )


class TestReadFrame:
    async def test_reads_header_then_payload(self) -> None:
        header, payload = await read_frame(reader_with(GOLDEN_CONNECT_REPLY))
        assert header == FrameHeader(5, 1, MESSAGE_TYPE_RESPONSE, 0)
        response = ttrpc_pb2.Response.FromString(payload)
        assert not response.HasField("status")
        assert task_pb2.ConnectResponse.FromString(response.payload).shim_pid == 11084

    async def test_reads_consecutive_frames_including_empty_ones(self) -> None:
        reader = reader_with(encode_frame(1, 2, b"") + encode_frame(3, 2, b"abc"))
        assert await read_frame(reader) == (FrameHeader(0, 1, 2, 0), b"")
        assert await read_frame(reader) == (FrameHeader(3, 3, 2, 0), b"abc")

    async def test_oversized_frame_is_discarded_and_reported(self) -> None:
        length = MAX_MESSAGE_LENGTH + 1
        oversized = pack_header(FrameHeader(length, 9, MESSAGE_TYPE_REQUEST, 0)) + bytes(length)
        reader = reader_with(oversized + encode_frame(11, MESSAGE_TYPE_REQUEST, b"next"))
        with pytest.raises(FrameTooLargeError) as caught:
            await read_frame(reader)
        assert caught.value.header == FrameHeader(length, 9, MESSAGE_TYPE_REQUEST, 0)
        assert str(caught.value) == (
            "message length 4194305 exceed maximum message size of 4194304"
        )
        # The stream is still in sync: the next frame reads normally.
        assert await read_frame(reader) == (FrameHeader(4, 11, MESSAGE_TYPE_REQUEST, 0), b"next")

    async def test_oversized_frame_is_never_buffered_whole(self) -> None:
        length = MAX_MESSAGE_LENGTH * 2
        reader = asyncio.StreamReader()
        reader.feed_data(pack_header(FrameHeader(length, 1, MESSAGE_TYPE_REQUEST, 0)))
        task = asyncio.create_task(read_frame(reader))
        await asyncio.sleep(0)  # the header is consumed before any payload arrives
        # StreamReader has no public buffer size; _buffer is what readexactly() accumulates
        # into, so reading the payload in one go would grow it to the full 8 MiB.
        largest_buffer = 0
        fed = 0
        while fed < length:
            piece = min(256 * 1024, length - fed)
            reader.feed_data(bytes(piece))
            fed += piece
            largest_buffer = max(largest_buffer, len(reader._buffer))
            await asyncio.sleep(0)  # let read_frame consume what it can
            largest_buffer = max(largest_buffer, len(reader._buffer))
        reader.feed_eof()
        with pytest.raises(FrameTooLargeError):
            await task
        assert largest_buffer <= 256 * 1024

    async def test_eof_mid_frame_raises_incomplete_read(self) -> None:
        with pytest.raises(asyncio.IncompleteReadError):
            await read_frame(reader_with(GOLDEN_CONNECT_REPLY[:12]))
        with pytest.raises(asyncio.IncompleteReadError) as caught:
            await read_frame(reader_with(b""))
        assert caught.value.partial == b""


class TestProtoMessages:
    @pytest.mark.parametrize(
        ("message", "type_url"),
        [
            (runc_options_pb2.Options, "containerd.runc.v1.Options"),
            (runc_options_pb2.CheckpointOptions, "containerd.runc.v1.CheckpointOptions"),
            (runc_options_pb2.ProcessDetails, "containerd.runc.v1.ProcessDetails"),
            (events_pb2.TaskExit, "containerd.events.TaskExit"),
            (events_pb2.TaskCreate, "containerd.events.TaskCreate"),
            (events_pb2.TaskCheckpointed, "containerd.events.TaskCheckpointed"),
            (forward_pb2.ForwardRequest, "containerd.services.events.ttrpc.v1.ForwardRequest"),
            (task_pb2.CreateTaskRequest, "containerd.task.v2.CreateTaskRequest"),
            (task_types_pb2.ProcessInfo, "containerd.v1.types.ProcessInfo"),
        ],
    )
    def test_full_names_are_containerd_type_urls(self, message: type, type_url: str) -> None:
        assert message.DESCRIPTOR.full_name == type_url

    def test_delete_response_matches_the_shim_capture(self) -> None:
        response = task_pb2.DeleteResponse.FromString(GOLDEN_DELETE_RESPONSE)
        assert (response.pid, response.exit_status) == (11106, 7)
        assert response.SerializeToString() == GOLDEN_DELETE_RESPONSE

    def test_go_zero_time_encodes_like_the_shim(self) -> None:
        assert Timestamp(seconds=-62135596800).SerializeToString() == GO_ZERO_TIME

    def test_status_enum_keeps_containerd_numbers(self) -> None:
        assert [task_types_pb2.Status.Value(n) for n in ("UNKNOWN", "CREATED", "PAUSING")] == [
            0,
            1,
            5,
        ]
        state = task_pb2.StateResponse(status=task_types_pb2.PAUSED)
        assert state.SerializeToString() == bytes.fromhex("2004")


class TestErrorFromStatus:
    @pytest.mark.parametrize(
        ("code", "kind"),
        [
            (1, CanceledError),
            (2, UnknownError),
            (3, InvalidArgumentError),
            (4, DeadlineExceededError),
            (5, NotFoundError),
            (6, AlreadyExistsError),
            (8, UnknownError),
            (9, FailedPreconditionError),
            (10, UnknownError),
            (12, NotImplementedError_),
            (13, UnknownError),
            (14, UnavailableError),
        ],
    )
    def test_maps_codes_to_kinds_and_keeps_the_code(
        self, code: int, kind: type[ShimledgerError]
    ) -> None:
        exc = error_from_status(code, "boom")
        assert type(exc) is kind
        assert exc.grpc_code == code  # type: ignore[attr-defined]
        assert str(exc) == "boom"

    @pytest.mark.parametrize(
        ("code", "message", "expected"),
        [
            (5, "container not created: not found", "container not created"),
            (6, "id e1: already exists", "id e1"),
            (2, "type with url x: not found", "type with url x: not found"),
            (2, "oops: unknown", "oops"),
            (5, "not found here", "not found here"),
            (4, "Create: context deadline exceeded", "Create"),
        ],
    )
    def test_strips_only_the_class_text_of_its_own_code(
        self, code: int, message: str, expected: str
    ) -> None:
        assert str(error_from_status(code, message)) == expected


class TestStatusFromError:
    @pytest.mark.parametrize(
        ("exc", "code"),
        [
            (InvalidArgumentError("x"), 3),
            (NotFoundError("x"), 5),
            (AlreadyExistsError("x"), 6),
            (FailedPreconditionError("x"), 9),
            (InvalidTransitionError("x"), 9),
            (ConflictError("x"), 10),
            (NotImplementedError_("x"), 12),
            (UnavailableError("x"), 14),
            (ConnectionClosedError(), 14),
            (DeadlineExceededError("x"), 4),
            (CanceledError("x"), 1),
            (UnknownError("x"), 2),
            (ProtocolError("x"), 2),
            (ShimledgerError("x"), 2),
            (ValueError("x"), 2),
            (KeyError("x"), 2),
        ],
    )
    def test_maps_kinds_to_codes(self, exc: BaseException, code: int) -> None:
        assert status_from_error(exc)[0] == code

    def test_a_received_code_is_passed_on(self) -> None:
        assert status_from_error(error_from_status(8, "too big")) == (8, "too big")

    def test_message_falls_back_to_the_type_name(self) -> None:
        assert status_from_error(RuntimeError()) == (2, "RuntimeError")


@pytest.mark.parametrize(
    ("address", "path"),
    [
        ("unix:///run/containerd/s/abc", "/run/containerd/s/abc"),
        ("/run/x.sock", "/run/x.sock"),
        ("containerd-shim/ns/id/shim.sock", "\0containerd-shim/ns/id/shim.sock"),
    ],
)
def test_socket_path_follows_containerd_dialer(address: str, path: str) -> None:
    assert socket_path(address) == path
