"""Property-based tests (hypothesis) of the frame decoder, and hostile peers on live sockets.

The decoder is checked against a reference model written over the whole byte string, for
every way the bytes can be cut into reads. The server is then fed random bytes, torn frames
and peers that stall, and after each a well-behaved client must still get correct answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.protobuf.wrappers_pb2 import BytesValue
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.proto import task_pb2, ttrpc_pb2
from adapters.ttrpc.client import TtrpcClient, encode_request
from adapters.ttrpc.framing import (
    HEADER_LENGTH,
    MAX_MESSAGE_LENGTH,
    MAX_STREAM_ID,
    MESSAGE_TYPE_REQUEST,
    MESSAGE_TYPE_RESPONSE,
    FrameHeader,
    FrameTooLargeError,
    encode_frame,
    pack_header,
    read_frame,
    unpack_header,
)
from adapters.ttrpc.server import Metadata, ServerState, TtrpcServer
from domain.errors import ShimledgerError
from tests.adapters.conftest import SERVICE, STEP, Served, raw_connection

# Moderate counts keep the file at a few seconds; no example database in the work tree, and
# no per-example deadline, because examples that use sockets run on a shared machine.
QUICK = settings(max_examples=150, deadline=None, database=None)
LIVE = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # one server, many peers
)
BLOB = "shimledger.test.Blob"

# --- the reference model -----------------------------------------------------------------

Frame = tuple[FrameHeader, bytes]
#: ("frame", header, payload) for a frame read whole; ("too-large", header, b"") for one
#: whose payload was discarded.
Outcome = tuple[str, FrameHeader, bytes]


@dataclass
class Decoded:
    outcomes: list[Outcome]
    torn: bool  # the stream ended inside a frame (else on a frame boundary)
    tail: bytes  # the bytes of the torn frame, as read_frame reports them (see below)


def model(data: bytes) -> Decoded:
    """What read_frame must produce for ``data`` followed by EOF, however it is chunked."""
    outcomes: list[Outcome] = []
    pos = 0
    while True:
        if pos == len(data):
            return Decoded(outcomes, torn=False, tail=b"")
        if len(data) - pos < HEADER_LENGTH:
            return Decoded(outcomes, torn=True, tail=data[pos:])
        header = unpack_header(data[pos : pos + HEADER_LENGTH])
        end = pos + HEADER_LENGTH + header.length
        if end > len(data):
            # A torn payload reports header + what arrived; a torn discard only its header
            # and last piece, so the model keeps just the header for it.
            if header.length > MAX_MESSAGE_LENGTH:
                return Decoded(outcomes, torn=True, tail=data[pos : pos + HEADER_LENGTH])
            return Decoded(outcomes, torn=True, tail=data[pos:])
        if header.length > MAX_MESSAGE_LENGTH:
            outcomes.append(("too-large", header, b""))
        else:
            outcomes.append(("frame", header, data[pos + HEADER_LENGTH : end]))
        pos = end


async def decode(chunks: list[bytes]) -> Decoded:
    """Run read_frame over ``chunks``, fed one at a time while it reads, then EOF."""
    reader = asyncio.StreamReader()

    async def feed() -> None:
        for chunk in chunks:
            reader.feed_data(chunk)
            await asyncio.sleep(0)  # let the decoder run on a partial buffer
        reader.feed_eof()

    feeder = asyncio.create_task(feed())
    outcomes: list[Outcome] = []
    try:
        async with asyncio.timeout(STEP):
            while True:
                try:
                    header, payload = await read_frame(reader)
                except FrameTooLargeError as exc:
                    assert exc.header is not None
                    outcomes.append(("too-large", exc.header, b""))
                    continue
                except asyncio.IncompleteReadError as exc:
                    partial = exc.partial
                    break
                outcomes.append(("frame", header, payload))
    finally:
        await feeder
    if partial and len(partial) > HEADER_LENGTH:
        header = unpack_header(partial[:HEADER_LENGTH])
        if header.length > MAX_MESSAGE_LENGTH:
            partial = partial[:HEADER_LENGTH]  # the discarded piece is not reconstructible
    return Decoded(outcomes, torn=bool(partial), tail=partial)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` split at ``points`` (any order, repeats give empty reads)."""
    bounds = [0, *sorted(p % (len(data) + 1) for p in points), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


# --- strategies --------------------------------------------------------------------------

uint32 = st.integers(0, MAX_STREAM_ID)
uint8 = st.integers(0, 255)


@st.composite
def frames(draw: st.DrawFn, max_payload: int = 300) -> Frame:
    payload = draw(st.binary(max_size=max_payload))
    header = FrameHeader(len(payload), draw(uint32), draw(uint8), draw(uint8))
    return header, payload


@st.composite
def lying_frames(draw: st.DrawFn) -> bytes:
    """A header whose length may not match what follows: short, long, or the maximum."""
    length = draw(st.one_of(st.integers(0, 64), st.just(MAX_MESSAGE_LENGTH), uint32))
    body = draw(st.binary(max_size=80))
    return pack_header(FrameHeader(length, draw(uint32), draw(uint8), draw(uint8))) + body


def wire(frame_list: list[Frame]) -> bytes:
    return b"".join(pack_header(h) + p for h, p in frame_list)


byte_streams = st.one_of(
    st.binary(max_size=600),
    st.lists(st.one_of(frames(max_payload=40).map(lambda f: wire([f])), lying_frames()),
             max_size=6).map(b"".join),
)  # fmt: skip
cut_points = st.lists(st.integers(0, 10_000), max_size=12)


# --- the decoder -------------------------------------------------------------------------


class TestDecoderProperties:
    @QUICK
    @given(frame_list=st.lists(frames(), max_size=8), points=cut_points)
    async def test_any_chunking_of_valid_frames_decodes_the_same_frames(
        self, frame_list: list[Frame], points: list[int]
    ) -> None:
        decoded = await decode(cut(wire(frame_list), points))
        assert decoded.outcomes == [("frame", h, p) for h, p in frame_list]
        assert not decoded.torn

    @QUICK
    @given(data=byte_streams, points=cut_points)
    async def test_any_byte_stream_decodes_as_the_model_says(
        self, data: bytes, points: list[int]
    ) -> None:
        # Nothing but frames, too-large reports and one IncompleteReadError ever comes out,
        # and every frame is exactly the bytes at its place in the stream.
        assert await decode(cut(data, points)) == model(data)

    @settings(max_examples=8, deadline=None, database=None)
    @given(
        before=st.lists(frames(max_payload=20), max_size=2),
        extra=st.integers(1, 3),
        after=st.lists(frames(max_payload=20), min_size=1, max_size=2),
        points=st.lists(st.integers(0, MAX_MESSAGE_LENGTH + 200), max_size=4),
    )
    async def test_oversized_frames_are_skipped_and_the_stream_stays_in_sync(
        self, before: list[Frame], extra: int, after: list[Frame], points: list[int]
    ) -> None:
        length = MAX_MESSAGE_LENGTH + extra
        oversized = FrameHeader(length, 7, MESSAGE_TYPE_REQUEST, 0)
        data = wire(before) + pack_header(oversized) + bytes(length) + wire(after)
        decoded = await decode(cut(data, points))
        assert decoded.outcomes == [
            *(("frame", h, p) for h, p in before),
            ("too-large", oversized, b""),
            *(("frame", h, p) for h, p in after),
        ]
        assert not decoded.torn

    @QUICK
    @given(sid=uint32, message_type=uint8, payload=st.binary(max_size=2000))
    async def test_encode_then_decode_is_the_identity(
        self, sid: int, message_type: int, payload: bytes
    ) -> None:
        decoded = await decode([encode_frame(sid, message_type, payload)])
        assert decoded.outcomes == [
            ("frame", FrameHeader(len(payload), sid, message_type, 0), payload)
        ]

    @QUICK
    @given(length=uint32, sid=uint32, message_type=uint8, flags=uint8)
    def test_header_round_trip(self, length: int, sid: int, message_type: int, flags: int) -> None:
        header = FrameHeader(length, sid, message_type, flags)
        assert unpack_header(pack_header(header)) == header

    @QUICK
    @given(
        service=st.text(max_size=40),
        method=st.text(max_size=20),
        payload=st.binary(max_size=200),
        timeout_nano=st.integers(0, 2**63 - 1),
        metadata=st.dictionaries(st.text(max_size=12), st.text(max_size=12), max_size=4),
    )
    async def test_request_envelope_round_trip(
        self,
        service: str,
        method: str,
        payload: bytes,
        timeout_nano: int,
        metadata: dict[str, str],
    ) -> None:
        frame = encode_request(
            5, service, method, payload, timeout_nano=timeout_nano, metadata=metadata
        )
        [(kind, header, body)] = (await decode([frame])).outcomes
        assert (kind, header.stream_id, header.message_type) == ("frame", 5, MESSAGE_TYPE_REQUEST)
        request = ttrpc_pb2.Request.FromString(body)
        assert (request.service, request.method, request.payload) == (service, method, payload)
        assert request.timeout_nano == timeout_nano
        assert [(kv.key, kv.value) for kv in request.metadata] == [
            (k.lower(), v) for k, v in metadata.items()
        ]


# --- hostile peers against a live server -------------------------------------------------


async def echo(request: BytesValue, metadata: Metadata) -> BytesValue:
    return request


async def well_behaved_call(path: str, tag: str) -> None:
    """A fresh client's call gets the right answer, on its own stream, within STEP."""
    async with await TtrpcClient.connect(path) as client:
        reply = await client.call(
            SERVICE,
            "Connect",
            task_pb2.ConnectRequest(id=tag),
            task_pb2.ConnectResponse,
            timeout=STEP,
        )
    assert reply.version == tag


def request_frames() -> st.SearchStrategy[bytes]:
    """Requests a fuzzer would aim at the server: real and bogus names, odd and even ids."""
    names = st.sampled_from(
        [(SERVICE, "Connect"), (SERVICE, "State"), (SERVICE, "Delete"), (SERVICE, "Nope"),
         ("nope.Service", "Connect"), (BLOB, "Echo")]
    )  # fmt: skip
    return st.builds(
        lambda sid, name, payload, t: encode_request(sid, *name, payload, timeout_nano=t),
        st.integers(0, 64),
        names,
        st.binary(max_size=64),
        st.sampled_from([0, 1, 10**9]),
    )


hostile_bytes = st.lists(
    st.one_of(st.binary(min_size=1, max_size=300), lying_frames(), request_frames()),
    min_size=1,
    max_size=5,
).map(b"".join)


@pytest.fixture
async def blob_served(served: Served) -> Served:
    served.server.register(BLOB, "Echo", BytesValue, echo)
    return served


class TestHostileBytes:
    @LIVE
    @given(data=hostile_bytes, stay=st.booleans())
    async def test_server_answers_a_good_client_after_any_bytes(
        self, blob_served: Served, data: bytes, stay: bool
    ) -> None:
        async with raw_connection(blob_served.path) as (_, writer):
            writer.write(data)
            await writer.drain()
            if stay:  # the hostile peer is still connected, maybe mid-frame
                await well_behaved_call(blob_served.path, "while")
        await well_behaved_call(blob_served.path, "after")
        assert blob_served.server.state is ServerState.SERVING

    @LIVE
    @given(data=hostile_bytes)
    async def test_client_survives_any_bytes_from_a_server(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture, data: bytes
    ) -> None:
        # Whatever a server sends back, a call ends with a value or a ShimledgerError within
        # its deadline, and the client's reader never fails.
        path = str(tmp_path / "hostile-server.sock")
        caplog.clear()

        async def answer_with_junk(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                await read_frame(reader)
                # Re-aim the first junk frame at stream 1, the client's call, if there is one.
                if len(data) >= HEADER_LENGTH:
                    writer.write(data[:4] + (1).to_bytes(4, "big") + data[8:])
                else:
                    writer.write(data)
                await writer.drain()
                await reader.read()  # hold the connection until the client leaves
            writer.close()

        server = await asyncio.start_unix_server(answer_with_junk, path=path)
        try:
            async with await TtrpcClient.connect(path) as client:
                with contextlib.suppress(ShimledgerError):
                    await client.call(
                        SERVICE,
                        "Connect",
                        task_pb2.ConnectRequest(id="x"),
                        task_pb2.ConnectResponse,
                        timeout=0.02,
                    )
        finally:
            server.close()
            await server.wait_closed()
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@dataclass
class Peer:
    """A hostile peer and how it misbehaves."""

    name: str
    opening: bytes
    closes: bool  # closes straight after (mid-frame) instead of stalling


HOSTILE_PEERS = [
    Peer("connects and stalls", b"", closes=False),
    Peer("half a header, stalls", b"\x00\x00\x00\x05\x00", closes=False),
    Peer(
        "huge length, some payload, stalls",
        pack_header(FrameHeader(2**32 - 1, 1, MESSAGE_TYPE_REQUEST, 0)) + bytes(1 << 20),
        closes=False,
    ),
    Peer(
        "4 MiB length, 1 KiB payload, stalls",
        pack_header(FrameHeader(MAX_MESSAGE_LENGTH, 3, MESSAGE_TYPE_REQUEST, 0)) + bytes(1024),
        closes=False,
    ),
    Peer("random bytes, stalls", bytes(range(256)) * 4, closes=False),
    Peer("half a header, closes", b"\x00\x00\x00\x05\x00", closes=True),
    Peer(
        "half a request, closes",
        encode_request(5, SERVICE, "Connect", b"\x0a\x03sf1")[:-3],
        closes=True,
    ),
    Peer(
        "huge length, closes mid-payload",
        pack_header(FrameHeader(MAX_MESSAGE_LENGTH + 1, 9, MESSAGE_TYPE_REQUEST, 0))
        + bytes(100_000),
        closes=True,
    ),
    Peer("a response frame, closes", encode_frame(11, MESSAGE_TYPE_RESPONSE, b"\x12\x00"), True),
]


@contextlib.asynccontextmanager
async def hostile(path: str, peer: Peer) -> AsyncIterator[None]:
    async with raw_connection(path) as (_, writer):
        writer.write(peer.opening)
        await writer.drain()
        if peer.closes:
            writer.close()
        yield


class TestHostilePeers:
    @pytest.mark.parametrize("peer", HOSTILE_PEERS, ids=lambda p: p.name)
    async def test_good_client_is_served_during_and_after(self, served: Served, peer: Peer) -> None:
        async with hostile(served.path, peer):
            await well_behaved_call(served.path, "during")
        await well_behaved_call(served.path, "after")

    async def test_all_of_them_at_once_then_a_graceful_shutdown(self, served: Served) -> None:
        async with contextlib.AsyncExitStack() as stack:
            for peer in HOSTILE_PEERS:
                await stack.enter_async_context(hostile(served.path, peer))
            for i in range(3):
                await well_behaved_call(served.path, f"good-{i}")
            # Stalled peers have no call in flight, so they do not hold the shutdown up.
            async with asyncio.timeout(STEP):
                await served.server.shutdown(grace=STEP * 2)
            assert served.server.state is ServerState.CLOSED
            assert "connections: 0" in repr(served.server)

    async def test_a_peer_that_never_reads_only_stalls_itself(self, blob_served: Served) -> None:
        # 32 echoes of 256 KiB that nobody reads: the server's writes to that peer block on
        # the socket buffer, without buffering every reply and without blocking others.
        payload = BytesValue(value=bytes(256 * 1024)).SerializeToString()
        async with raw_connection(blob_served.path) as (_, writer):
            for sid in range(1, 64, 2):
                writer.write(encode_request(sid, BLOB, "Echo", payload))
            await writer.drain()
            await well_behaved_call(blob_served.path, "beside a non-reader")
            async with asyncio.timeout(STEP):
                # Its echoes are stuck on the socket: the grace runs out and they are cancelled.
                await blob_served.server.shutdown(grace=0.2)
        assert blob_served.server.state is ServerState.CLOSED
        assert "in flight: 0" in repr(blob_served.server)

    async def test_after_shutdown_a_stalled_peer_sees_the_close(self, tmp_path: Path) -> None:
        server = TtrpcServer()
        path = str(tmp_path / "s.sock")
        await server.start_unix(path)
        async with raw_connection(path) as (reader, writer):
            writer.write(b"\x00\x00")  # half a header, then nothing
            await writer.drain()
            async with asyncio.timeout(STEP):
                await server.shutdown()
                # Closed, not left hanging: EOF, or a reset if the server never read the bytes.
                with contextlib.suppress(ConnectionResetError):
                    assert await reader.read() == b""
