"""ttrpc (containerd's RPC over Unix sockets) for asyncio: framing, client, server, errors."""

from adapters.ttrpc.client import TtrpcClient
from adapters.ttrpc.errors import (
    ConnectionClosedError,
    ProtocolError,
    error_from_status,
    status_from_error,
)
from adapters.ttrpc.server import TtrpcServer

__all__ = [
    "ConnectionClosedError",
    "ProtocolError",
    "TtrpcClient",
    "TtrpcServer",
    "error_from_status",
    "status_from_error",
]
