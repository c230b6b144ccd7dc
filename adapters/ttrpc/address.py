"""Shim addresses as containerd writes them, turned into AF_UNIX socket addresses.

Client and server share this so that whatever a shim prints (``unix:///run/x.sock``, a bare
path, or an abstract name) is dialled and served the same way.
"""

from __future__ import annotations

__all__ = ["abstract_name", "is_abstract", "socket_path"]


def socket_path(address: str) -> str:
    """The AF_UNIX address for a shim address, following containerd's dialer.

    ``unix:///p`` and ``/p`` name a filesystem socket; anything else is an abstract socket
    name (the leading NUL is added here).
    """
    if address.startswith("unix://"):
        return address[len("unix://") :]
    if address.startswith("/"):
        return address
    return "\0" + address


def is_abstract(path: str) -> bool:
    """True for an abstract socket address: no file, no permissions, gone with its owner."""
    return path.startswith("\0")


def abstract_name(path: str) -> str:
    """The printable name of an abstract socket address (without its leading NUL)."""
    return path[1:] if is_abstract(path) else path
