"""ttrpc v1.1.1 framing: a 10-byte big-endian header followed by the payload.

The header is ``length:uint32 | stream_id:uint32 | type:uint8 | flags:uint8``, where
``length`` counts only the payload. This module encodes and decodes headers and frames
and reads one frame off a stream; it knows nothing about protobuf, stream bookkeeping or
sockets, so the client and the server share exactly the same byte handling.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

__all__ = [
    "HEADER_LENGTH",
    "MAX_MESSAGE_LENGTH",
    "MAX_STREAM_ID",
    "MESSAGE_TYPE_REQUEST",
    "MESSAGE_TYPE_RESPONSE",
    "FrameHeader",
    "FrameTooLargeError",
    "encode_frame",
    "pack_header",
    "read_frame",
    "unpack_header",
]

HEADER_LENGTH = 10
#: The largest payload either side accepts (inclusive), as in ttrpc's channel.go.
MAX_MESSAGE_LENGTH = 4 << 20
MESSAGE_TYPE_REQUEST = 0x1
MESSAGE_TYPE_RESPONSE = 0x2
#: Stream ids are uint32 on the wire.
MAX_STREAM_ID = 2**32 - 1

_HEADER = struct.Struct(">IIBB")
# An oversized payload is skipped in pieces of this size so it is never held in memory.
_DISCARD_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """The fixed part of every frame; ``length`` is the payload length only."""

    length: int
    stream_id: int
    message_type: int
    flags: int = 0


class FrameTooLargeError(ValueError):
    """A payload above MAX_MESSAGE_LENGTH, either about to be sent or just received.

    ``header`` is set when the frame came from the peer; its payload has then already been
    read and thrown away, so the stream stays in sync and the caller can answer on
    ``header.stream_id``. The message is the exact text ttrpc puts in its
    ResourceExhausted status.
    """

    def __init__(self, length: int, header: FrameHeader | None = None) -> None:
        super().__init__(
            f"message length {length} exceed maximum message size of {MAX_MESSAGE_LENGTH}"
        )
        self.length = length
        self.header = header


def pack_header(header: FrameHeader) -> bytes:
    """Encode a header; raises ValueError if a field does not fit its wire width."""
    try:
        return _HEADER.pack(header.length, header.stream_id, header.message_type, header.flags)
    except struct.error as exc:
        raise ValueError(f"cannot encode {header!r}: {exc}") from exc


def unpack_header(data: bytes) -> FrameHeader:
    """Decode exactly HEADER_LENGTH bytes into a header."""
    if len(data) != HEADER_LENGTH:
        raise ValueError(f"a frame header is {HEADER_LENGTH} bytes, got {len(data)}")
    length, stream_id, message_type, flags = _HEADER.unpack(data)
    return FrameHeader(length, stream_id, message_type, flags)


def encode_frame(stream_id: int, message_type: int, payload: bytes) -> bytes:
    """Header plus payload, ready to write; refuses payloads the peer would reject."""
    if len(payload) > MAX_MESSAGE_LENGTH:
        raise FrameTooLargeError(len(payload))
    return pack_header(FrameHeader(len(payload), stream_id, message_type, 0)) + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[FrameHeader, bytes]:
    """Read one whole frame.

    Raises asyncio.IncompleteReadError when the peer closes, even mid-frame: ``partial`` is
    empty only for a close on a frame boundary, so a reader can tell an orderly close from
    a torn frame. Raises FrameTooLargeError, after discarding the payload, for a frame over
    the limit.
    """
    raw_header = await reader.readexactly(HEADER_LENGTH)
    header = unpack_header(raw_header)
    try:
        if header.length > MAX_MESSAGE_LENGTH:
            remaining = header.length
            while remaining:
                chunk = min(remaining, _DISCARD_CHUNK)
                await reader.readexactly(chunk)
                remaining -= chunk
            raise FrameTooLargeError(header.length, header)
        payload = await reader.readexactly(header.length) if header.length else b""
    except asyncio.IncompleteReadError as exc:
        # readexactly() only knows its own piece; the header was already consumed, so the
        # close is mid-frame even when that piece is empty. (For a discarded payload,
        # ``partial`` keeps the header and the last piece only.)
        raise asyncio.IncompleteReadError(
            raw_header + exc.partial, HEADER_LENGTH + header.length
        ) from None
    return header, payload
