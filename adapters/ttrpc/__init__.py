"""ttrpc (containerd's RPC over Unix sockets) for asyncio: framing, client, server, errors."""

from adapters.ttrpc.address import socket_path
from adapters.ttrpc.client import TtrpcClient
from adapters.ttrpc.errors import (
    ConnectionClosedError,
    ProtocolError,
    error_from_status,
    status_from_error,
)
from adapters.ttrpc.metadata import NAMESPACE_HEADER, Metadata, namespace_from
from adapters.ttrpc.server import TtrpcServer

__all__ = [
    "NAMESPACE_HEADER",
    "ConnectionClosedError",
    "Metadata",
    "ProtocolError",
    "TtrpcClient",
    "TtrpcServer",
    "error_from_status",
    "namespace_from",
    "socket_path",
    "status_from_error",
]
