"""Where `serve --metrics-address HOST:PORT` listens, checked before serve starts anything.

/metrics has no authentication and names every namespace and exit status of the host, so
it listens on a loopback address unless the operator says otherwise (``--metrics-public``):
a typo such as ``0.0.0.0`` must not open it to the network. Standard library alone: the
address is checked before serve forks its command server, and prometheus_client is
imported only after that (cli/metrics_export.py).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from domain.errors import InvalidArgumentError

OPTION = "--metrics-address"


@dataclass(frozen=True)
class MetricsAddress:
    """A host and port to serve /metrics on; port 0 takes any free one (serve says which)."""

    host: str
    port: int

    def url(self, port: int | None = None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port if port is None else port}/metrics"


def parse_metrics_address(text: str, *, public: bool) -> MetricsAddress:
    """``HOST:PORT`` (``[::1]:9100`` for IPv6); a non-loopback host only if ``public``.

    Every refusal is an InvalidArgumentError naming the option: one line, exit 1.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise InvalidArgumentError(
            f"{OPTION}: {text!r} is not HOST:PORT (127.0.0.1:9100, [::1]:9100, localhost:0)"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise InvalidArgumentError(f"{OPTION}: an IPv6 host goes in brackets: [{host}]:{port_text}")
    if not port_text.isdigit() or int(port_text) > 65535:
        raise InvalidArgumentError(f"{OPTION}: {port_text!r} is not a port (0 to 65535)")
    address = MetricsAddress(host, int(port_text))
    if not public and not _loopback(address):
        raise InvalidArgumentError(
            f"{OPTION}: {host} is not a loopback address, and /metrics has no "
            "authentication: give --metrics-public to serve it there"
        )
    return address


def _loopback(address: MetricsAddress) -> bool:
    """Whether every address the host names is a loopback one (a name is resolved)."""
    try:
        return ipaddress.ip_address(address.host).is_loopback
    except ValueError:
        pass  # a name
    try:
        found = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidArgumentError(f"{OPTION}: cannot resolve {address.host}: {exc}") from None
    return all(ipaddress.ip_address(info[4][0]).is_loopback for info in found)
