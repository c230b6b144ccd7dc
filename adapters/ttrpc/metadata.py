"""ttrpc request metadata, and the one key containerd puts in it: the namespace.

containerd has two namespace headers: ``containerd-namespace`` travels in gRPC metadata,
``containerd-namespace-ttrpc`` in ttrpc metadata (containerd ``namespaces/ttrpc.go``).
Over ttrpc only the second one exists, so that is the one sent and read here.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["NAMESPACE_HEADER", "Metadata", "namespace_from"]

#: Metadata as the server hands it to handlers: lower-case key -> values (keys may repeat).
Metadata = dict[str, list[str]]

NAMESPACE_HEADER = "containerd-namespace-ttrpc"


def namespace_from(metadata: Mapping[str, list[str]]) -> str | None:
    """The namespace a caller named, or None; like ttrpc's GetMetadataValue, the first wins."""
    values = metadata.get(NAMESPACE_HEADER)
    return values[0] if values else None
